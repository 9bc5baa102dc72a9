"""How the command line runs jobs: the progress board and its lasting lines, the worker threads,
and Ctrl-C / SIGTERM, which stop a run at once and leave no temporary file behind."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.protocol import Backend, Event, JobSpec, ResultEvent

# After Ctrl-C, how long the workers get to end by themselves (their own cleanup runs then);
# the run exits after this even if one is still blocked, well within the 2 s a user waits.
GRACE_S = 1.0
# A wait longer than this gets a "waiting for …" line. Reading a page that answers takes yt-dlp
# a few seconds on a busy laptop: a shorter delay would say "waiting" about a host that answered.
SLOW_S = 5.0
# Exit status of a run whose files are written but some translations are missing: lines kept
# in the source language, or a target with no files because nothing could be translated.
INCOMPLETE = 3


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM: the run stops and exits with 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.code = 128 + signum


@contextmanager
def interrupts() -> Iterator[None]:
    """SIGINT and SIGTERM raise `Interrupted` in the main thread. Only the first: one that
    comes while the run is stopping is ignored, so that the cleanup runs to its end."""
    fired = False

    def handler(signum: int, _frame: FrameType | None) -> None:
        nonlocal fired
        if not fired:
            fired = True
            raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        if not fired:
            for sig, handling in previous.items():
                signal.signal(sig, handling)


@contextmanager
def private_tempdir() -> Iterator[None]:
    """Every temporary file of the run (the engine's work folders, a download's .part file) in
    one folder of its own, removed when the run ends: also what a worker abandoned on Ctrl-C
    leaves, whose own cleanup never runs. TMPDIR too, for native libraries and child processes
    (onnxruntime, under faster-whisper's VAD, drops a `.ses` file there on every run)."""
    folder = tempfile.mkdtemp(prefix="subtide-run-")
    saved, saved_env = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir = os.environ["TMPDIR"] = folder
    try:
        yield
    finally:
        tempfile.tempdir = saved
        if saved_env is None:
            del os.environ["TMPDIR"]
        else:
            os.environ["TMPDIR"] = saved_env
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def said_if_slow(say: Callable[[str], None], message: str) -> Iterator[None]:
    """Says `message` if the block is still running after SLOW_S."""
    timer = threading.Timer(SLOW_S, say, [message])
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def summary(result: ResultEvent, seconds: float) -> str:
    """A finished job in one line: "42 cues, 2 speakers, en → de, fr, in 1 min 12 s, text from
    speech recognition"."""
    parts = [f"{len(result.cues)} cue{'s' * (len(result.cues) != 1)}"]
    speakers = len({cue.speaker for cue in result.cues if cue.speaker})
    if speakers:
        parts.append(f"{speakers} speaker{'s' * (speakers != 1)}")
    targets = ", ".join(result.targets)
    parts.append(f"{result.language} → {targets}" if targets else result.language)
    minutes, rest = divmod(round(seconds), 60)
    parts.append(f"in {minutes} min {rest} s" if minutes else f"in {seconds:.1f} s")
    parts.append(f"text from {_TEXT_FROM[result.source]}")
    return ", ".join(parts)


_TEXT_FROM = {
    "asr": "speech recognition",
    "captions-manual": "captions or a subtitle file",
    "captions-auto": "the video's automatic captions",
}


class Board:
    """One progress bar per running job, on stderr and only on a terminal; and the lasting
    `subtide: …` lines (errors, notices, where a file went), printed with or without a terminal.
    stdout lists the files written, for scripts to read."""

    def __init__(self, *, quiet: bool) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeRemainingColumn(),
            transient=True,
            disable=quiet or not self.console.is_terminal,
            console=self.console,
        )
        self._quiet = quiet
        self._silenced = threading.Event()

    def __enter__(self) -> Board:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def follow(self, events: Iterator[Event], label: str) -> ResultEvent | None:
        task = self.progress.add_task(label, total=100)
        started = time.monotonic()
        try:
            for event in events:
                if event.type == "progress":
                    if event.notice:
                        self.say(f"{label}: {event.message}")
                    text = f"{label}: {event.message or event.stage}"
                    self.progress.update(task, completed=event.percent, description=text[:70])
                elif event.type == "result":
                    self.progress.update(task, completed=100, description=f"{label}: done")
                    self.progress.refresh()  # drawn now: the bar goes when the task does
                    if not self._quiet:
                        self.say(f"{label}: {summary(event, time.monotonic() - started)}")
                    return event
                elif event.type == "error":
                    hint = f" ({event.hint})" if event.hint else ""
                    self.fail(f"{label}: {event.message}{hint}")
                    return None
        finally:
            self.progress.remove_task(task)
        self.fail(f"{label}: the job ended without a result")
        return None

    @contextmanager
    def bar(self, label: str) -> Iterator[Callable[[float], None]]:
        """A progress bar for work the run does itself (a video): yields what takes its share
        done, 0-1."""
        task = self.progress.add_task(label[:70], total=1.0)
        try:
            yield lambda done: self.progress.update(task, completed=done)
        finally:
            self.progress.remove_task(task)

    def say(self, message: str) -> None:
        if self._silenced.is_set():
            return
        # Through the bar's console, so a line never tears a bar another job is drawing.
        self.console.print(f"subtide: {message}", markup=False, highlight=False, soft_wrap=True)

    def fail(self, message: str) -> int:
        self.say(message)
        return 1

    def silence(self) -> None:
        """No more lines: jobs that end because the run was cancelled have nothing to add."""
        self._silenced.set()


