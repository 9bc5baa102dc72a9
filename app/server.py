"""`subtide serve`: the HTTP API and the Gradio app on one port (FastAPI + uvicorn).

Jobs go through one bounded queue in front of the engines (one Engine per worker thread, one job
at a time each), so the GPU is never shared by two jobs and /ping and /health never wait for it.
Every job's Events are kept, so an SSE stream that drops resumes from `Last-Event-ID`.

The API's jobs are journaled (app.job_journal), so a server that restarts, however it died,
comes back with them under the same ids: ended ones can still be fetched and replayed; the
others run again, in the order they came, the interrupted ones first (the queue is first in,
first out), and the engine resumes a transcription from its own checkpoint. A revived job's
events go on from its last journaled id: first "The server restarted; resuming this job", then
what the rerun emits. Its percent never drops below what a client was told, and its cues come
with the same ids as before (the engine numbers them the same way for the same audio and
options), so a client that keeps cues by id, as the protocol asks, replaces them rather than
showing them twice; the result has them all. The earlier API's and the app's jobs are followed
only by their open connection, which a restart cuts, so they are not journaled.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.formparsers import MultiPartException, MultiPartParser

from app.body_guard import BodyGuard, BodyLimits, route_path, size_label
from app.job_journal import JobJournal, JournaledJob
from app.job_limits import JobLimits, JobTooLarge
from app.server_videos import JobVideos, add_file_routes
from engine import media
from engine.asr import decoding_setup
from engine.files import write_atomic
from engine.pipeline import Engine, engine_version
from engine.protocol import (
    Backend,
    Cue,
    CuesEvent,
    DiarizeMode,
    ErrorEvent,
    Event,
    Health,
    JobSpec,
    ProgressEvent,
    ResultEvent,
    Source,
    SubtideError,
    validation_problems,
)
from engine.url_guard import check_url

if TYPE_CHECKING:
    from app.config import Settings
    from engine.pipeline import EngineOptions

log = logging.getLogger(__name__)

JobStatus = Literal["queued", "running", "done", "failed", "cancelled"]
_ENDED: frozenset[str] = frozenset({"done", "failed", "cancelled"})
_JOB_ID = re.compile(r"[0-9a-f]{32}")
# How often an SSE stream looks for new events: well under a human's notice, cheap for the CPU.
_POLL_S = 0.05


@dataclass(frozen=True)
class ServerOptions:
    """The server's own settings, from Settings; tests build them directly."""

    port: int = 5001
    port_health: int | None = None
    max_upload_mb: float = 2000
    # A job's JSON (the body, or the `job` part of an upload) is a few short fields.
    max_json_kb: float = 1024
    upload_timeout_s: float = 30
    upload_min_kb_per_s: float = 10
    # Addresses whose X-Forwarded-For the server believes (uvicorn's list): none by default.
    forwarded_allow_ips: str = ""
    engine_concurrency: int = 1
    auth_token: str | None = field(default=None, repr=False)
    rate_limit_per_minute: int = 30
    heartbeat_s: float = 15
    keep_jobs: int = 100
    # RunPod's load balancer cuts a silent response after ~43 s: stream /api/process there.
    force_sse: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> ServerOptions:
        return cls(
            port=settings.port,
            port_health=settings.port_health,
            max_upload_mb=settings.max_upload_mb,
            max_json_kb=settings.max_json_kb,
            upload_timeout_s=settings.upload_timeout_seconds,
            upload_min_kb_per_s=settings.upload_min_kb_per_second,
            forwarded_allow_ips=settings.forwarded_allow_ips,
            engine_concurrency=settings.engine_concurrency,
            auth_token=settings.subtide_auth_token or None,
            rate_limit_per_minute=settings.rate_limit_per_minute,
            heartbeat_s=settings.sse_heartbeat_seconds,
            keep_jobs=settings.keep_jobs,
            force_sse=(settings.platform or "").lower() == "runpod",
        )

    def body_limits(self) -> BodyLimits:
        return BodyLimits(
            max_bytes=int(self.max_upload_mb * 1e6),
            timeout_s=self.upload_timeout_s,
            min_bytes_per_s=self.upload_min_kb_per_s * 1000,
        )

    def uvicorn_options(self) -> dict[str, Any]:
        """How uvicorn must run this app: proxy headers only from the configured addresses
        (uvicorn's own default trusts 127.0.0.1, from where a local proxy or tunnel connects)."""
        return {"proxy_headers": True, "forwarded_allow_ips": self.forwarded_allow_ips}


# --- errors ------------------------------------------------------------------------------------


# The earlier Subtide API's routes. Its browser extension shows a refusal's `error` as text
# (`new Error(errorData.error)`), so on these paths, and under them, it is a string.
_EARLIER_ROUTES = ("/api/process", "/api/stream")


def error_body(path: str, code: str, message: str, hint: str | None = None) -> dict[str, Any]:
    """The JSON body of every error response, wherever it is made (a route, a guard, the body
    limit, the last-resort handler): the one place its shape follows the path. Our own API:
    `{"error": {code, message, hint?}}`; the earlier API: `{"error": "<message — hint>"}`
    with the same fields beside it."""
    if _is_earlier(path):
        return earlier_error(code, message, hint)
    return {"error": _error_detail(code, message, hint)}


def earlier_error(code: str, message: str, hint: str | None = None) -> dict[str, Any]:
    """The earlier API's error object: `error` a string, the fields beside it."""
    return {"error": error_text(message, hint), **_error_detail(code, message, hint)}


def _error_detail(code: str, message: str, hint: str | None) -> dict[str, str]:
    return {"code": code, "message": message, **({"hint": hint} if hint else {})}


def error_text(message: str, hint: str | None) -> str:
    """A refusal as one line a person can act on: what went wrong, then what to do."""
    return f"{message} — {hint}" if hint else message


