"""The RunPod serverless queue worker: one JobSpec in, the engine's Events streamed out.

Run it as a script (`python runpod/handler.py`); RunPod's worker loop calls `handler` once per
job. Every Event goes to `/stream/{id}` as it comes and, aggregated, to `/status/{id}`; an `error`
Event also ends the job as FAILED with its message and hint.

Stopping: the SDK long-polls RunPod's stop channel (`job-stop`) and cancels the job's asyncio task
when a job is cancelled or times out. The handler is an async generator and the engine runs in a
thread, so the SDK's loop is free to hear that at once; the task's end stops the engine. A worker
told to shut down (SIGTERM) cancels its running job's task the same way, so the job is not
finished and RunPod gives it to another worker.

Besides the JobSpec, a job's input may hold `"require_cues": true`: the job then FAILS when no cue
comes back. RunPod's Hub tests (.runpod/tests.json) pass any job that completes, so its test
needs that to prove the worker transcribes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

# Run as a script, Python puts this folder, which is named `runpod`, first on sys.path, where it
# would shadow the RunPod SDK (`import runpod` would find this folder). Drop it, and add the repo
# root so `engine` and `app` import without an installed package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

# The SDK logs every chunk, subtitle text included, at its default level (DEBUG); it reads the
# level once, at import. RUNPOD_LOG_LEVEL or RUNPOD_DEBUG_LEVEL set by the owner still win.
os.environ.setdefault("RUNPOD_DEBUG_LEVEL", "INFO")

# The SDK; ruff would file it as first-party because of this folder's name.
import runpod  # noqa: E402

# isort: split
from pydantic import ValidationError  # noqa: E402

from app.config import Settings  # noqa: E402
from app.job_limits import JobLimits  # noqa: E402
from engine.chunks import Bounder  # noqa: E402
from engine.pipeline import Engine  # noqa: E402
from engine.protocol import (  # noqa: E402
    ErrorEvent,
    Event,
    JobSpec,
    ResultEvent,
    SubtideError,
    validation_problems,
)
from engine.stream import coalesce  # noqa: E402

log = logging.getLogger("subtide.runpod")

Chunk = dict[str, Any]
Handler = Callable[[dict[str, Any]], AsyncIterator[Chunk]]

REQUIRE_CUES = "require_cues"


def read_job(job_input: object, limits: JobLimits) -> tuple[JobSpec, bool]:
    """The job's input as a JobSpec within the worker's limits and whether it requires cues, or
    a `bad_input` SubtideError naming the bad field."""
    fields = dict(job_input) if isinstance(job_input, dict) else job_input
    require_cues = isinstance(fields, dict) and fields.pop(REQUIRE_CUES, False) is True
    try:
        spec = JobSpec.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(validation_problems(exc))
        raise SubtideError(
            "bad_input",
            f"Invalid job input: {problems}",
            "send {'input': {...}} with the fields of a Subtide JobSpec",
        ) from exc
    if spec.source.path:
        raise SubtideError(
            "bad_input",
            "Invalid job input: source.path: a worker cannot read your files",
            "send source.url or source.audio_b64 on serverless",
        )
    if spec.video_kinds:
        raise SubtideError(
            "bad_input",
            f"Invalid job input: formats: {', '.join(spec.video_kinds)} can't be made on RunPod "
            "serverless: a video does not fit in its job payloads",
            "ask for subtitle formats here and make the video where it is (subtide run or "
            "translate --video), or use a pod's HTTP API, which serves video files",
        )
    limits.check(spec)
    return spec, require_cues


class EngineRun:
    """One job on the engine, in a thread of its own: the SDK's event loop stays free while the
    engine works, so a stop signal is heard at once. Its Events are awaited on that loop."""

    def __init__(self, engine: Engine, spec: JobSpec, job_id: str) -> None:
        self._engine = engine
        self._job_id = job_id
        self._loop = asyncio.get_running_loop()
        self._events: asyncio.Queue[Event | None] = asyncio.Queue()  # None: the engine ended
        self._ended = False  # the end was taken from the queue
        self._lock = threading.Lock()
        # The engine gave its last Event. Its cancel flag is cleared when a job ends, so a cancel
        # from now on would outlive this job and stop the worker's next one.
        self._over = False
        self._stop_asked: float | None = None
        self._thread = threading.Thread(target=self._pump, args=(engine.run(spec),), daemon=True)
        self._thread.start()

    def _pump(self, events: Iterator[Event]) -> None:
        try:
            for event in events:
                if isinstance(event, ResultEvent | ErrorEvent):
                    with self._lock:
                        self._over = True
                self._send(event)
        finally:
            self._send(None)
            if self._stop_asked is not None:
                took = time.monotonic() - self._stop_asked
                log.info("job %s: engine stopped %.3f s after the stop", self._job_id, took)

    def _send(self, event: Event | None) -> None:
        # RuntimeError: the worker's loop has closed (the worker is exiting); nobody waits.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._events.put_nowait, event)

    async def batch(self) -> list[Event]:
        """The Events produced since the last call, as few as they allow (see `coalesce`): each
        chunk is a round trip to RunPod, and the engine goes on meanwhile. Empty at the end."""
        if self._ended:
            return []
        waiting = [await self._events.get()]
        while not self._events.empty():
            waiting.append(self._events.get_nowait())
        self._ended = waiting[-1] is None
        return list(coalesce([event for event in waiting if event is not None]))

    def stop(self, why: str) -> None:
        """Stops the engine at its next check; nothing to do once it gave its last Event."""
        with self._lock:
            if self._over or self._stop_asked is not None:
                return
            self._stop_asked = time.monotonic()
            self._engine.cancel()
        log.info("job %s: %s; stopping the engine", self._job_id, why)

    async def wait(self) -> None:
        await asyncio.to_thread(self._thread.join)


class Shutdown:
    """Cancels the running jobs' tasks when the worker is told to stop. The SDK's own handler
    lets a running job finish first (for as long as it takes), which RunPod does not wait for."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()
        self._installed = False

    def install(self) -> None:
        """Chains onto the SDK's signal handlers, which it sets as its loop starts; once."""
        if self._installed or threading.current_thread() is not threading.main_thread():
            return
        self._installed = True
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            sdk = signal.getsignal(signum)

            def on_signal(number: int, frame: Any, sdk: Any = sdk) -> None:
                for task in list(self.tasks):
                    loop.call_soon_threadsafe(task.cancel)
                if callable(sdk):
                    sdk(number, frame)

            signal.signal(signum, on_signal)


