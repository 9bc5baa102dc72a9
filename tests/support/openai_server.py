"""An OpenAI-compatible HTTP server on 127.0.0.1 that stands in for paid LLM APIs in tests.

The real `openai` SDK talks to it (`OpenAI(base_url=f"{fake.url}/v1", ...)`). It answers
`POST /v1/chat/completions` (whole, or streamed as server-sent chunks) and `GET /v1/models` with
OpenAI's production shapes, understands the translator's batch protocol (the last user message is
a JSON object with `target_language` and `lines`), and lets each test script replies and inject
faults: 429 + Retry-After, 5xx, hangs, and the ways a real model gets the output wrong.

It can also play a small local model behind llama.cpp's server (see OFFLINE.md): a few tokens a
second, one request generated at a time while the others wait for their first byte, and a reply
that rambles on after its answer when no `max_tokens` stops it.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import threading
import time
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import chain, cycle, islice
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

ReplyKind = Literal[
    "ok",
    "fenced",
    "prose",
    "missing_id",
    "merged",
    "extra_id",
    "empty_line",
    "invalid_json",
    "status",
    "hang",
    "obey",
]

# How long a "hang" reply waits when the test gives no delay: far beyond any client timeout a
# test would set, yet the server still stops at once, since waits end on shutdown.
HANG_SECONDS = 30.0
INJECTION = "ignore previous instructions"
# Where a rambling reply stops when the request sets no max_tokens: llama.cpp goes on until the
# context is full, which at a local model's few tokens a second takes minutes.
RAMBLE_CAP = 2048
_FILLER = "I hope these translations help you with your video. "
# Faults in the set of ids; a reply constrained by a JSON schema cannot make them.
_ID_FAULTS = frozenset({"missing_id", "merged", "extra_id"})
_NOT_JSON = object()  # a request body that is absent or does not parse
_MARKUP = re.compile(r"(<[^>]*>|\{[^}]*\})")
_LETTERS = re.compile(r"[^\W\d_]+")


def fake_translation(text: str, target_language: str) -> str:
    """The translation the fake gives a line: deterministic, so tests can compute it, and no
    longer in the source language (each word's letters reversed, markup and numbers kept), as
    a real translation is not: the engine checks that replies left the source language."""
    parts = _MARKUP.split(text)
    for index in range(0, len(parts), 2):  # the text between tags
        parts[index] = _LETTERS.sub(lambda word: word.group(0)[::-1], parts[index])
    return f"[{target_language[:2].lower()}] {''.join(parts)}"


@dataclass
class Reply:
    """One scripted behaviour for one chat request."""

    kind: ReplyKind
    status: int = 200  # for kind="status": 429, 500, 503, 401, 403, 400 ...
    retry_after: float | None = None  # sent as Retry-After (seconds) with kind="status"
    body: str | None = None  # for kind="status": the error message
    delay: float = 0.0  # seconds to wait before answering; "hang" waits HANG_SECONDS if 0

    def __post_init__(self) -> None:
        # Literal is not checked at run time, and a typo would otherwise quietly answer "ok".
        if self.kind not in get_args(ReplyKind):
            raise ValueError(f"unknown reply kind {self.kind!r}")
        if self.kind == "status" and self.status < 400:
            raise ValueError("a 'status' reply needs an error status (400 or above)")


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # without the query string
    headers: dict[str, str]  # lower-case names
    json: Any  # the parsed body; None when there was none or it was not JSON
    received: float  # time.monotonic() on arrival, to measure gaps such as retry back-off


@dataclass
class _Rule:
    predicate: Callable[[dict[str, Any]], bool]
    reply: Reply
    times: int | None  # None: no limit


@dataclass
class _Response:
    status: int
    payload: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    generation: _Generation | None = None  # a chat answer, sent whole or streamed


class FakeOpenAI:
    """The running fake: its address, what it received, and the knobs a test turns."""

    def __init__(self, url: str, api_key: str | None = None, latency: float = 0.0) -> None:
        self.url = url
        self.api_key = api_key
        self.latency = latency
        self.default = Reply("ok")
        self.model = "gpt-4o-mini"  # the one model GET /v1/models lists
        self.reject_response_format = False  # 400 for any response_format
        self.format_refusal_status = 400  # llama-cpp-python's server answers 500
        self.only_completion_tokens = False  # 400 for max_tokens, as OpenAI's newer models
        # 400 for any response_format carrying a schema: a server that knows only JSON mode.
        self.refuse_schemas = False
        self.refuse_json_schema = (
            False  # 400 for json_schema only, as servers that know json_object
        )
        # A local model: tokens (about a word each) generated per second; None answers at once.
        self.tokens_per_second: float | None = None
        self.one_at_a_time = False  # requests queue and are generated one by one (llama.cpp)
        self.ramble_without_max_tokens = False  # filler after the answer until max_tokens or cap
        self.ignore_stream = False  # a whole JSON completion even when asked to stream
        self.echo_ids: set[str] = set()  # lines "translated" as their source text, every time
        # This fraction of lines comes back longer than its max_chars the first time it is asked.
        self.overlong_fraction = 0.0
        self.generated: list[int] = []  # tokens generated for each answered chat request
        self.requests: list[RecordedRequest] = []
        # Requests received and not yet answered, and the most at once: overlap is counted by
        # the server, so no test has to infer it from wall-clock time.
        self.in_flight = 0
        self.peak_in_flight = 0
        self._queue: deque[Reply] = deque()
        self._rules: list[_Rule] = []
        # Re-entrant: a `when` predicate runs under the lock and may itself look at the fake.
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._generating = threading.Lock()  # held by the request generating, one_at_a_time
        self._padded: set[str] = set()  # ids already answered over-long once

    def refuses(self, body: Any) -> bool:
        """Whether this chat request body is refused for its response_format."""
        kind = _format_type(body)
        return kind is not None and (
            self.reject_response_format
            or (self.refuse_json_schema and kind == "json_schema")
            or (self.refuse_schemas and _schema_ids(body) is not None)
        )

    def script(self, *replies: Reply) -> None:
        """Queue replies for the next chat requests, in order; then `default` applies again."""
        with self._lock:
            self._queue.extend(replies)

    def when(
        self, predicate: Callable[[dict[str, Any]], bool], reply: Reply, times: int | None = None
    ) -> None:
        """Answer chat requests whose JSON body satisfies `predicate` with `reply`, at most
        `times` times (None: always). Rules are checked in the order given, before the queue."""
        if times is not None and times < 1:
            raise ValueError("times must be at least 1, or None for always")
        with self._lock:
            self._rules.append(_Rule(predicate, reply, times))

    def translations_requested(self) -> list[dict[str, str]]:
        """The `lines` of every translation batch received, in order (rejected ones too)."""
        with self._lock:
            recorded = list(self.requests)
        batches = (lines_of(r.json) for r in recorded if r.path == "/v1/chat/completions")
        return [lines for lines in batches if lines is not None]

    def reset(self) -> None:
        """Forget the requests received, the queued replies and the rules."""
        with self._lock:
            self.requests.clear()
            self.peak_in_flight = self.in_flight
            self._queue.clear()
            self._rules.clear()

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def _done(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _next_reply(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            for rule in self._rules:
                if rule.predicate(body):
                    self._spend(rule)
                    return rule.reply
            return self._queue.popleft() if self._queue else self.default

    def _spend(self, rule: _Rule) -> None:
        if rule.times is None:
            return
        rule.times -= 1
        if rule.times <= 0:
            self._rules.remove(rule)

    def _wait(self, seconds: float) -> bool:
        """Sleep, but wake as soon as the server stops; True when the full time passed."""
        return seconds <= 0 or not self._stopping.wait(seconds)

    @contextmanager
    def _turn(self) -> Iterator[bool]:
        """The right to generate: at once, or after the others when one_at_a_time; False when
        the server stopped while waiting."""
        if not self.one_at_a_time:
            yield True
            return
        while not self._generating.acquire(timeout=0.01):
            if self._stopping.is_set():
                yield False
                return
        try:
            yield True
        finally:
            self._generating.release()

    def _token_time(self) -> float:
        return 1.0 / self.tokens_per_second if self.tokens_per_second else 0.0

    def _generated(self, tokens: int) -> None:
        with self._lock:
            self.generated.append(tokens)

    def _line_answer(self, key: str, text: str, budget: int | None, language: str) -> str:
        if key in self.echo_ids:
            return text
        translation = fake_translation(text, language)
        with self._lock:
            pad = (
                budget is not None
                and key not in self._padded
                and _chosen(key, self.overlong_fraction)
            )
            if pad:
                self._padded.add(key)
        return _padded(translation, budget) if pad and budget is not None else translation


@contextmanager
def serve_openai(api_key: str | None = None, latency: float = 0.0) -> Iterator[FakeOpenAI]:
    """Run a fake OpenAI API on 127.0.0.1 while the block runs; clients use `fake.url + "/v1"`."""
    server = _Server(("127.0.0.1", 0), _Handler)
    fake = FakeOpenAI(f"http://127.0.0.1:{server.server_address[1]}", api_key, latency)
    server.fake = fake
    # A short poll interval keeps shutdown (once per test that starts a server) quick.
    serve = partial(server.serve_forever, poll_interval=0.01)
    thread = threading.Thread(target=serve, name="fake-openai", daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        # Wake sleeping handlers first: they drop their connection instead of answering late.
        fake._stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def lines_of(request: Any) -> dict[str, str] | None:
    """The `lines` of a translation batch in a chat request body, or None if it is not one."""
    batch = _batch_of(request)
    return None if batch is None else batch.lines


@dataclass(frozen=True)
class _Batch:
    lines: dict[str, str]  # id -> source text
    budgets: dict[str, int]  # id -> max_chars, for lines sent as {"text", "max_chars"}
    language: str


def _batch_of(request: Any) -> _Batch | None:
    """The batch in the last user message, or None if it is not one."""
    if not isinstance(request, dict) or not isinstance(request.get("messages"), list):
        return None
    users = [m for m in request["messages"] if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        return None
    try:
        batch = json.loads(_text_of(users[-1].get("content")))
    except ValueError:
        return None
    if not isinstance(batch, dict):
        return None
    lines, language = batch.get("lines"), batch.get("target_language")
    if not isinstance(language, str) or not isinstance(lines, dict):
        return None
    texts: dict[str, str] = {}
    budgets: dict[str, int] = {}
    for key, line in lines.items():
        # A line is its text, or {"text": ..., "max_chars": N} when it carries a budget.
        if isinstance(line, dict) and isinstance(line.get("text"), str):
            texts[key] = line["text"]
            if isinstance(line.get("max_chars"), int):
                budgets[key] = line["max_chars"]
        elif isinstance(line, str):
            texts[key] = line
        else:
            return None
    return _Batch(texts, budgets, language)


def _format_type(body: Any) -> str | None:
    response_format = body.get("response_format") if isinstance(body, dict) else None
    return response_format.get("type") if isinstance(response_format, dict) else None


def _schema_ids(body: dict[str, Any]) -> list[str] | None:
    """The ids a schema in the response_format requires (json_schema, or json_object with a
    schema as llama.cpp's servers take it), or None without one."""
    kind = _format_type(body)
    if kind == "json_schema":
        schema = body["response_format"].get("json_schema", {}).get("schema", {})
    elif kind == "json_object":
        schema = body["response_format"].get("schema", {})
    else:
        return None
    required = schema.get("required") if isinstance(schema, dict) else None
    return [str(key) for key in required] if isinstance(required, list) else None


def _text_of(content: Any) -> str:
    # The SDK may send content as a string or as a list of typed parts.
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


# --- Replies -----------------------------------------------------------------------------------


def _content(fake: FakeOpenAI, kind: ReplyKind, batch: _Batch, schema: list[str] | None) -> str:
    """The assistant message a reply kind produces for one batch."""
    if kind == "obey" and any(INJECTION in text.lower() for text in batch.lines.values()):
        return "OK"
    if schema is not None and kind in _ID_FAULTS:
        # A grammar built from the schema lets the model write exactly the ids it requires.
        kind = "ok"
    translations = {
        key: fake._line_answer(key, text, batch.budgets.get(key), batch.language)
        for key, text in batch.lines.items()
    }
    text = json.dumps(_altered(kind, translations), ensure_ascii=False)
    if kind == "fenced":
        return f"```json\n{text}\n```"
    if kind == "prose":
        return f"Here are the translations:\n{text}\nHope this helps!"
    if kind == "invalid_json":
        # A JSON object only closes at its last brace, so any shorter prefix never parses.
        return text[: max(1, len(text) // 2)]
    return text


def _chosen(key: str, fraction: float) -> bool:
    """A stable choice of about `fraction` of all ids."""
    return zlib.crc32(key.encode()) % 1000 < fraction * 1000


def _padded(translation: str, budget: int) -> str:
    """The translation made longer than `budget` characters, as a wordy model writes it."""
    while len(translation) <= budget:
        translation += " und so weiter"
    return translation


def _altered(kind: ReplyKind, translations: dict[str, str]) -> dict[str, str]:
    """The translations with the miscount or gap a reply kind asks for."""
    keys = list(translations)
    out = dict(translations)
    if kind == "missing_id" and keys:
        del out[keys[-1]]
    elif kind == "merged" and len(keys) >= 2:
        # A lone line cannot be merged with anything, so a one-line batch comes back correct.
        out[keys[-2]] = f"{out[keys[-2]]} {out.pop(keys[-1])}"
    elif kind == "extra_id":
        out[_unused_id(keys)] = "[??] A line nobody sent."
    elif kind == "empty_line" and keys:
        out[keys[0]] = ""
    return out


def _unused_id(keys: list[str]) -> str:
    # Numeric ids get the next number, as a model continuing the sequence would invent.
    if keys and all(k.isdigit() for k in keys):
        return str(max(int(k) for k in keys) + 1)
    candidate = "extra"
    while candidate in keys:
        candidate += "_"
    return candidate


@dataclass
class _Generation:
    """A chat answer as a model produces it, token by token."""

    model: str
    tokens: list[str]
    finish_reason: str  # "stop", or "length" when max_tokens or the ramble cap ended it
    stream: bool
    prompt_tokens: int
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex[:24]}")
    created: int = field(default_factory=lambda: int(time.time()))

    def completion(self) -> dict[str, Any]:
        message = {"role": "assistant", "content": "".join(self.tokens), "refusal": None}
        choice = {"index": 0, "message": message, "logprobs": None}
        return {
            **self._head("chat.completion"),
            "choices": [{**choice, "finish_reason": self.finish_reason}],
            # Words stand in for tokens: only their presence and rough size matter here.
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": len(self.tokens),
                "total_tokens": self.prompt_tokens + len(self.tokens),
            },
        }

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {**self._head("chat.completion.chunk"), "choices": [choice]}

    def _head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}


def _generation(fake: FakeOpenAI, content: str, request: dict[str, Any]) -> _Generation:
    """The tokens a model writes for `content`, cut by max_tokens, rambling on if set to."""
    answer = _tokens(content)
    limit = request.get("max_tokens", request.get("max_completion_tokens"))
    limit = limit if isinstance(limit, int) and limit > 0 else None
    if fake.ramble_without_max_tokens:
        cap = limit or RAMBLE_CAP
        tokens = list(islice(chain(answer, cycle(_tokens(_FILLER))), cap))
        finish = "length"
    else:
        tokens = answer[:limit] if limit else answer
        finish = "length" if len(tokens) < len(answer) else "stop"
    prompt = sum(len(_text_of(m.get("content")).split()) for m in request["messages"])
    stream = bool(request.get("stream")) and not fake.ignore_stream
    return _Generation(request["model"], tokens, finish, stream, prompt)


def _tokens(text: str) -> list[str]:
    """About a word each, spaces included, so that joined they give the text back."""
    return re.findall(r"\S+\s*|\s+", text)


# OpenAI's (type, code) for each error status; others fall back by class (4xx or 5xx).
_ERROR_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("request_forbidden", None),
    404: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
}