def _is_earlier(path: str) -> bool:
    return any(path == route or path.startswith(route + "/") for route in _EARLIER_ROUTES)


class ApiError(Exception):
    """A request the server refuses: a JSON body shaped by `error_body` for its path."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        hint: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.hint = status, code, message, hint
        self.headers = headers

    def response(self, path: str) -> JSONResponse:
        body = error_body(path, self.code, self.message, self.hint)
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def _bad_request(exc: SubtideError) -> ApiError:
    if isinstance(exc, JobTooLarge):
        return ApiError(413, "too_large", exc.message, exc.hint)
    return ApiError(400, exc.code, exc.message, exc.hint)


def _validation_message(exc: ValidationError | RequestValidationError) -> str:
    """The first problem, by field, and how many more there are."""
    problems = validation_problems(exc) or ["invalid request"]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return problems[0] + more


def _parse_spec(data: bytes | dict[str, Any]) -> JobSpec:
    try:
        if isinstance(data, dict):
            return JobSpec.model_validate(data)
        return JobSpec.model_validate_json(data)
    except ValidationError as exc:
        if any(error["type"] == "json_invalid" for error in exc.errors()):
            raise ApiError(400, "bad_input", "The request body is not valid JSON.") from None
        raise ApiError(422, "bad_input", _validation_message(exc)) from None


# --- jobs and the queue ------------------------------------------------------------------------


@dataclass(eq=False)
class Job:
    spec: JobSpec
    upload: Path | None = None  # a file the server owns and deletes when the job ends
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    status: JobStatus = "queued"
    events: list[Event] = field(default_factory=list)
    durable: bool = False  # journaled: it outlives a restart of the server
    # The highest percent told: a rerun after a restart starts again from 0.
    percent: float = 0
    # Set by a cancel or the server's stop: what the job does after its engine (a video)
    # stops too. `engine_over`: the engine gave its last event, so a cancel must not reach it
    # (its flag would stop the engine's next job).
    stopping: threading.Event = field(default_factory=threading.Event)
    engine_over: bool = False

    @property
    def ended(self) -> bool:
        return self.status in _ENDED

    @property
    def result(self) -> ResultEvent | None:
        last = self.events[-1] if self.events else None
        return last if isinstance(last, ResultEvent) else None


def _status_after(event: Event) -> JobStatus | None:
    if isinstance(event, ResultEvent):
        return "done"
    if isinstance(event, ErrorEvent):
        return "cancelled" if event.code == "cancelled" else "failed"
    return None


_RESTARTED = "The server restarted; resuming this job"


class JobQueue:
    """Jobs wait here for a free engine; every Event of every job is kept for replay, and a
    durable job's also in the journal (when this server holds it), before anyone sees it.

    One lock guards everything and is only held for bookkeeping, never while an engine works.
    """

    def __init__(
        self,
        results_dir: Path,
        keep: int,
        journal: JobJournal | None,
        uploads: Path,
        videos: JobVideos,
    ) -> None:
        self._cond = threading.Condition()
        self._jobs: dict[str, Job] = {}
        self._waiting: deque[Job] = deque()
        self._running: dict[str, Backend] = {}
        self._ended: deque[str] = deque()
        self._results_dir, self._keep = results_dir, keep
        self._journal = journal
        self._stopping = False
        self._failure: ErrorEvent | None = None
        self._videos = videos
        _prune(results_dir, keep)
        videos.prune(lambda job_id: (results_dir / f"{job_id}.json").is_file())
        if journal:
            self._restore(journal.jobs(), uploads)

    def _restore(self, journaled: list[JournaledJob], uploads: Path) -> None:
        """Takes up the jobs an earlier run of the server left (in the order they came), then
        removes the uploads no waiting job needs: their job ended, or was never journaled."""
        revived = [(_revived(entry), entry) for entry in journaled]
        with self._cond:
            # The newest `keep` ended jobs stay: retired in the order they ended.
            for job, _ in sorted(revived, key=lambda pair: pair[1].written):
                if job.ended:
                    self._jobs[job.id] = job
                    self._retire(job)
            for job, entry in revived:
                if not job.ended:
                    self._jobs[job.id] = job
                    self._resume(job, entry.cancelled)
            self._tell_positions()
        needed = {job.upload.resolve() for job in self._waiting if job.upload}
        for upload in uploads.glob("*") if uploads.is_dir() else []:
            if upload.resolve() not in needed:
                upload.unlink(missing_ok=True)

    def _resume(self, job: Job, cancelled: bool) -> None:
        if cancelled:
            self._publish(job, _cancelled())
        elif job.upload and not job.upload.is_file():
            gone = ErrorEvent(
                code="source_unavailable",
                message="The uploaded file of this job was lost when the server restarted.",
                hint="Submit the job again with its file.",
            )
            self._publish(job, gone)
        else:
            self._publish(job, ProgressEvent(stage="queued", percent=0, message=_RESTARTED))
            self._waiting.append(job)
            return
        self._retire(job)

    def start(self, engines: list[Backend]) -> None:
        for number, engine in enumerate(engines):
            name = f"subtide-worker-{number}"
            threading.Thread(target=self._work, args=(engine,), name=name, daemon=True).start()

    def stop(self) -> None:
        """The server is stopping: engines stop too, and a durable job is left as it is in
        the journal (see `_interrupted`), to run again when the server starts."""
        with self._cond:
            self._stopping = True
            for job_id, engine in self._running.items():
                self._jobs[job_id].stopping.set()
                engine.cancel()
            if self._journal:
                self._journal.close()
            self._cond.notify_all()

    def fail(self, event: ErrorEvent) -> None:
        """No engine will come: waiting jobs, and every later one, end with `event`."""
        with self._cond:
            self._failure = event
            ended = list(self._waiting)
            self._waiting.clear()
            for job in ended:
                self._publish(job, event)
        for job in ended:
            self._retire(job)

    def submit(self, spec: JobSpec, upload: Path | None = None, durable: bool = False) -> Job:
        """Queues a job; a `durable` one is journaled, when this server holds the journal."""
        job = Job(spec, upload, durable=durable and self._journal is not None)
        with self._cond:
            # Under the lock: the journal's order is the queue's.
            self._journal_write(job, lambda journal: journal.add(job.id, spec, upload))
            self._jobs[job.id] = job
            if self._failure is None:
                self._waiting.append(job)
                self._tell_positions()
            else:
                self._publish(job, self._failure)
        if job.ended:
            self._retire(job)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._cond:
            return self._jobs.get(job_id)

    def load(self, job_id: str) -> dict[str, Any] | None:
        """An ended job's record from disk: it outlives a restart of the server."""
        try:
            return json.loads((self._results_dir / f"{job_id}.json").read_text("utf-8"))
        except (OSError, ValueError):
            return None

    def position(self, job: Job) -> int | None:
        with self._cond:
            return self._waiting.index(job) + 1 if job in self._waiting else None

    def counts(self) -> dict[str, int]:
        with self._cond:
            return {"waiting": len(self._waiting), "running": len(self._running)}

    def events_from(self, job: Job, start: int) -> list[Event]:
        with self._cond:
            return job.events[start:]

    def follow(self, job: Job) -> Iterator[Event]:
        """The job's events as they come (blocking), ending after its result or error."""
        sent = 0
        while True:
            with self._cond:
                while len(job.events) <= sent:
                    self._cond.wait()
                batch = job.events[sent:]
            sent += len(batch)
            yield from batch
            if _status_after(batch[-1]):
                return

    def cancel(self, job_id: str) -> Job | None:
        with self._cond:
            job = self._jobs.get(job_id)
            if job is None or job.ended:
                return job
            self._journal_write(job, lambda journal: journal.cancel(job.id))
            was_waiting = job.status == "queued"
            if was_waiting:
                self._waiting.remove(job)
                self._publish(job, _cancelled())
                self._tell_positions()
            else:
                # The engine ends the job with a `cancelled` error at its next step, and its
                # worker retires it.
                job.stopping.set()
                if not job.engine_over:
                    self._running[job.id].cancel()
        if was_waiting:
            self._retire(job)
        return job

    def _work(self, engine: Backend) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                job = self._waiting.popleft()
                job.status = "running"
                self._running[job.id] = engine
                self._tell_positions()
            self._run(engine, job)
            if job.ended:
                self._retire(job)

    def _run(self, engine: Backend, job: Job) -> None:
        events = self._videos.run(
            self._engine_events(engine, job), job.spec, job.id, job.stopping.is_set
        )
        try:
            for event in events:
                with self._cond:
                    if self._interrupted(job):
                        break
                    # The job's status changes with its last event, inside the lock: a cancel
                    # after it never reaches the engine (it would stop the next job instead).
                    self._publish(job, event)
        except Exception:
            log.exception("the engine failed on job %s", job.id)
        with self._cond:
            self._running.pop(job.id, None)
            if not job.ended and not self._interrupted(job):
                self._publish(
                    job,
                    ErrorEvent(code="internal", message="The job stopped unexpectedly."),
                )

    def _engine_events(self, engine: Backend, job: Job) -> Iterator[Event]:
        for event in engine.run(job.spec):
            if _status_after(event):
                with self._cond:
                    job.engine_over = True
            yield event

    def _interrupted(self, job: Job) -> bool:
        """Called with the lock held. While the server stops, a durable job's engine is
        cancelled, but the job did not end: it runs again when the server starts."""
        return self._stopping and job.durable

    def _publish(self, job: Job, event: Event) -> None:
        """Called with the lock held. A durable job's event is journaled before anyone can
        see it, so no id a client was given goes to another event after a restart."""
        if isinstance(event, ProgressEvent):
            if event.percent < job.percent:
                event = event.model_copy(update={"percent": job.percent})
            job.percent = event.percent
        self._journal_write(job, lambda journal: journal.append(job.id, event))
        job.events.append(event)
        status = _status_after(event)
        if status:
            job.status = status
            self._running.pop(job.id, None)
        self._cond.notify_all()

    def _journal_write(self, job: Job, write: Callable[[JobJournal], None]) -> None:
        """Called with the lock held. A job the journal can't keep (a full disk) goes on in
        memory only, as every job did before there was a journal: a restart loses it."""
        if not (self._journal and job.durable):
            return
        try:
            write(self._journal)
        except OSError:
            log.exception("can't journal job %s; it won't outlive a restart", job.id)
            job.durable = False
            self._journal.remove(job.id)

    def _tell_positions(self) -> None:
        """Called with the lock held: every waiting job hears where it now stands."""
        for number, job in enumerate(self._waiting, start=1):
            message = f"Waiting: position {number} in the queue"
            last = job.events[-1] if job.events else None
            if not (isinstance(last, ProgressEvent) and last.message == message):
                self._publish(job, ProgressEvent(stage="queued", percent=0, message=message))

    def _retire(self, job: Job) -> None:
        """Writes the ended job's record; the newest `keep` stay, in memory and on disk."""
        if job.upload:
            job.upload.unlink(missing_ok=True)
        record = {"id": job.id, "status": job.status, "result": None, "error": None}
        last = job.events[-1]
        record["result" if isinstance(last, ResultEvent) else "error"] = last.model_dump(
            mode="json"
        )
        write_atomic(self._results_dir / f"{job.id}.json", json.dumps(record), private=True)
        with self._cond:
            self._ended.append(job.id)
            while len(self._ended) > self._keep:
                gone = self._ended.popleft()
                self._jobs.pop(gone, None)
                self._videos.forget(gone)
                (self._results_dir / f"{gone}.json").unlink(missing_ok=True)
                if self._journal:
                    self._journal.remove(gone)


