"""A job's Events produced ahead of a consumer that stops between them, and sent on in as few
Events as they allow.

The RunPod SDK posts each chunk a handler yields before it asks for the next, a round trip
each: pulled directly, the engine would stand still for every one of them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator

from engine.protocol import Cue, CuesEvent, Event, ProgressEvent


class ReadAhead:
    """The Events of `events` (an `Engine.run`), produced in a thread of their own: the engine
    keeps transcribing while the consumer is away, and what piled up by its next ask comes as
    one Event per kind (see `coalesce`). `cancel` stops the engine."""

    _END = object()

    def __init__(self, events: Iterator[Event], cancel: Callable[[], None]) -> None:
        self._queue: queue.Queue[object] = queue.Queue()
        self._cancel = cancel
        self._stopping = threading.Event()
        self._ended = False  # the end was taken from the queue: nothing more will come
        self._thread = threading.Thread(target=self._pump, args=(events,), daemon=True)
        self._thread.start()

    def _pump(self, events: Iterator[Event]) -> None:
        try:
            for event in events:
                # Cancelled only while the engine is paused at an Event, so it always sees the
                # cancel and clears it when it ends: a job that had already ended would leave
                # it set, and the worker's next job would stop at once.
                if self._stopping.is_set():
                    self._cancel()
                self._queue.put(event)
        finally:
            self._queue.put(self._END)

    def __iter__(self) -> Iterator[Event]:
        while not self._ended:
            waiting = [self._queue.get()]
            while not self._queue.empty():
                waiting.append(self._queue.get_nowait())
            self._ended = waiting[-1] is self._END
            yield from coalesce([e for e in waiting if e is not self._END])  # type: ignore[misc]

    def stop(self) -> None:
        """Cancels the engine and waits for it to wind down, dropping what it still yields;
        nothing to do once its Events have ended."""
        self._stopping.set()
        for _ in self:
            pass
        self._thread.join()


def coalesce(events: list[Event]) -> Iterator[Event]:
    """Events that came together as fewer: their cues in one event (a later copy of a cue
    replaces an earlier one in place), then every notice (the user must see each) and the
    latest progress (percent only grows), then the result or error, which ends a job."""
    cues: dict[int, Cue] = {}
    notices: list[ProgressEvent] = []
    progress: ProgressEvent | None = None
    ends: list[Event] = []
    for event in events:
        if isinstance(event, CuesEvent):
            cues.update((cue.id, cue) for cue in event.cues)
        elif isinstance(event, ProgressEvent):
            progress = event
            if event.notice:
                notices.append(event)
        else:
            ends.append(event)
    if cues:
        yield CuesEvent(cues=list(cues.values()))
    yield from notices
    # The latest progress is sent unless it was the last notice, already sent.
    if progress is not None and not progress.notice:
        yield progress
    yield from ends