def chunks(events: Iterable[Event], bounder: Bounder) -> Iterator[Chunk]:
    """Every Event a job streams passes here: each chunk within RunPod's stream limit (it
    splits outputs over 1 MB), a long job's result slim after its streamed cues."""
    for event in events:
        for piece in bounder.feed(event):
            yield piece.model_dump(mode="json")


def failed(error: ErrorEvent) -> Chunk:
    """The chunk that makes the SDK end the job FAILED. Only its text reaches /status (and the
    SDK client's output()), not the error Event streamed before it: it carries the hint too."""
    return {"error": f"{error.message} ({error.hint})" if error.hint else error.message}


NO_CUES = ErrorEvent(
    code="internal",
    message="The job asked for cues (require_cues) and none came back",
    hint="the worker transcribed no speech: check its WHISPER_MODEL and its log",
)


def make_handler(engine: Engine, limits: JobLimits) -> Handler:
    runs: list[EngineRun] = []  # the job before, until the next one has seen it end
    shutdown = Shutdown()

    async def handler(job: dict[str, Any]) -> AsyncIterator[Chunk]:
        shutdown.install()
        try:
            spec, require_cues = read_job(job.get("input"), limits)
        except SubtideError as exc:
            for chunk in chunks([exc.to_event()], Bounder()):
                yield chunk
            yield failed(exc.to_event())
            return
        # The engine runs one job at a time: a stopped job before this one winds down first.
        while runs:
            before = runs.pop()
            before.stop("a new job came")
            await before.wait()
        run = EngineRun(engine, spec, job["id"])
        runs.append(run)
        # The SDK stops a job by cancelling its task, which may be anywhere: waiting for Events
        # here, or posting a chunk while this generator waits at a `yield` (it is then closed
        # only when collected, at times after the next job began). The task's end is prompt.
        task = asyncio.current_task()
        if task is not None:
            shutdown.tasks.add(task)
            task.add_done_callback(lambda done: _ended(done, run, shutdown))
        last: Event | None = None
        bounder = Bounder()
        while batch := await run.batch():
            last = batch[-1]
            for chunk in chunks(batch, bounder):
                yield chunk
        if isinstance(last, ErrorEvent):
            yield failed(last)
        elif require_cues and not (isinstance(last, ResultEvent) and last.cues):
            for chunk in chunks([NO_CUES], bounder):
                yield chunk
            yield failed(NO_CUES)

    return handler


def _ended(task: asyncio.Task[Any], run: EngineRun, shutdown: Shutdown) -> None:
    shutdown.tasks.discard(task)
    if task.cancelled():
        run.stop("RunPod stopped the job (cancelled, timed out, or the worker is stopping)")


def main() -> None:
    # Times to the millisecond: how long a stop takes is read from this log. `force`: the SDK
    # configured the root logger as it was imported (runpod/serverless/utils/rp_upload.py).
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        force=True,
    )
    settings = Settings()
    engine = Engine(settings.engine_options(serves_others=True))
    try:
        engine.warm()  # once per worker, before the first job
    except SubtideError as exc:
        # Jobs then report the problem themselves, with its hint.
        log.warning("warm-up: %s", exc.message)
    runpod.serverless.start(
        {
            "handler": make_handler(engine, JobLimits.from_settings(settings)),
            "return_aggregate_stream": True,
        }
    )


if __name__ == "__main__":
    main()