def _revived(entry: JournaledJob) -> Job:
    """A journaled job as it was when the server stopped: ended, or queued again."""
    job = Job(entry.spec, entry.upload, id=entry.id, events=entry.events, durable=True)
    job.status = (_status_after(entry.events[-1]) if entry.events else None) or "queued"
    job.percent = max((e.percent for e in entry.events if isinstance(e, ProgressEvent)), default=0)
    return job


def _cancelled() -> ErrorEvent:
    return ErrorEvent(code="cancelled", message="The job was cancelled.")


def _prune(folder: Path, keep: int) -> None:
    """Records left by earlier runs: the newest `keep` stay."""
    folder.mkdir(parents=True, exist_ok=True)
    records = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in records[keep:]:
        old.unlink(missing_ok=True)


# --- readiness ---------------------------------------------------------------------------------


@dataclass
class Readiness:
    state: Literal["loading", "ready", "failed"] = "loading"
    gpu: str | None = None


def _load(readiness: Readiness, factory: Callable[[], Engine], count: int, jobs: JobQueue) -> None:
    """Builds the engines and loads their models before /ping says ready."""
    try:
        engines = [factory() for _ in range(count)]
        for engine in engines:
            engine.warm()
        readiness.gpu = _gpu_name()
        jobs.start(engines)
        readiness.state = "ready"
        log.info("models loaded; serving with %d engine(s)", count)
    except Exception:
        log.exception("loading the models failed")
        readiness.state = "failed"
        jobs.fail(
            ErrorEvent(
                code="model_unavailable",
                message="The server could not load its speech model.",
                hint="The operator should check the server log.",
            )
        )


