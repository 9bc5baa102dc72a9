"""An OpenAI-compatible HTTP server on 127.0.0.1 that stands in for paid LLM APIs in tests.

The real `openai` SDK talks to it (`OpenAI(base_url=f"{fake.url}/v1", ...)`). It answers
`POST /v1/chat/completions` (non-streaming) and `GET /v1/models` with OpenAI's production
shapes, understands the translator's batch protocol (the last user message is a JSON object
with `target_language` and `lines`), and lets each test script replies and inject faults:
429 + Retry-After, 5xx, hangs, and the ways a real model gets the output wrong.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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
_NOT_JSON = object()  # a request body that is absent or does not parse


def fake_translation(text: str, target_language: str) -> str:
    """The translation the fake gives a line: deterministic, so tests can compute it."""
    return f"[{target_language[:2].lower()}] {text}"


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


class FakeOpenAI:
    """The running fake: its address, what it received, and the knobs a test turns."""

    def __init__(self, url: str, api_key: str | None = None, latency: float = 0.0) -> None:
        self.url = url
        self.api_key = api_key
        self.latency = latency
        self.default = Reply("ok")
        self.model = "gpt-4o-mini"  # the one model GET /v1/models lists
        self.reject_response_format = False
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
    return None if batch is None else batch[0]


def _batch_of(request: Any) -> tuple[dict[str, str], str] | None:
    """(lines, target_language) from the last user message, or None if it is not a batch."""
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
    if not isinstance(language, str) or not _is_str_map(lines):
        return None
    return lines, language


def _text_of(content: Any) -> str:
    # The SDK may send content as a string or as a list of typed parts.
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _is_str_map(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


# --- Replies -----------------------------------------------------------------------------------


def _content(kind: ReplyKind, lines: dict[str, str], language: str) -> str:
    """The assistant message a reply kind produces for one batch."""
    if kind == "obey" and any(INJECTION in text.lower() for text in lines.values()):
        return "OK"
    translations = {key: fake_translation(text, language) for key, text in lines.items()}
    text = json.dumps(_altered(kind, translations), ensure_ascii=False)
    if kind == "fenced":
        return f"```json\n{text}\n```"
    if kind == "prose":
        return f"Here are the translations:\n{text}\nHope this helps!"
    if kind == "invalid_json":
        # A JSON object only closes at its last brace, so any shorter prefix never parses.
        return text[: max(1, len(text) // 2)]
    return text


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


def _completion(model: str, content: str, request: dict[str, Any]) -> dict[str, Any]:
    prompt = sum(len(_text_of(m.get("content")).split()) for m in request["messages"])
    completion = len(content.split())
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        # Word counts stand in for tokens: only their presence and rough size matter here.
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


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
    content = _content(reply.kind, *batch)
    return _Response(200, _completion(body["model"], content, body), delay=delay)


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
    if body.get("stream"):
        return _error(400, "fake OpenAI: streaming is not supported", param="stream")
    if "response_format" in body and fake.reject_response_format:
        # Some local servers refuse the parameter outright; the translator retries without it.
        return _error(400, "response_format is not supported", param="response_format")
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
        try:
            response = _respond(fake, method, path, headers, body)
            # Latency and delays overlap across requests, one thread each; a stop cuts them short.
            answer = fake._wait(fake.latency + response.delay)
        finally:
            # Before the answer goes out: a client holding its answer never sees itself counted.
            fake._done()
        if answer:
            self._send(response)

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


def _recorded(body: Any) -> Any:
    return None if body is _NOT_JSON else body
