"""Events read ahead of a slow consumer and sent on as few as they allow."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from engine.protocol import Cue, CuesEvent, ErrorEvent, Event, ProgressEvent, ResultEvent
from engine.stream import ReadAhead, coalesce
from tests.support.timing import HANG_GUARD_S


def _cue(cue_id: int, text: str) -> Cue:
    return Cue(id=cue_id, start=cue_id, end=cue_id + 0.5, text=text)


def test_coalesce_keeps_every_cue_the_latest_progress_and_the_end():
    result = ResultEvent(cues=[], language="en", duration=1.0)
    events: list[Event] = [
        ProgressEvent(stage="transcribe", percent=10),
        CuesEvent(cues=[_cue(1, "one"), _cue(2, "two")]),
        ProgressEvent(stage="transcribe", percent=20),
        CuesEvent(cues=[_cue(2, "two, translated"), _cue(3, "three")]),
        result,
    ]
    merged = list(coalesce(events))
    assert [event.type for event in merged] == ["cues", "progress", "result"]
    assert [(c.id, c.text) for c in merged[0].cues] == [
        (1, "one"),
        (2, "two, translated"),
        (3, "three"),
    ]
    assert merged[1].percent == 20 and merged[2] is result


def test_coalesce_keeps_every_notice_in_order_and_percent_never_goes_down():
    first = ProgressEvent(stage="transcribe", percent=15, message="model replaced", notice=True)
    second = ProgressEvent(stage="finalize", percent=95, message="no speech found", notice=True)
    events: list[Event] = [
        ProgressEvent(stage="transcribe", percent=10),
        first,
        ProgressEvent(stage="transcribe", percent=90),
        second,
    ]
    assert list(coalesce(events)) == [first, second]
    latest = ProgressEvent(stage="finalize", percent=100)
    assert list(coalesce([*events, latest])) == [first, second, latest]


def test_read_ahead_runs_on_while_the_consumer_is_away():
    produced: list[int] = []

    def events() -> Iterator[Event]:
        for percent in range(0, 101, 10):
            produced.append(percent)
            yield ProgressEvent(stage="transcribe", percent=percent)
        yield ResultEvent(cues=[], language="en", duration=1.0)

    ahead = iter(ReadAhead(events(), cancel=lambda: None))
    first = next(ahead)
    # A slow post: the producer does not wait for it, and finishes while the consumer is away
    # (the deadline is a hang guard).
    deadline = time.monotonic() + HANG_GUARD_S
    while len(produced) < 11:
        assert time.monotonic() < deadline, produced
        time.sleep(0.01)
    got = [first, *ahead]
    assert got[-1].type == "result" and len(got) <= 3
    percents = [e.percent for e in got if e.type == "progress"]
    assert percents == sorted(percents) and percents[-1] == 100


def test_stop_cancels_the_producer_and_drops_what_it_still_yields():
    cancelled = threading.Event()
    produced: list[int] = []

    def events() -> Iterator[Event]:
        for percent in range(100):
            produced.append(percent)
            if cancelled.is_set():
                yield ErrorEvent(code="cancelled", message="stopped")
                return
            time.sleep(0.01)
            yield ProgressEvent(stage="transcribe", percent=percent)

    ahead = ReadAhead(events(), cancel=cancelled.set)
    next(iter(ahead))
    ahead.stop()  # returns once the producer has ended
    assert cancelled.is_set() and len(produced) < 100