def _gpu_name() -> str | None:
    """The GPU's name when CTranslate2 (Whisper's runtime) sees CUDA; torch stays unloaded."""
    try:
        import ctranslate2

        if ctranslate2.get_cuda_device_count() == 0:
            return None
    except ImportError:
        return None
    try:
        found = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "CUDA"
    names = found.stdout.strip().splitlines()
    return names[0].strip() if names else "CUDA"


# --- request guards ----------------------------------------------------------------------------


class RateLimit:
    """At most `per_minute` job submissions per client address in any 60 s."""

    def __init__(self, per_minute: int) -> None:
        self._per_minute = per_minute
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def __call__(self, request: Request) -> None:
        if self._per_minute <= 0:
            return
        client = request.client.host if request.client else "unknown"
        now = time.monotonic()
        with self._lock:
            hits = self._hits.setdefault(client, deque())
            while hits and now - hits[0] >= 60:
                hits.popleft()
            if len(hits) >= self._per_minute:
                wait = max(1, int(60 - (now - hits[0])) + 1)
                raise ApiError(
                    429,
                    "rate_limited",
                    f"Too many jobs: at most {self._per_minute} a minute.",
                    f"Try again in {wait} s.",
                    headers={"Retry-After": str(wait)},
                )
            hits.append(now)


