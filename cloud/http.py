"""The client for Subtide's own HTTP API (app/server.py), wherever it runs: a RunPod pod, a
RunPod load-balancing endpoint, or a self-hosted `subtide serve`. All three speak the same API.

A job goes: wait on `/ping` (204 while a fresh worker loads its models) → `POST /api/jobs` →
follow `GET /api/jobs/{id}/events` (SSE). A dropped stream is resumed with `Last-Event-ID`, so
no event is lost or repeated; when it can't be, `GET /api/jobs/{id}` gives the end state.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import httpx
from pydantic import ValidationError

from cloud import audio
from cloud.detect import Kind, Target, detect
from cloud.transport import (
    DEFAULT_TIMEOUT,
    AuthError,
    BackendError,
    NotFoundError,
    Transport,
    UnreachableError,
)
from engine.protocol import (
    ErrorEvent,
    Event,
    Health,
    JobSpec,
    ProgressEvent,
    ResultEvent,
    SubtideError,
    parse_event,
)

log = logging.getLogger(__name__)

# A fresh RunPod worker pulls its image and loads the model before /ping says 200: minutes.
DEFAULT_PING_WAIT_S = 600.0
# Four of the server's 15 s heartbeats: a quiet stream this long is dead, not just idle.
DEFAULT_STREAM_READ_S = 60.0
# The server answers an upload only after storing and probing it; that can take a while.
_UPLOAD_TIMEOUT = httpx.Timeout(300.0, connect=10.0)
_MAX_RECONNECT_WAIT_S = 15.0
# What a proxy in front of a booting worker answers; during the wait it means "not yet".
_BOOTING = frozenset({502, 503, 504})
# A well-formed job id no server has: asking for it tells a wrong key (401) from a right one.
_PROBE_JOB = "0" * 32


@dataclass(frozen=True)
class SseMessage:
    id: int | None
    event: str
    data: str


def read_sse(lines: Iterable[str]) -> Iterator[SseMessage]:
    """SSE messages from the lines of a stream. Comments (the server's `: ping` heartbeats) are
    skipped, and so is a message cut off before its blank line: a resume asks for it again."""
    event_id: int | None = None
    kind, data = "message", []
    for line in lines:
        if not line:
            if data or event_id is not None:
                yield SseMessage(event_id, kind, "\n".join(data))
            event_id, kind, data = None, "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            kind = value
        elif name == "id" and value.isdigit():
            event_id = int(value)


class _Dropped(Exception):
    """The event stream ended before the job did; carries why, for the log."""


class HttpBackend:
    """A `Backend` on a Subtide HTTP API. `run` never raises for remote failures: they end the
    run with an `error` Event that says what to do. `cancel` may be called from another thread.

    `target`, when given, is used as it is (a stand-in or a proxy in tests, a URL classified
    elsewhere); otherwise `url` is classified, and a URL that can't be a backend, or is a
    serverless queue endpoint, raises a `bad_input` SubtideError. A local file's audio is
    uploaded as 16 kHz mono Opus (multipart), as the serverless client sends it.
    """

    def __init__(
        self,
        url: str,
        api_key: str | None,
        *,
        target: Target | None = None,
        ping_wait_s: float = DEFAULT_PING_WAIT_S,
        ping_interval_s: float = 2.0,
        reconnects: int = 5,
        reconnect_backoff_s: float = 1.0,
        stream_read_timeout_s: float = DEFAULT_STREAM_READ_S,
        status_poll_s: float = 5.0,
        retries: int = 4,
        backoff_s: float = 0.5,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    ) -> None:
        self.target = target or detect(url)
        if self.target.kind is Kind.SERVERLESS:
            raise SubtideError(
                "bad_input",
                f"{self.target.url} is a RunPod serverless queue endpoint, not an HTTP API.",
                "Use it as a serverless backend, or give the URL of a pod or a "
                "load-balancing endpoint here.",
            )
        self._transport = Transport(
            self.target, api_key, timeout=timeout, retries=retries, backoff_s=backoff_s
        )
        self._ping_wait_s, self._ping_interval_s = ping_wait_s, ping_interval_s
        self._reconnects, self._reconnect_backoff_s = reconnects, reconnect_backoff_s
        self._status_poll_s = status_poll_s
        # Long reads for the stream only; every other request keeps the short timeouts.
        self._stream_timeout = httpx.Timeout(
            timeout.connect, read=stream_read_timeout_s, write=timeout.write, pool=timeout.pool
        )
        self._lock = threading.Lock()
        self._cancelled = threading.Event()
        self._running = False
        self._job_id: str | None = None

    @property
    def job_id(self) -> str | None:
        """The server's id of the current job, or of the last one."""
        with self._lock:
            return self._job_id

    # --- Backend --------------------------------------------------------------------------

    def run(self, job: JobSpec) -> Iterator[Event]:
        with self._lock:
            self._running, self._job_id = True, None
        try:
            yield from _monotonic(self._run(job))
        finally:
            with self._lock:
                self._running = False
                self._cancelled.clear()

    def cancel(self) -> None:
        """Cancels the current job on the server; `run` then ends with the server's
        `cancelled` error. Before the job is submitted, `run` stops at its next step."""
        with self._lock:
            if not self._running:
                return  # a stale cancel must not stop the next job
            self._cancelled.set()
            job_id = self._job_id
        if job_id:
            self._delete(job_id)

    def health(self) -> Health:
        """The backend's state; raises a BackendError (AuthError for a wrong key) when it
        can't be used."""
        body = self._transport.json(self._transport.request("GET", "/health"))
        # /health may be open to all on our server: an authenticated call checks the key too.
        self._transport.request("GET", f"/api/jobs/{_PROBE_JOB}", accept={404})
        state = str(body.get("status", "unknown"))
        features = body.get("features")
        model = features.get("model") if isinstance(features, dict) else None
        return Health(
            ok=state == "ok",
            version=str(body.get("version") or "unknown"),
            device=str(body.get("gpu") or "cpu"),
            model=model if isinstance(model, str) else None,
            message=_health_message(state, body.get("queue")),
        )

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> HttpBackend:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- one job --------------------------------------------------------------------------

    def _run(self, job: JobSpec) -> Iterator[Event]:
        try:
            upload = _local_file(job)
            yield from self._wait_ready()
            job_id = self._submit(job, upload)
            yield from self._follow(job_id)
        except SubtideError as exc:
            yield exc.to_event()
        except httpx.TransportError as exc:  # one that no Transport call wrapped
            yield self._transport.unreachable(exc).to_event()

    def _wait_ready(self) -> Iterator[ProgressEvent]:
        """Returns once /ping says 200; says how long it has waited while the backend starts
        (204, or a gateway's 502-504 in front of a booting worker)."""
        started = time.monotonic()
        while True:
            response = self._transport.request("GET", "/ping", accept=_BOOTING)
            status = response.status_code
            if status == 503 and _says_failed(response):
                raise self._failed_to_load()
            if status != 204 and status not in _BOOTING:
                return
            waited = time.monotonic() - started
            if waited >= self._ping_wait_s:
                raise self._never_ready(status, waited)
            yield ProgressEvent(
                stage="queued",
                percent=0,
                message=f"The backend is starting (cold start), {waited:.0f} s",
            )
            if self._cancelled.wait(self._ping_interval_s):
                raise SubtideError("cancelled", "The job was cancelled.")

    def _submit(self, job: JobSpec, upload: Path | None) -> str:
        if upload is None:
            # Only what the caller set: a server a version behind still takes the job.
            body = job.model_dump(mode="json", exclude_unset=True)
            response = self._transport.request("POST", "/api/jobs", idempotent=False, json=body)
        else:
            response = self._upload(job, upload)
        job_id = self._transport.json(response).get("id")
        if not isinstance(job_id, str) or not job_id:
            raise self._not_understood("its answer to the new job has no id")
        with self._lock:
            self._job_id = job_id
            cancel_now = self._cancelled.is_set()
        if cancel_now:  # cancelled while the job was on its way
            self._delete(job_id)
        return job_id

    def _upload(self, job: JobSpec, path: Path) -> httpx.Response:
        """`file` = the media, `job` = the JobSpec without its source (the server makes the
        upload its source; the file's name becomes the title)."""
        spec = job.model_dump(mode="json", exclude={"source"}, exclude_unset=True)
        # The server hears 16 kHz mono anyway: as Opus, a film's upload takes seconds, not the
        # minutes its video would.
        media = audio.encode_opus(path)
        return self._transport.request(
            "POST",
            "/api/jobs",
            idempotent=False,
            files={"file": (_upload_name(job, path), media, "audio/ogg")},
            data={"job": json.dumps(spec)},
            timeout=_UPLOAD_TIMEOUT,
        )

    def _follow(self, job_id: str) -> Iterator[Event]:
        """The job's events through its result or error, resuming a dropped stream after the
        last event seen; after `reconnects` failed tries in a row, its end state."""
        last_id: int | None = None
        failures = 0
        progress: ProgressEvent | None = None
        while failures <= self._reconnects:
            if failures:
                self._pause_before_reconnect(failures)
            try:
                with closing(self._events(job_id, last_id)) as events:
                    for event_id, event in events:
                        failures = 0
                        last_id = event_id if event_id is not None else last_id
                        if event is None:
                            continue
                        progress = event if isinstance(event, ProgressEvent) else progress
                        yield event
                        if isinstance(event, ResultEvent | ErrorEvent):
                            return
                raise _Dropped("the stream ended before the job")
            except AuthError:
                raise
            except NotFoundError:
                break  # a restarted server forgets live jobs; the record may still be on disk
            except (_Dropped, BackendError, httpx.TransportError) as exc:
                failures += 1
                log.info(
                    "event stream of job %s dropped (%s); resuming after event %s",
                    job_id,
                    _why(exc),
                    last_id,
                )
        yield from self._end_state(job_id, progress)

    def _events(
        self, job_id: str, last_id: int | None
    ) -> Iterator[tuple[int | None, Event | None]]:
        """(id, Event) per SSE message; Event None for one this client can't read (a newer
        server's), so its id still counts."""
        headers = {"Last-Event-ID": str(last_id)} if last_id is not None else {}
        path = f"/api/jobs/{job_id}/events"
        with self._transport.stream(
            "GET", path, headers=headers, timeout=self._stream_timeout
        ) as response:
            for message in read_sse(response.iter_lines()):
                yield message.id, _event_of(message)

    def _pause_before_reconnect(self, failures: int) -> None:
        wait = self._reconnect_backoff_s * 2 ** (failures - 1)
        time.sleep(min(wait, _MAX_RECONNECT_WAIT_S))

    def _end_state(self, job_id: str, progress: ProgressEvent | None) -> Iterator[Event]:
        """The job's result or error from `GET /api/jobs/{id}`, polled while it still runs:
        the live stream is lost, but the job is not."""
        told = False
        while True:
            event = self._status(job_id)
            if event is not None:
                yield event
                return
            if not told:
                told = True
                yield ProgressEvent(
                    stage=progress.stage if progress else "queued",
                    percent=progress.percent if progress else 0,
                    message="Lost the live progress; waiting for the job to finish",
                )
            time.sleep(self._status_poll_s)

    def _status(self, job_id: str) -> Event | None:
        """The ended job's last Event; None while it is queued or running."""
        try:
            response = self._transport.request("GET", f"/api/jobs/{job_id}")
        except NotFoundError:
            raise BackendError(
                f"The {self.target.kind.label} no longer knows job {job_id}.",
                "It may have restarted, or the job ended long ago; run the job again.",
            ) from None
        except UnreachableError as exc:
            raise UnreachableError(
                f"Lost the connection to the {self.target.kind.label} while job {job_id} "
                "was running there.",
                exc.hint,
            ) from None
        record = self._transport.json(response)
        status = record.get("status")
        if status in ("queued", "running"):
            return None
        ended = record.get("result") if status == "done" else record.get("error")
        if not isinstance(ended, dict):
            raise self._not_understood(f"it gave job {job_id} the status {status!r}")
        try:
            return parse_event(ended)
        except ValidationError:
            raise self._not_understood(f"job {job_id}'s end state is unreadable") from None

    def _delete(self, job_id: str) -> None:
        try:
            self._transport.request("DELETE", f"/api/jobs/{job_id}")
        except BackendError as exc:
            # run() keeps following the job, so the user sees it go on rather than a lie.
            log.warning("could not cancel job %s: %s", job_id, exc.message)

    # --- errors ---------------------------------------------------------------------------

    def _where(self) -> str:
        return f"{self.target.kind.label} at {self.target.url}"

    def _failed_to_load(self) -> BackendError:
        return BackendError(
            f"The {self._where()} failed to load its speech model.",
            "Check the backend's logs (the RunPod console's Logs tab for a pod or endpoint, "
            "the terminal for subtide serve): a wrong WHISPER_MODEL or too little GPU memory "
            "are common causes.",
        )

    def _never_ready(self, status: int, waited: float) -> BackendError:
        if status != 204:
            return BackendError(
                f"The {self._where()} answered {status} for {waited:.0f} s.",
                self.target.hint(status),
            )
        return BackendError(
            f"The {self._where()} was still starting after {waited:.0f} s.",
            "A fresh worker loads the speech model first, which can take minutes. Try again "
            "shortly; if it never gets ready, check the backend's logs.",
        )

    def _not_understood(self, what: str) -> BackendError:
        return BackendError(
            f"The {self._where()} answered, but {what}.",
            "Is it a Subtide server of a matching version? Update the client or the server.",
        )


def _monotonic(events: Iterator[Event]) -> Iterator[Event]:
    """Percent never goes down across the whole run (cold start, queue, job)."""
    top = 0.0
    for event in events:
        if isinstance(event, ProgressEvent):
            if event.percent < top:
                event = event.model_copy(update={"percent": top})
            top = event.percent
        yield event


def _event_of(message: SseMessage) -> Event | None:
    if not message.data:
        return None
    try:
        return parse_event(message.data)
    except ValidationError:
        log.warning("skipped a %r event this client does not understand", message.event)
        return None


def _local_file(job: JobSpec) -> Path | None:
    """The file to upload for a `path` source (checked before anything is sent), else None."""
    if not job.source.path:
        return None
    path = Path(job.source.path).expanduser()
    if not path.is_file():
        raise SubtideError("bad_input", f"No such file: {job.source.path}.")
    return path


def _upload_name(job: JobSpec, path: Path) -> str:
    """The upload's file name: the server takes its stem as the title."""
    title = (job.source.title or "").replace("/", " ").replace("\\", " ").strip()
    return (title or path.stem) + ".ogg"


def _says_failed(response: httpx.Response) -> bool:
    """Our server's /ping when its models failed to load, not a gateway's 503."""
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("status") == "failed"


def _health_message(state: str, queue: object) -> str:
    if state == "loading":
        return "Loading its models (cold start); jobs wait until it is ready."
    if state == "failed":
        return "Failed to load its models: check the backend's logs."
    if state != "ok":
        return f"State: {state}."
    counts = queue if isinstance(queue, dict) else {}
    running, waiting = counts.get("running", 0), counts.get("waiting", 0)
    if not running and not waiting:
        return "Ready, idle."
    return f"Ready: {running} running, {waiting} waiting."


def _why(exc: Exception) -> str:
    if isinstance(exc, SubtideError):
        return exc.message
    return str(exc) or type(exc).__name__