def _error(
    status: int,
    message: str | None = None,
    *,
    param: str | None = None,
    retry_after: float | None = None,
    delay: float = 0.0,
) -> _Response:
    default_type = "server_error" if status >= 500 else "invalid_request_error"
    error_type, code = _ERROR_KINDS.get(status, (default_type, None))
    text = message or _phrase(status)
    error = {"message": text, "type": error_type, "param": param, "code": code}
    headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
    return _Response(status, {"error": error}, headers, delay)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


# --- Routing -----------------------------------------------------------------------------------


def _respond(
    fake: FakeOpenAI, method: str, path: str, headers: dict[str, str], body: Any
) -> _Response:
    """Everything the server decides for one request, before any waiting or writing."""
    denied = _check_key(fake, headers.get("authorization"))
    if denied is not None:
        return denied
    if (method, path) == ("GET", "/v1/models"):
        return _Response(200, _models(fake))
    if (method, path) == ("POST", "/v1/chat/completions"):
        return _chat(fake, body)
    return _error(404, f"Invalid URL ({method} {path})")


def _check_key(fake: FakeOpenAI, authorization: str | None) -> _Response | None:
    if fake.api_key is None or authorization == f"Bearer {fake.api_key}":
        return None
    if not authorization:
        return _error(401, "You didn't provide an API key.")
    return _error(401, "Incorrect API key provided.")