def _bearer(token: str | None) -> Callable[[Request], None]:
    def check(request: Request) -> None:
        if token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            raise ApiError(
                401,
                "auth",
                "Missing or wrong access token.",
                hint="Send the server's SUBTIDE_AUTH_TOKEN as 'Authorization: Bearer <token>'.",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check


async def _body(request: Request, limit: int) -> bytes:
    """A JSON body, refused with 413 as soon as it passes `limit` bytes (media come as
    uploads, whose own limit every route shares: see app.body_guard)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks, seen = [], 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        "too_large",
        f"The request body is larger than this server's limit of {size_label(limit)} for JSON.",
        hint="A job's JSON needs a few KB: send media as an upload (multipart/form-data with "
        "a 'file' part), not inside the JSON.",
    )


# --- the app -----------------------------------------------------------------------------------


def create_app(
    settings: Settings,
    *,
    engine_factory: Callable[[], Engine] | None = None,
    mount_ui: bool = True,
    server_options: ServerOptions | None = None,
) -> FastAPI:
    """The API (and the Gradio app unless `mount_ui` is False). Engines come from
    `engine_factory` (default: an Engine on the settings, private URLs refused unless allowed),
    one per worker, built with the models loaded in the background after start-up."""
    options = server_options or ServerOptions.from_settings(settings)
    engine_options = settings.engine_options(serves_others=True)
    factory = engine_factory or _engine_factory(engine_options)
    cache_dir = engine_options.cache_dir
    journal = JobJournal.open(cache_dir / "server-jobs")
    videos = JobVideos(cache_dir / "job-files", allow_private=engine_options.allow_private_urls)
    jobs = JobQueue(cache_dir / "jobs", options.keep_jobs, journal, cache_dir / "uploads", videos)
    readiness = Readiness()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loader = threading.Thread(
            target=_load,
            args=(readiness, factory, options.engine_concurrency, jobs),
            name="subtide-loader",
            daemon=True,
        )
        loader.start()
        yield
        jobs.stop()

    app = FastAPI(
        title="Subtide", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.readiness = readiness  # serve() shares it with the /ping-only listener
    app.add_middleware(BodyGuard, limits=options.body_limits(), error_body=error_body)
    _add_error_handlers(app)
    _add_health_routes(app, settings, readiness, jobs)
    guards = [Depends(_bearer(options.auth_token))]
    limited = [*guards, Depends(RateLimit(options.rate_limit_per_minute))]
    admission = Admission(JobLimits.from_settings(settings), engine_options.allow_private_urls)
    _add_job_routes(app, jobs, admission, options, cache_dir / "uploads", guards, limited)
    add_file_routes(app, videos, guards, _not_found)
    _add_legacy_routes(app, jobs, settings, admission, options, limited)
    if mount_ui:
        _mount_ui(app, settings, jobs, readiness, options)
    return app


def _engine_factory(options: EngineOptions) -> Callable[[], Engine]:
    def build() -> Backend:
        from engine.pipeline import Engine

        return Engine(options)

    return build


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response(route_path(request.scope))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        refusal = ApiError(422, "bad_input", _validation_message(exc))
        return refusal.response(route_path(request.scope))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, _: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        failure = ApiError(
            500,
            "internal",
            "The server hit an unexpected error.",
            "Try again; if it happens again, the operator should check the server log.",
        )
        return failure.response(route_path(request.scope))


def _add_health_routes(
    app: FastAPI, settings: Settings, readiness: Readiness, jobs: JobQueue
) -> None:
    app.add_api_route("/ping", _ping_handler(readiness), methods=["GET"])
    decoding = decoding_setup(
        settings.whisper_device,
        settings.whisper_compute_type,
        settings.whisper_cpu_threads,
        settings.whisper_batch_size,
        settings.whisper_model,
    )

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok" if readiness.state == "ready" else readiness.state,
            "service": "subtide",
            "version": engine_version(),
            "features": {
                "model": settings.whisper_model,
                "diarization": settings.enable_diarization,
                "translation": bool(settings.server_api_key or settings.server_api_url),
                "decoding": decoding.describe(),
            },
            "queue": jobs.counts(),
            "gpu": readiness.gpu,
        }


def _ping_handler(readiness: Readiness) -> Callable[[], Awaitable[Response]]:
    """RunPod's load balancer contract: 204 while loading, 200 when ready."""

    # Async, so the answer comes from the event loop without waiting for a worker thread.
    async def ping() -> Response:
        if readiness.state == "ready":
            return JSONResponse({"status": "ok"})
        if readiness.state == "failed":
            # Unhealthy, so the balancer sends no work to a worker that can't do it.
            return JSONResponse({"status": "failed"}, status_code=503)
        return Response(status_code=204)

    return ping


def _add_job_routes(
    app: FastAPI,
    jobs: JobQueue,
    admission: Admission,
    options: ServerOptions,
    uploads: Path,
    guards: list[Any],
    limited: list[Any],
) -> None:
    json_limit = int(options.max_json_kb * 1000)

    @app.post("/api/jobs", status_code=202, dependencies=limited)
    async def create(request: Request) -> dict[str, str]:
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            spec, upload = await _spec_from_upload(request, json_limit, uploads, admission)
        else:
            spec, upload = _parse_spec(await _body(request, json_limit)), None
            await admission.check(spec)
        return {"id": jobs.submit(spec, upload, durable=True).id}

    @app.get("/api/jobs/{job_id}", dependencies=guards)
    def status(job_id: str) -> dict[str, Any]:
        job = _find(jobs, job_id)
        if job is None:
            record = jobs.load(job_id) if _JOB_ID.fullmatch(job_id) else None
            if record is None:
                raise _not_found()
            return {**record, "position": None}
        error = job.events[-1] if job.status in ("failed", "cancelled") else None
        return {
            "id": job.id,
            "status": job.status,
            "position": jobs.position(job),
            "result": job.result.model_dump(mode="json") if job.result else None,
            "error": error.model_dump(mode="json") if error else None,
        }

    @app.delete("/api/jobs/{job_id}", dependencies=guards)
    def cancel(job_id: str) -> dict[str, str]:
        job = jobs.cancel(job_id) if _JOB_ID.fullmatch(job_id) else None
        if job is None:
            raise _not_found()
        return {"id": job.id, "status": job.status}

    @app.get("/api/jobs/{job_id}/events", dependencies=guards)
    def events(job_id: str, request: Request) -> StreamingResponse:
        job = _find(jobs, job_id)
        if job is None:
            raise _not_found()
        last = request.headers.get("last-event-id", "")
        start = int(last) + 1 if last.isdigit() else 0
        return StreamingResponse(
            _sse(jobs, job, start, options.heartbeat_s),
            media_type="text/event-stream",
            headers=_SSE_HEADERS,
        )


_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _find(jobs: JobQueue, job_id: str) -> Job | None:
    return jobs.get(job_id) if _JOB_ID.fullmatch(job_id) else None


def _not_found() -> ApiError:
    return ApiError(404, "not_found", "No such job (finished jobs are kept for a while only).")


@dataclass(frozen=True)
class Admission:
    """What a job from a client must pass before it is queued: the server's limits on what
    one job may cost, and a source it may fetch."""

    limits: JobLimits
    allow_private: bool

    async def check(self, spec: JobSpec, uploaded: bool = False) -> None:
        """An ApiError (400, or 413 for sizes) for a job the server refuses."""
        try:
            self.limits.check(spec)
        except SubtideError as exc:
            raise _bad_request(exc) from None
        if not uploaded:
            await asyncio.to_thread(_check_remote_source, spec.source, self.allow_private)


def _check_remote_source(source: Source, allow_private: bool) -> None:
    if source.path:
        raise ApiError(
            400,
            "bad_input",
            "A server path can't be used as a source over HTTP.",
            hint="Upload the file (multipart/form-data with a 'file' part) instead.",
        )
    if source.url:
        try:
            check_url(source.url, allow_private=allow_private)
        except SubtideError as exc:
            raise _bad_request(exc) from None


async def _spec_from_upload(
    request: Request, json_limit: int, folder: Path, admission: Admission
) -> tuple[JobSpec, Path]:
    """A `file` part (the media) and an optional `job` part (a JobSpec without its source).
    The upload's size is bounded for every route by app.body_guard; the job part by `json_limit`."""
    parser = MultiPartParser(
        request.headers, request.stream(), max_files=1, max_fields=1, max_part_size=json_limit
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        # Starlette tells only by its message that a text part (the job) passed max_part_size.
        if "maximum size" in exc.message:
            raise _too_large(json_limit) from None
        raise ApiError(400, "bad_input", f"Bad multipart upload: {exc.message}") from None
    try:
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ApiError(400, "bad_input", "The upload has no 'file' part.")
        data = _job_part(form.get("job"))
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / uuid.uuid4().hex
        title = Path(upload.filename or "upload").stem
        data["source"] = {"path": str(path), "title": title}
        spec = _parse_spec(data)
        await admission.check(spec, uploaded=True)
        await asyncio.to_thread(_save_media, upload.file, path)
        return spec, path
    finally:
        await form.close()


def _job_part(part: Any) -> dict[str, Any]:
    if part is None:
        return {}
    if not isinstance(part, str):
        raise ApiError(400, "bad_input", "The 'job' part must be JSON text, not a file.")
    try:
        data = json.loads(part)
    except ValueError:
        raise ApiError(400, "bad_input", "The 'job' part is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_input", "The 'job' part must be a JSON object.")
    if "source" in data:
        raise ApiError(422, "bad_input", "source: an upload is the job's source; leave it out.")
    return data


def _save_media(upload: Any, path: Path) -> None:
    """Stores the upload, then keeps it only if ffprobe finds audio in it."""
    with path.open("wb") as out:
        shutil.copyfileobj(upload, out)
    try:
        media.probe(path)
    except SubtideError as exc:
        path.unlink(missing_ok=True)
        raise ApiError(
            400, "bad_input", "The upload is not a media file with audio.", exc.message
        ) from None


async def _follow(
    jobs: JobQueue, job: Job, heartbeat_s: float, start: int = 0
) -> AsyncIterator[tuple[int, Event] | None]:
    """(index, event) from `start` through the job's last Event; None after `heartbeat_s` of
    quiet. Polls: a thread-safe wake-up per stream would cost more than it saves here."""
    sent, quiet_since = start, time.monotonic()
    while True:
        batch = jobs.events_from(job, sent)
        for event in batch:
            yield sent, event
            sent += 1
        if batch:
            quiet_since = time.monotonic()
        if job.ended and not jobs.events_from(job, sent):
            return
        if time.monotonic() - quiet_since >= heartbeat_s:
            yield None
            quiet_since = time.monotonic()
        await asyncio.sleep(_POLL_S)


async def _sse(jobs: JobQueue, job: Job, start: int, heartbeat_s: float) -> AsyncIterator[str]:
    """One SSE event per Event, its index as the id; ends after the last."""
    async for item in _follow(jobs, job, heartbeat_s, start):
        if item is None:
            # Proxies cut connections idle for ~100 s; a comment keeps this one alive.
            yield ": ping\n\n"
            continue
        index, event = item
        yield f"id: {index}\nevent: {event.type}\ndata: {event.model_dump_json()}\n\n"


# --- the earlier API ---------------------------------------------------------------------------

_LEGACY_STAGES = {
    "queued": "waiting",
    "download": "downloading",
    "decode": "whisper",
    "transcribe": "whisper",
    "diarize": "diarization",
    "translate": "translating",
    "finalize": "complete",
}
# The Engine reports these stages only once the whole text is known (transcribed, or the
# captions read): translation that overlaps transcription is reported under `transcribe`.
_TEXT_WHOLE: frozenset[str] = frozenset({"translate", "finalize"})
# The earlier requests are a few short fields.
_LEGACY_BODY_LIMIT = 64 * 1024
_LEGACY_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_LANG = re.compile(r"[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})?")
_LEGACY_EXAMPLE = (
    'Send JSON such as {"video_id": "dQw4w9WgXcQ", "target_lang": "es"}, with the page\'s '
    "address in video_url for a site other than YouTube."
)
_LEGACY_ROUTES_HINT = "The earlier API takes POST on /api/process and /api/stream."
_NOT_POST = ["GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"]
_STATUS_OF_CODE = {
    "bad_input": 400,
    "unsupported_source": 400,
    "auth": 401,
    "cancelled": 409,
    "source_unavailable": 502,
    "model_unavailable": 503,
    "translation_failed": 503,
}


# The earlier API's names for where the text came from.
_LEGACY_SOURCES = {
    "captions-manual": "youtube_manual",
    "captions-auto": "youtube_auto",
    "asr": "whisper",
}


class LegacyRequest(BaseModel):
    # The extension sends more than the server reads; extra keys are not errors here.
    model_config = ConfigDict(extra="ignore")

    video_id: str | None = None
    video_url: str | None = None
    stream_url: str | None = None
    target_lang: str = "en"
    # Transcribe even when the video has captions (the engine's `force_asr`).
    force_whisper: bool = False


def _legacy_url(body: LegacyRequest) -> str:
    if body.stream_url or body.video_url:
        return str(body.stream_url or body.video_url)
    if not body.video_id:
        raise ApiError(400, "bad_input", "video_id is required", _LEGACY_EXAMPLE)
    if not _LEGACY_ID.fullmatch(body.video_id):
        raise ApiError(
            400,
            "bad_input",
            "Invalid video_id format",
            "A video_id is 1 to 64 letters, digits, '-' or '_'.",
        )
    return f"https://www.youtube.com/watch?v={body.video_id}"


def _legacy_diarize(settings: Settings, process: bool) -> DiarizeMode:
    """The earlier backend labelled speakers on /api/process's whole runs when the server had
    diarization on (its extension can't ask). /api/stream never did: labels would hold its
    stream back until the whole audio is diarized."""
    return "auto" if process and settings.enable_diarization else "off"


class _BatchCount:
    """Numbers /api/stream's subtitle batches. The extension shows "current/total" and
    current/total as its percent, so the total is never below the batch being sent: counted
    from the cues left to send once every cue is known, estimated from the job's percent
    before, and the batch sent with the result is the last."""

    def __init__(self) -> None:
        self.current = 0
        self._known: set[int] = set()
        self._sent = 0
        self._whole = False

    def see(self, event: Event) -> None:
        if isinstance(event, CuesEvent):
            self._known.update(cue.id for cue in event.cues)
        elif isinstance(event, ProgressEvent) and event.stage in _TEXT_WHOLE:
            self._whole = True

    def next(self, size: int, percent: int, last: bool) -> dict[str, int]:
        """The batchInfo of the next batch, of `size` cues, sent at the job's `percent`."""
        self.current += 1
        self._sent += size
        return {"current": self.current, "total": self._total(percent, last)}

    def _total(self, percent: int, last: bool) -> int:
        if last:
            return self.current
        if self._whole:
            left = max(0, len(self._known) - self._sent)
            # Batches as large as they have been so far.
            return self.current + math.ceil(left * self.current / self._sent)
        # Still transcribing: more cues will come, and only the job's percent says how many.
        return max(self.current + 1, math.ceil(self.current * 100 / max(percent, 1)))


class LegacyStream:
    """Events → the earlier API's SSE objects (progress, subtitle batches, result, error)."""

    def __init__(self, target: str, batches: bool, nested_errors: bool) -> None:
        self._target, self._batches, self._nested = target, batches, nested_errors
        self._percent = 0
        self._count = _BatchCount()
        self._sent: set[int] = set()

    def convert(self, event: Event) -> list[dict[str, Any]]:
        self._count.see(event)
        if isinstance(event, ProgressEvent):
            return [self._progress(event)]
        if isinstance(event, CuesEvent):
            return self._subtitles([c for c in event.cues if self._settled(c)])
        if isinstance(event, ResultEvent):
            rest = self._subtitles(event.cues, last=True)
            translated = any(self._target in c.translations for c in event.cues)
            source = _LEGACY_SOURCES[event.source]
            result = {"subtitles": [self._item(c) for c in event.cues], "source": source}
            return [*rest, {"result": {**result, "translated": translated}}]
        return [self._error(event)]

    def _error(self, event: ErrorEvent) -> dict[str, Any]:
        """An error inside the stream, in each route's earlier shape: /api/stream's `error`
        is a string; /api/process's is {message, type, hint?}."""
        if not self._nested:
            return earlier_error(event.code, event.message, event.hint)
        detail = {"message": event.message, "type": event.code}
        return {"error": {**detail, "hint": event.hint} if event.hint else detail}

    def _progress(self, event: ProgressEvent) -> dict[str, Any]:
        self._percent = max(self._percent, int(event.percent))
        out: dict[str, Any] = {
            "stage": _LEGACY_STAGES[event.stage],
            "message": event.message,
            "percent": self._percent,
        }
        if event.eta_s is not None:
            out["eta"] = _eta(event.eta_s)
        return out

    def _settled(self, cue: Cue) -> bool:
        """Streamed once, with its translation: the extension appends what it gets."""
        return self._target in cue.translations or self._target in cue.untranslated

    def _subtitles(self, cues: list[Cue], last: bool = False) -> list[dict[str, Any]]:
        fresh = [c for c in cues if c.id not in self._sent]
        if not self._batches or not fresh:
            return []
        self._sent.update(c.id for c in fresh)
        info = self._count.next(len(fresh), self._percent, last)
        return [
            {
                "stage": "subtitles",
                "message": f"Batch {info['current']}/{info['total']} ready",
                "batchInfo": info,
                "subtitles": [self._item(c) for c in fresh],
            }
        ]

    def _item(self, cue: Cue) -> dict[str, Any]:
        item: dict[str, Any] = {
            "start": round(cue.start * 1000),
            "end": round(cue.end * 1000),
            "text": cue.text,
            "translatedText": cue.translations.get(self._target, cue.text),
        }
        # Only when there is one: the page shows any speaker that is not `undefined`.
        if cue.speaker:
            item["speaker"] = cue.speaker
        return item


def _eta(seconds: float) -> str:
    total = round(seconds)
    if total <= 0:
        return ""
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def _add_legacy_routes(
    app: FastAPI,
    jobs: JobQueue,
    settings: Settings,
    admission: Admission,
    options: ServerOptions,
    limited: list[Any],
) -> None:
    translation = bool(settings.server_api_key or settings.server_api_url)

    async def start(request: Request, process: bool) -> tuple[Job, LegacyStream]:
        """The request's job, queued. A refusal is an ApiError: error_body gives it the
        earlier shape on these paths, as it does the guards' and the body limit's."""
        body = _legacy_body(await _body(request, _LEGACY_BODY_LIMIT))
        url = _legacy_url(body)
        if not translation:
            raise ApiError(
                503,
                "unavailable",
                "Translation is not configured on this server",
                "The operator should set SERVER_API_KEY (and SERVER_API_URL for an LLM "
                "server other than OpenAI).",
            )
        spec = JobSpec(
            source=Source(url=url),
            target_langs=[body.target_lang],
            formats=["json"],
            force_asr=body.force_whisper,
            diarize=_legacy_diarize(settings, process),
        )
        await admission.check(spec)
        return jobs.submit(spec), LegacyStream(body.target_lang, not process, process)

    @app.post("/api/process", dependencies=limited, response_model=None)
    async def process(request: Request) -> Response:
        job, stream = await start(request, process=True)
        wants_sse = "text/event-stream" in request.headers.get("accept", "")
        if wants_sse or options.force_sse:
            return _legacy_response(jobs, job, stream, options.heartbeat_s)
        return await _legacy_json(jobs, job, stream)

    @app.post("/api/stream", dependencies=limited, response_model=None)
    async def stream(request: Request) -> Response:
        job, converter = await start(request, process=False)
        return _legacy_response(jobs, job, converter, options.heartbeat_s)

    _add_legacy_fallbacks(app)


def _add_legacy_fallbacks(app: FastAPI) -> None:
    """405 and 404 on and under the earlier routes, in their shape: without these routes the
    Gradio app mounted at "/" would answer them, with a body the extension can't show."""

    async def wrong_method(request: Request) -> None:
        raise ApiError(
            405,
            "method_not_allowed",
            f"{request.method} is not allowed here.",
            _LEGACY_ROUTES_HINT,
            headers={"Allow": "POST"},
        )

    async def not_found() -> None:
        raise ApiError(404, "not_found", "No such route.", _LEGACY_ROUTES_HINT)

    for route in _EARLIER_ROUTES:
        app.add_api_route(route, wrong_method, methods=_NOT_POST, include_in_schema=False)
        app.add_api_route(
            f"{route}/{{rest:path}}",
            not_found,
            methods=[*_NOT_POST, "POST"],
            include_in_schema=False,
        )


def _legacy_body(raw: bytes) -> LegacyRequest:
    try:
        body = LegacyRequest.model_validate_json(raw)
    except ValidationError as exc:
        if any(error["type"] == "json_invalid" for error in exc.errors()):
            raise ApiError(
                400, "bad_input", "Invalid JSON in request body", _LEGACY_EXAMPLE
            ) from None
        raise ApiError(400, "bad_input", _validation_message(exc), _LEGACY_EXAMPLE) from None
    if not _LANG.fullmatch(body.target_lang):
        raise ApiError(
            400,
            "bad_input",
            "Invalid target_lang",
            "Use an ISO 639-1 code such as de, ja, pt-BR or zh-Hant.",
        )
    return body


def _legacy_response(
    jobs: JobQueue, job: Job, stream: LegacyStream, heartbeat_s: float
) -> StreamingResponse:
    return StreamingResponse(
        _legacy_sse(jobs, job, stream, heartbeat_s),
        media_type="text/event-stream",
        headers=_SSE_HEADERS,
    )


async def _legacy_sse(
    jobs: JobQueue, job: Job, stream: LegacyStream, heartbeat_s: float
) -> AsyncIterator[str]:
    """`data: <json>` lines only; a client that leaves can't resume, so its job is cancelled."""
    try:
        async for item in _follow(jobs, job, heartbeat_s):
            if item is None:
                yield ": ping\n\n"
                continue
            for data in stream.convert(item[1]):
                yield f"data: {json.dumps(data, ensure_ascii=False)}\n\n"
    finally:
        jobs.cancel(job.id)  # nothing to do once the job has ended


async def _legacy_json(jobs: JobQueue, job: Job, stream: LegacyStream) -> JSONResponse:
    """The earlier non-SSE answer: the result object, or the job's error with a fitting status
    (raised, so its body has the shape of every refusal on this path)."""
    async for item in _follow(jobs, job, heartbeat_s=float("inf")):
        event = item[1] if item else None
        if isinstance(event, ResultEvent):
            return JSONResponse(stream.convert(event)[-1]["result"])
        if isinstance(event, ErrorEvent):
            status = _STATUS_OF_CODE.get(event.code, 500)
            raise ApiError(status, event.code, event.message, event.hint)
    raise ApiError(500, "internal", "The job ended without a result.")


# --- the Gradio app ----------------------------------------------------------------------------


class QueuedBackend:
    """The Gradio app's Backend: its jobs wait in the same queue and run on the same engines as
    the API's, so one GPU never runs two jobs at once."""

    def __init__(self, jobs: JobQueue, readiness: Readiness, model: str, limits: JobLimits) -> None:
        self._jobs, self._readiness, self._model = jobs, readiness, model
        self._limits = limits
        self._current: str | None = None

    def run(self, job: JobSpec) -> Iterator[Event]:
        # The app's run function can be called by any logged-in client with any values, not
        # only those its form offers.
        try:
            self._limits.check(job)
        except SubtideError as exc:
            yield exc.to_event()
            return
        queued = self._jobs.submit(job)
        self._current = queued.id
        yield from self._jobs.follow(queued)

    def health(self) -> Health:
        return Health(
            ok=self._readiness.state == "ready",
            version=engine_version(),
            device=self._readiness.gpu or "cpu",
            model=self._model,
            message=self._readiness.state,
        )

    def cancel(self) -> None:
        if self._current:
            self._jobs.cancel(self._current)


def _mount_ui(
    app: FastAPI, settings: Settings, jobs: JobQueue, readiness: Readiness, options: ServerOptions
) -> None:
    from ui.app import UiDefaults, build, mount

    backend = QueuedBackend(
        jobs, readiness, settings.whisper_model, JobLimits.from_settings(settings)
    )
    defaults = UiDefaults(
        whisper_model=settings.whisper_model,
        whisper_models=tuple(settings.offered_models()),
        # The server's LLM URL and model stay off the page (its login page, open to anyone,
        # carries the defaults): blank boxes mean the server's own.
        llm_configured=bool(settings.server_api_key or settings.server_api_url),
    )
    # No preview downloads: on a server they would fetch any URL a visitor pastes.
    blocks = build(lambda: backend, defaults=defaults)
    auth = ("subtide", options.auth_token) if options.auth_token else None
    mount(app, blocks, auth=auth, max_upload_mb=options.max_upload_mb)


# --- running -----------------------------------------------------------------------------------


def serve(settings: Settings, host: str = "0.0.0.0", port: int | None = None) -> None:
    """Runs the server until interrupted; /ping also on PORT_HEALTH when that differs."""
    import uvicorn

    options = ServerOptions.from_settings(settings)
    port = port or options.port
    app = create_app(settings, server_options=options)
    if options.port_health and options.port_health != port:
        ping_app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
        ping_app.add_api_route("/ping", _ping_handler(app.state.readiness), methods=["GET"])
        config = uvicorn.Config(ping_app, host=host, port=options.port_health, log_level="warning")
        # In a thread, uvicorn leaves signals to the main server.
        threading.Thread(
            target=uvicorn.Server(config).run, name="subtide-ping", daemon=True
        ).start()
    uvicorn.run(app, host=host, port=port, **options.uvicorn_options())
