"""The translator against a small local model, as llama.cpp's server runs one on a laptop.

The fake OpenAI server plays it (OFFLINE.md): a few tokens a second, one request generated at a
time, replies that ramble on without max_tokens, lines that come back untranslated or too long.
Every test asserts behaviour (what was sent, how often, what came back), never speed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from engine.protocol import Cue
from engine.translate import LLMConfig, TranslateOptions, Translator, translate_cues
from tests.support.openai_server import (
    RAMBLE_CAP,
    FakeOpenAI,
    RecordedRequest,
    Reply,
    fake_translation,
    lines_of,
    serve_openai,
)
from tests.support.timing import HANG_GUARD_S

MODEL = "gemma-3-270m"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with serve_openai() as server:
        yield server


def make_translator(fake: FakeOpenAI, *, timeout: float = 10.0, **options: Any) -> Translator:
    settings = {"batch_size": 5, "context": 1, "max_attempts": 4, "backoff": 0.05, **options}
    llm = LLMConfig(MODEL, base_url=f"{fake.url}/v1", timeout=timeout)
    return Translator(llm, TranslateOptions(**settings))


def short_cues(count: int) -> list[Cue]:
    # Short lines (few tokens, so tests stay quick at a few tokens a second) with room on screen.
    return [
        Cue(id=i, start=3.0 * i, end=3.0 * i + 2.5, text=f"Line {i}.") for i in range(1, count + 1)
    ]


def german(cue: Cue) -> str:
    return fake_translation(cue.text, "German")


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while not condition():
        assert time.monotonic() < deadline, "the stand-in never got there"
        time.sleep(0.02)


def chats(fake: FakeOpenAI) -> list[RecordedRequest]:
    return [r for r in fake.requests if r.path == "/v1/chat/completions"]


def resent(fake: FakeOpenAI) -> int:
    """Requests beyond one per line set sent: the same lines asked again."""
    batches = [tuple(lines_of(r.json) or {}) for r in chats(fake)]
    return len(batches) - len(set(batches))


def test_one_request_at_a_time_at_25_tokens_a_second(fake: FakeOpenAI) -> None:
    fake.one_at_a_time = True
    fake.tokens_per_second = 25
    cues = short_cues(40)
    with make_translator(fake, concurrency=4) as translator:
        results = translate_cues(translator, cues, "de", "en")
    assert [r.text for r in results] == [german(c) for c in cues]
    assert all(r.problem is None for r in results)
    # Eight batches, each sent once: none timed out in the queue and went again.
    assert len(chats(fake)) == 8 and resent(fake) == 0
    assert fake.peak_in_flight <= 4  # the others waited at the server for their turn


def test_every_request_is_bounded_so_a_rambling_model_stops(fake: FakeOpenAI) -> None:
    fake.ramble_without_max_tokens = True
    fake.tokens_per_second = 200
    cues = short_cues(10)
    with make_translator(fake) as translator:
        results = translate_cues(translator, cues, "de", "en")
    assert [r.text for r in results] == [german(c) for c in cues]
    bounds = [r.json.get("max_tokens") for r in chats(fake)]
    assert all(isinstance(bound, int) and bound < RAMBLE_CAP // 4 for bound in bounds)
    # However late the client's hang-up reaches a busy server, no reply ran past its bound.
    # A reply is counted when its server thread ends, which can be after the client is done.
    wait_until(lambda: len(fake.generated) >= len(bounds))
    assert fake.generated and max(fake.generated) <= max(bounds)


def test_a_server_that_does_not_stream_still_works(fake: FakeOpenAI) -> None:
    fake.ignore_stream = True
    fake.ramble_without_max_tokens = True  # cut by max_tokens: the answer is still whole
    cues = short_cues(10)
    with make_translator(fake) as translator:
        results = translate_cues(translator, cues, "de", "en")
    assert [r.text for r in results] == [german(c) for c in cues]
    assert len(chats(fake)) == 2
    assert max(fake.generated) < RAMBLE_CAP


def test_untranslated_lines_are_asked_again_then_flagged(fake: FakeOpenAI) -> None:
    texts = ["We should leave now.", "42", "Anna Schmidt", "open source", "Right?", "See you."]
    cues = [Cue(id=i, start=3.0 * i, end=3.0 * i + 2.5, text=t) for i, t in enumerate(texts, 1)]
    fake.echo_ids = {"1", "2", "3", "4", "5"}
    glossary = {"open source": "open source"}
    with make_translator(fake, batch_size=10, glossary=glossary) as translator:
        results = translate_cues(translator, cues, "de", "en")
    assert [(r.text, r.problem) for r in results] == [
        (None, "unchanged"),  # a sentence that came back as it was, twice
        ("42", None),  # a number
        ("Anna Schmidt", None),  # a name
        ("open source", None),  # the glossary keeps it
        ("Right?", None),  # one word
        (german(cues[5]), None),
    ]
    _, again = chats(fake)
    assert list(lines_of(again.json) or {}) == ["1"]
    assert "untranslated" in again.json["messages"][-1]["content"]


def test_lines_too_long_for_the_screen_are_asked_once_to_be_shorter(fake: FakeOpenAI) -> None:
    fake.overlong_fraction = 0.2
    cues = short_cues(40)
    with make_translator(fake, batch_size=10) as translator:
        job = translator.start("de", "en")
        job.add(cues)
        job.finish()
        results = job.wait()
        fitting, translated = job.fit_counts()
    assert translated == 40 and fitting >= 0.95 * translated
    assert [r.text for r in results] == [german(c) for c in cues]
    follow_ups = [r for r in chats(fake) if "too_long" in r.json["messages"][-1]["content"]]
    assert follow_ups  # about one line in five came back too long
    assert len(chats(fake)) == 4 + len(follow_ups) and len(follow_ups) <= 4


def test_silence_times_out_but_a_slow_writer_is_never_cut(fake: FakeOpenAI) -> None:
    cues = short_cues(1)
    fake.default = Reply("hang")  # never sends a byte
    with make_translator(fake, timeout=1.0, max_attempts=2) as translator:
        (silent,) = translate_cues(translator, cues, "de", "en")
    assert (silent.text, silent.problem) == (None, "timeout")
    first, second = chats(fake)
    assert second.received - first.received >= 1.0

    fake.reset()
    fake.default = Reply("ok")
    fake.tokens_per_second = 2  # a chunk every 0.5 s, some 2.5 s for the whole reply
    with make_translator(fake, timeout=1.0, max_attempts=1) as translator:
        (slow,) = translate_cues(translator, cues, "de", "en")
    assert slow.text == german(cues[0])
    assert len(chats(fake)) == 1


def test_concurrency_drops_to_one_when_queued_requests_time_out(
    fake: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="engine.pace")
    fake.one_at_a_time = True
    fake.tokens_per_second = 18  # about 1.2 s a batch: a request behind another times out
    cues = short_cues(30)
    with make_translator(fake, timeout=0.5, concurrency=4) as translator:
        results = translate_cues(translator, cues, "de", "en")
    assert [r.text for r in results] == [german(c) for c in cues]
    # Halved on timeouts down to one (it may grow back after quick answers alone).
    assert "1 at a time now" in caplog.text
    # Only those queued behind the first burst went again, each once, one at a time.
    assert resent(fake) <= 4


def test_a_model_that_takes_only_max_completion_tokens_gets_it(fake: FakeOpenAI) -> None:
    """OpenAI's newer models refuse `max_tokens`: the bound goes by its newer name, learnt
    once for the server."""
    fake.only_completion_tokens = True
    cues = short_cues(6)
    with make_translator(fake, batch_size=3) as translator:
        results = translate_cues(translator, cues, "de", "en")
    assert [r.text for r in results] == [german(c) for c in cues]
    bounds = [("max_tokens" in r.json, "max_completion_tokens" in r.json) for r in chats(fake)]
    assert bounds[0] == (True, False) and set(bounds[1:]) == {(False, True)}