def _models(fake: FakeOpenAI) -> dict[str, Any]:
    model = {"id": fake.model, "object": "model", "created": 1700000000, "owned_by": "system"}
    return {"object": "list", "data": [model]}


def _chat(fake: FakeOpenAI, body: Any) -> _Response:
    invalid = _invalid_chat_request(fake, body)
    if invalid is not None:
        return invalid
    try:
        reply = fake._next_reply(body)
    except Exception as exc:
        # A broken test predicate should fail loudly in the test, not as a dropped connection.
        return _error(500, f"fake OpenAI: a `when` predicate raised {exc!r}")
    if reply.kind == "status":
        return _error(reply.status, reply.body, retry_after=reply.retry_after, delay=reply.delay)
    batch = _batch_of(body)
    if batch is None:
        return _error(400, "fake OpenAI: the last user message is not a translation batch")
    delay = reply.delay or (HANG_SECONDS if reply.kind == "hang" else 0.0)
    content = _content(fake, reply.kind, batch, _schema_ids(body))
    return _Response(200, {}, delay=delay, generation=_generation(fake, content, body))


def _invalid_chat_request(fake: FakeOpenAI, body: Any) -> _Response | None:
    """The 400 OpenAI would give this request body, or None when it is acceptable."""
    if body is _NOT_JSON or not isinstance(body, dict):
        return _error(400, "We could not parse the JSON body of your request.")
    if not isinstance(body.get("model"), str):
        return _error(400, "you must provide a model parameter", param="model")
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return _error(400, "'messages' must be a non-empty array", param="messages")
    if not _valid_temperature(body.get("temperature")):
        return _error(400, f"Invalid 'temperature': {body['temperature']!r}", param="temperature")
    if fake.only_completion_tokens and "max_tokens" in body:
        # OpenAI's answer for its newer models (o-series, gpt-5).
        message = (
            "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead."
        )
        return _error(400, message, param="max_tokens")
    if fake.refuses(body):
        # Some local servers refuse the parameter outright, or know only json_object;
        # llama-cpp-python's answers 500 with its validation message.
        kind = _format_type(body)
        message = f"response_format {kind} is not supported"
        return _error(fake.format_refusal_status, message, param="response_format")
    return None


