"""Runs one job at a time on its backend, in a thread of its own.

The page's handler only reads a queue, so it can show a heartbeat while the backend is quiet,
and a Cancel or a closed tab (Gradio closes the handler) never has to wait for the backend
inside Gradio's event loop: the job is told to stop and its thread winds down by itself.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from engine.protocol import RETRY_HINT, Backend, ErrorEvent, Event, JobSpec, SubtideError

log = logging.getLogger(__name__)
# How long a new job waits for a cancelled one to wind down before giving up.
STOP_WAIT_S = 30.0


@dataclass
class _Job:
    owner: str  # the Gradio session that started it; only that session may cancel it
    backend: Backend
    events: queue.Queue[Event | None] = field(default_factory=queue.Queue)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


class JobRunner:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: _Job | None = None

    def run(
        self, backend: Backend, job: JobSpec, owner: str, heartbeat: float
    ) -> Iterator[Event | None]:
        """The job's events; None every `heartbeat` seconds without one.

        Closing the iterator before the job ends cancels the job; so does `cancel`, after which
        the iterator ends with a `cancelled` error without waiting for the backend."""
        running = self._start(backend, job, owner)
        finished = False
        try:
            while not finished:
                if running.stop.is_set():
                    # The page hears at once; the backend winds down in its own thread.
                    yield ErrorEvent(code="cancelled", message="The job was cancelled.")
                    return
                try:
                    event = running.events.get(timeout=heartbeat)
                except queue.Empty:
                    yield None
                    continue
                finished = event is None
                if event is not None:
                    yield event
        finally:
            if not finished:
                self._stop(running)

    def cancel(self, owner: str) -> bool:
        """Stops the job `owner` started; False when it has none running or stopping.

        A Cancel click also closes the page's handler (Gradio's `cancels`), which stops the job
        too, and either may come first: a job stopped that way counts as cancelled here."""
        with self._lock:
            running = self._current
        if running is None or running.owner != owner:
            return False
        return self._stop(running) or running.stop.is_set()

    def _start(self, backend: Backend, job: JobSpec, owner: str) -> _Job:
        with self._lock:
            previous = self._current
        # The backend runs one job at a time; a cancelled one may still be winding down.
        if previous is not None and previous.thread is not None:
            previous.thread.join(STOP_WAIT_S)
            if previous.thread.is_alive():
                raise SubtideError(
                    "internal",
                    "The previous job is still stopping.",
                    hint="Wait a moment, then press Run again.",
                )
        running = _Job(owner, backend)
        running.thread = threading.Thread(
            target=self._pump, args=(job, running), name="subtide-job", daemon=True
        )
        with self._lock:
            self._current = running
        running.thread.start()
        return running

    def _stop(self, running: _Job) -> bool:
        if running.stop.is_set() or running.thread is None or not running.thread.is_alive():
            return False
        running.stop.set()
        running.backend.cancel()
        return True

    def _pump(self, job: JobSpec, running: _Job) -> None:
        try:
            for event in running.backend.run(job):
                running.events.put(event)
                # A cancel that came before the backend started its job was cleared by it.
                if running.stop.is_set():
                    running.backend.cancel()
        except Exception:
            # Remote backends can fail in transport; the page gets a message, the log the rest.
            log.exception("the backend failed while running %s", job.source.label)
            running.events.put(
                ErrorEvent(
                    code="internal",
                    message="The backend stopped unexpectedly.",
                    hint=RETRY_HINT,
                )
            )
        finally:
            running.events.put(None)