def run_jobs(
    jobs: list[JobSpec],
    factory: Callable[[], Backend],
    parallel: int,
    board: Board,
    finish: Callable[[JobSpec, ResultEvent], int],
) -> list[int]:
    """Runs the jobs, `parallel` at a time, on worker threads; hands each result to `finish`
    (which writes the files and returns the job's exit status) on the calling thread, so files
    are named and written one job at a time. Returns each job's status, 1 for one that failed.

    On Ctrl-C or SIGTERM the backends are told to cancel and the workers get GRACE_S to end,
    but are not waited for beyond that: one blocked in a socket read would hold on for the
    read's whole timeout. They are daemon threads, and the caller exits without joining them.
    """
    todo: queue.SimpleQueue[JobSpec] = queue.SimpleQueue()
    done: queue.SimpleQueue[tuple[JobSpec, ResultEvent | None]] = queue.SimpleQueue()
    for job in jobs:
        todo.put(job)
    backends: list[Backend] = []

    def work() -> None:
        while True:
            try:
                job = todo.get_nowait()
            except queue.Empty:
                return
            result = None
            try:
                backend = factory()
                backends.append(backend)
                result = board.follow(backend.run(job), job.source.label)
            finally:
                done.put((job, result))  # even after a bug: the caller waits for every job

    workers = [threading.Thread(target=work, daemon=True) for _ in range(min(parallel, len(jobs)))]
    for worker in workers:
        worker.start()
    statuses = []
    try:
        for _ in jobs:
            job, result = done.get()
            statuses.append(1 if result is None else finish(job, result))
    except KeyboardInterrupt:
        board.silence()
        _stop(backends, workers)
        raise
    # Done: the workers are only returning now, but one still alive when the interpreter shuts
    # down can take native threads (CTranslate2, onnxruntime) with it, which aborts the process
    # after its files are written (exit -6 instead of 0).
    for worker in workers:
        worker.join()
    return statuses


def _stop(backends: list[Backend], workers: list[threading.Thread]) -> None:
    # A remote backend's cancel is a request that may itself hang: each gets its own thread,
    # and the grace lets it reach the backend, so a remote GPU does not work on for nothing.
    cancels = [threading.Thread(target=backend.cancel, daemon=True) for backend in list(backends)]
    for cancel in cancels:
        cancel.start()
    deadline = time.monotonic() + GRACE_S
    for thread in [*cancels, *workers]:
        thread.join(max(0.0, deadline - time.monotonic()))