def _valid_temperature(value: Any) -> bool:
    if value is None:
        return True
    # bool is an int in Python, but OpenAI rejects `true` as a temperature.
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 2


# --- HTTP --------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a handler still sleeping never keeps the process alive
    fake: FakeOpenAI

    def handle_error(self, request: socket.socket, client_address: tuple[str, int]) -> None:
        # Clients that give up (a timed-out request) are normal here, not noise.
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # One request per connection: a pooled keep-alive connection could otherwise still be
    # served by its handler thread after the server has shut down.
    protocol_version = "HTTP/1.0"
    timeout = 10  # a client that connects and sends nothing does not hold a thread forever

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        fake = self.server.fake
        path = urlsplit(self.path).path
        headers = {name.lower(): value for name, value in self.headers.items()}
        body = self._read_json()
        received = time.monotonic()
        fake._record(RecordedRequest(method, path, headers, _recorded(body), received))
        done = _Once(fake._done)
        try:
            response = _respond(fake, method, path, headers, body)
            # Latency and delays overlap across requests unless they queue for one at a time;
            # a stop cuts them short, and the connection is dropped unanswered.
            with fake._turn() as turn:
                if turn and fake._wait(fake.latency + response.delay):
                    self._answer(response, done)
        finally:
            done()

    def _answer(self, response: _Response, done: _Once) -> None:
        """Sends the response; `done` runs before its last bytes go out, so a client holding
        its answer never sees itself counted in flight."""
        fake = self.server.fake
        generation = response.generation
        if generation is None:
            done()
            self._send(response)
        elif generation.stream:
            self._stream(generation, done)
        elif fake._wait(len(generation.tokens) * fake._token_time()):
            fake._generated(len(generation.tokens))
            done()
            self._send(_Response(200, generation.completion()))

    def _stream(self, generation: _Generation, done: _Once) -> None:
        fake = self.server.fake
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        sent, counted = 0, False
        try:
            self._event(generation.chunk({"role": "assistant", "content": ""}))
            last = len(generation.tokens) - 1
            for k, token in enumerate(generation.tokens):
                if not fake._wait(fake._token_time()):
                    return
                if k == last:
                    # A client stops reading once its answer is whole, and may send its next
                    # request before this thread runs again: it is out of flight by then.
                    done()
                # A client that hung up fails this write, and the model stops, as llama.cpp does.
                self._event(generation.chunk({"content": token}))
                sent += 1
            done()
            # Counted before the end goes out: a client that has read the end finds it counted.
            fake._generated(sent)
            counted = True
            self._event(generation.chunk({}, generation.finish_reason))
            self.wfile.write(b"data: [DONE]\n\n")
        finally:
            if not counted:
                fake._generated(sent)

    def _event(self, payload: dict[str, Any]) -> None:
        self.wfile.write(f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode())
        self.wfile.flush()

    def _read_json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        try:
            return json.loads(raw) if raw else _NOT_JSON
        except ValueError:
            return _NOT_JSON

    def _send(self, response: _Response) -> None:
        data = json.dumps(response.payload, ensure_ascii=False).encode()
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex[:16]}")
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class _Once:
    def __init__(self, call: Callable[[], None]) -> None:
        self._call: Callable[[], None] | None = call

    def __call__(self) -> None:
        call, self._call = self._call, None
        if call is not None:
            call()


def _recorded(body: Any) -> Any:
    return None if body is _NOT_JSON else body
