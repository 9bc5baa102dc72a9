"""`ServerlessBackend`: Subtide jobs on a RunPod serverless (queue) endpoint.

A job goes in with `POST /run`; its Events come back as the chunks of `/stream/{id}`, polled as
the worker yields them (the worker, `runpod/handler.py`, yields one Event per chunk), and
`/status/{id}` gives the end state: COMPLETED, FAILED, CANCELLED or TIMED_OUT. Its `output`
is the list of every chunk (`return_aggregate_stream`), so a result the stream missed is still
there.

A local file never travels as a path: its audio goes inside the payload as compressed Opus
(`cloud.audio`). A long file is cut at pauses into parts that run as parallel jobs, one per
worker as the endpoint scales out, and their Events are merged into those of one job.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from pydantic import ValidationError

from cloud import audio
from cloud.detect import Kind, Target, detect
from cloud.transport import BackendError, Transport
from engine.protocol import (
    Cue,
    CuesEvent,
    ErrorEvent,
    Event,
    Health,
    JobSpec,
    ProgressEvent,
    ResultEvent,
    Source,
    Stage,
    SubtideError,
    TargetReport,
    parse_event,
)

log = logging.getLogger(__name__)

TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})
# Ten-minute parts: a worker's fixed cost per job (dispatch, decoding, model already warm) is a
# few seconds against minutes of transcription, while an hour of video still spreads over six
# workers. Ten minutes of 24 kbit/s Opus is about 2.4 MB of base64, far under RunPod's 10 MB.
DEFAULT_CHUNK_S = 600.0
# One more job than the three workers the deployment guide suggests, so a freed worker finds
# the next part already queued; more would only wait in the queue.
DEFAULT_MAX_PARALLEL = 4
# Twice a second per running part: events reach the user within half a second, and a part's
# end costs a quarter second on average, far inside RunPod's limit for /stream and /status
# together (2000 requests per 10 seconds per endpoint).
DEFAULT_POLL_S = 0.5
# A part this far along (the worker is writing its result) ends within moments: polled at the
# usual pace, each part would end on average half a poll later than it does.
ENDING_PERCENT = 90.0
ENDING_POLL_S = 0.1
# Cue ids of part k are k * ID_STRIDE + the worker's id: unique across parts, stable between
# the cues events and the result, and ordered like the parts.
ID_STRIDE = 1_000_000
_STAGES: tuple[Stage, ...] = get_args(Stage)
_CONSOLE_HINT = "See the worker logs on the endpoint's page in the RunPod console."


@dataclass
class _Part:
    """One job on the endpoint: the whole source, or one piece of a cut file."""

    index: int
    piece: audio.Piece | None  # None: the source is sent as it is
    job_id: str | None = None
    status: str = "PENDING"  # not submitted yet; then RunPod's status
    queued_since: float = 0.0
    ran: bool = False  # a worker took it once (IN_QUEUE again means RunPod retries it)
    percent: float = 0.0
    stage: Stage = "queued"
    result: ResultEvent | None = None
    error: ErrorEvent | None = None
    said: str | None = None  # an `{"error": ...}` chunk: how the handler fails a job
    queue_s: float = 0.0

    @property
    def duration(self) -> float:
        return self.piece.duration if self.piece else 0.0

    @property
    def offset(self) -> float:
        return self.piece.start if self.piece else 0.0

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


@dataclass
class _Plan:
    """What a run sends: the job, the file its parts are cut from, and the parts."""

    job: JobSpec
    parts: list[_Part]
    media: Path | None = None  # the audio to encode parts from (None: send the source as is)
    title: str | None = None
    duration: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def split(self) -> bool:
        return len(self.parts) > 1


class ServerlessBackend:
    """A RunPod serverless queue endpoint as a `Backend`.

    `url` is the endpoint, `https://api.runpod.ai/v2/ENDPOINT_ID`; `target` skips detecting its
    kind (a stand-in or proxy at another address). Files longer than `chunk_s` seconds run as
    parts of about that length, at most `max_parallel` at a time. `execution_timeout_s` asks
    RunPod to stop each job after that long (None: the endpoint's own setting).

    A cut file's result carries no rendered files (`files=[]`): its parts are rendered nowhere,
    so clients render them from the cues, as the CLI and the app do for any result without
    files. One run at a time per instance; `cancel` may come from any thread.
    """

    def __init__(
        self,
        url: str,
        api_key: str | None,
        *,
        target: Target | None = None,
        poll_s: float = DEFAULT_POLL_S,
        chunk_s: float = DEFAULT_CHUNK_S,
        max_parallel: int = DEFAULT_MAX_PARALLEL,
        execution_timeout_s: float | None = None,
        retries: int = 4,
        backoff_s: float = 0.5,
    ) -> None:
        self.target = target or detect(url)
        if self.target.kind is not Kind.SERVERLESS:
            raise SubtideError(
                "bad_input",
                f"{self.target.url} is a {self.target.kind.label}, not a serverless endpoint.",
                "Serverless endpoint URLs look like https://api.runpod.ai/v2/ENDPOINT_ID.",
            )
        if chunk_s <= 0 or max_parallel < 1 or poll_s <= 0:
            raise ValueError("chunk_s and poll_s must be positive, max_parallel at least 1")
        self.poll_s = poll_s
        # A part, moved to a pause, must still fit one request.
        self.chunk_s = min(chunk_s, audio.max_chunk_s())
        self.max_parallel = max_parallel
        self.execution_timeout_s = execution_timeout_s
        self.transport = Transport(self.target, api_key, retries=retries, backoff_s=backoff_s)
        self._lock = threading.Lock()
        self._active: set[str] = set()  # job ids of this run still running on the endpoint
        self._stopped: set[str] = set()  # job ids already sent /cancel
        self._cancel = threading.Event()

    # --- Backend --------------------------------------------------------------------------

    def run(self, job: JobSpec) -> Iterator[Event]:
        try:
            yield from self._run(job)
        except SubtideError as exc:
            yield exc.to_event()
        except Exception:
            log.exception("unexpected failure while running %s remotely", job.source.label)
            yield ErrorEvent(
                code="internal",
                message="Subtide hit an unexpected error while talking to the endpoint.",
                hint="Try again; if it happens again, report it with the log output.",
            )
        finally:
            # Jobs still running belong to a run nobody follows any more (it failed, or the
            # caller stopped reading): they would only cost money.
            self._stop_jobs()
            with self._lock:
                self._active.clear()
                self._stopped.clear()
            # Cleared when a run ends, not when it starts: a cancel that comes before the run
            # has submitted anything still stops it.
            self._cancel.clear()

    def cancel(self) -> None:
        self._cancel.set()
        self._stop_jobs()

    def health(self) -> Health:
        body = self.transport.json(self.transport.request("GET", "/health"))
        return Health(ok=True, version="serverless", device=None, message=_health_message(body))

    def close(self) -> None:
        self.transport.close()

    # --- One run --------------------------------------------------------------------------

    def _run(self, job: JobSpec) -> Iterator[Event]:
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="subtide-upload-") as work:
            plan = yield from self._plan(job, Path(work))
            merge = _Merge(plan, started)
            yield from self._follow(plan, merge)

    def _plan(self, job: JobSpec, work: Path) -> Generator[Event, None, _Plan]:
        """The parts to send (the audio of a file is read here; its parts are encoded only
        when they are sent, so a long file is never all in memory as base64)."""
        if not job.source.path:
            return _Plan(job, [_Part(0, None)], title=job.source.title)
        mark = time.monotonic()
        path = Path(job.source.path).expanduser()
        title = job.source.title or path.stem
        yield ProgressEvent(stage="decode", percent=0, message=f"Reading {path.name}")
        duration = audio.probe_duration(path)
        single = self._single_part_limit(job)
        if 0 < duration <= single:
            pieces, media = [audio.Piece(0, 0.0, duration)], path
        else:
            yield ProgressEvent(
                stage="decode", percent=0, message=f"Finding pauses to cut {path.name} at"
            )
            media = work / "audio.wav"
            duration, silences = audio.decode_with_silences(path, media)
            limit = self.chunk_s if duration > single else single
            pieces = audio.plan_pieces(duration, silences, limit)
        plan = _Plan(job, [_Part(p.index, p) for p in pieces], media, title, duration)
        plan.timings["prepare"] = time.monotonic() - mark
        if plan.split and job.diarize != "off":
            yield ProgressEvent(
                stage="decode",
                percent=0,
                message=f"{path.name} runs as {len(pieces)} parts; speaker labels are found per "
                "part, so one person may have different labels in different parts.",
            )
        return plan

    def _single_part_limit(self, job: JobSpec) -> float:
        # Speaker labels are only consistent within one job: keep a file whole while it fits.
        return audio.max_payload_seconds() if job.diarize != "off" else self.chunk_s

    def _follow(self, plan: _Plan, merge: _Merge) -> Iterator[Event]:
        pending = deque(plan.parts)
        running: list[_Part] = []
        while True:
            if self._cancel.is_set():
                yield ErrorEvent(code="cancelled", message="The job was cancelled.")
                return
            # One part sent per round: the parts already running are heard from between the
            # encodings of the next ones.
            if pending and len(running) < self.max_parallel:
                part = pending.popleft()
                yield from self._submit(plan, part, merge)
                running.append(part)
            for part in running:
                yield from self._poll(part, merge)
            running = [part for part in running if not part.done]
            failed = next((p for p in plan.parts if p.error is not None), None)
            if failed is not None:
                yield merge.failure(failed)
                return
            if not running and not pending:
                yield merge.result()
                return
            if pending and len(running) < self.max_parallel:
                continue  # the next part goes now
            yield from merge.waiting(pending)
            ending = any(p.result is not None or p.percent >= ENDING_PERCENT for p in running)
            self._cancel.wait(min(self.poll_s, ENDING_POLL_S) if ending else self.poll_s)

    def _submit(self, plan: _Plan, part: _Part, merge: _Merge) -> Iterator[Event]:
        if plan.split:
            yield merge.note(f"Sending part {part.index + 1} of {len(plan.parts)}")
        else:
            yield merge.note("Sending the job to the endpoint")
        body: dict[str, Any] = {"input": _part_input(plan, part)}
        if self.execution_timeout_s:
            body["policy"] = {"executionTimeout": int(self.execution_timeout_s * 1000)}
        _check_size(body)
        # Not idempotent: a repeated /run would start a second, paid job.
        response = self.transport.request("POST", "/run", idempotent=False, json=body)
        answer = self.transport.json(response)
        if not isinstance(answer.get("id"), str):
            raise _unexpected(self.target, "/run answered without a job id")
        part.job_id, part.status = answer["id"], str(answer.get("status") or "IN_QUEUE")
        part.queued_since = time.monotonic()
        with self._lock:
            self._active.add(part.job_id)
        if self._cancel.is_set():
            self._stop_jobs()  # a cancel that came while this part was on its way

    def _poll(self, part: _Part, merge: _Merge) -> Iterator[Event]:
        page = self.transport.json(self.transport.request("GET", f"/stream/{part.job_id}"))
        for item in page.get("stream") or []:
            output = item.get("output") if isinstance(item, dict) else None
            yield from self._chunk(part, output, merge)
        status = str(page.get("status") or part.status)
        if status in TERMINAL:
            final = self.transport.json(self.transport.request("GET", f"/status/{part.job_id}"))
            yield from self._end(part, final, merge)
        else:
            self._track(part, status)

    def _track(self, part: _Part, status: str) -> None:
        if status == "IN_QUEUE" and part.status != "IN_QUEUE":
            part.queued_since = time.monotonic()  # back in the queue: RunPod retries it
        if status == "IN_PROGRESS":
            part.ran = True
        part.status = status

    def _chunk(self, part: _Part, output: object, merge: _Merge) -> Iterator[Event]:
        if isinstance(output, dict) and "type" not in output and "error" in output:
            part.said = str(output["error"])
            return
        try:
            event = parse_event(output)  # type: ignore[arg-type]
        except (ValidationError, ValueError, TypeError):
            log.warning("skipped a stream chunk that is not a Subtide event (job %s)", part.job_id)
            return
        part.ran = True
        yield from merge.take(part, event)

    def _end(self, part: _Part, final: dict[str, Any], merge: _Merge) -> Iterator[Event]:
        with self._lock:
            self._active.discard(part.job_id or "")
        status = str(final.get("status") or "FAILED")
        part.status = status
        part.queue_s = _ms(final.get("delayTime"))
        if status == "COMPLETED":
            if part.result is None:
                yield from self._result_from_output(part, final.get("output"), merge)
        elif status == "FAILED":
            part.error = part.error or _failure(final.get("error") or part.said)
        elif status == "CANCELLED":
            part.error = self._cancelled_error()
        else:
            part.error = self._timeout_error(final)

    def _result_from_output(self, part: _Part, output: object, merge: _Merge) -> Iterator[Event]:
        """The stream missed the result: the aggregated output has every chunk."""
        events = []
        for item in output if isinstance(output, list) else []:
            try:
                events.append(parse_event(item))
            except (ValidationError, ValueError, TypeError):
                continue
        result = next((e for e in reversed(events) if isinstance(e, ResultEvent)), None)
        if result is None:
            part.error = ErrorEvent(
                code="backend_unavailable",
                message="The endpoint finished the job without a Subtide result.",
                hint="Check that the endpoint runs the Subtide image with MODE=serverless.",
            )
            return
        yield CuesEvent(cues=[merge.shift(part, cue) for cue in result.cues])
        yield from merge.take(part, result)

    def _cancelled_error(self) -> ErrorEvent:
        if self._cancel.is_set():
            return ErrorEvent(code="cancelled", message="The job was cancelled.")
        return ErrorEvent(
            code="cancelled",
            message="The job was cancelled on the endpoint (from the RunPod console or another "
            "client).",
        )

    def _timeout_error(self, final: dict[str, Any]) -> ErrorEvent:
        ran = _ms(final.get("executionTime"))
        after = f" after {_clock(ran)}" if ran else ""
        if self.execution_timeout_s:
            hint = (
                f"This client allows {_clock(self.execution_timeout_s)} per job: raise its "
                "execution timeout, or use a pod for very long videos."
            )
        else:
            hint = (
                'Raise "Execution Timeout" in the endpoint\'s settings in the RunPod console, '
                "or use a pod for very long videos."
            )
        return ErrorEvent(
            code="backend_unavailable",
            message=f"The job hit the endpoint's execution timeout{after} and RunPod stopped it.",
            hint=hint,
        )

    def _stop_jobs(self) -> None:
        """Sends /cancel for every job of this run still running; never raises."""
        with self._lock:
            ids = sorted(self._active - self._stopped)
            self._stopped.update(ids)
        for job_id in ids:
            try:
                self.transport.request("POST", f"/cancel/{job_id}")
            except SubtideError as exc:
                log.warning("could not cancel job %s: %s", job_id, exc.message)


class _Merge:
    """The parts' Events as those of one job: one percent that never goes down, cue ids and
    times shifted to the whole file, one result."""

    def __init__(self, plan: _Plan, started: float) -> None:
        self.plan = plan
        self.started = started
        self.percent = 0.0
        self.stage: Stage = "queued"
        total = sum(p.duration for p in plan.parts)
        # Weights by audio length (equal when unknown): a long part is more of the work.
        self.weights = [p.duration / total if total else 1 / len(plan.parts) for p in plan.parts]

    def take(self, part: _Part, event: Event) -> Iterator[Event]:
        if isinstance(event, ProgressEvent):
            part.percent = max(part.percent, event.percent)
            part.stage = event.stage
            self.stage = self._stage(part) if self.plan.split else event.stage
            message = self._label(part, event.message)
            yield self.progress(message, event.eta_s if not self.plan.split else None)
        elif isinstance(event, CuesEvent):
            yield CuesEvent(cues=[self.shift(part, cue) for cue in event.cues])
        elif isinstance(event, ResultEvent):
            part.percent = 100.0
            part.result = event.model_copy(
                update={"cues": [self.shift(part, cue) for cue in event.cues]}
            )
        else:
            part.error = event

    def progress(self, message: str, eta_s: float | None = None) -> ProgressEvent:
        mean = sum(w * p.percent for w, p in zip(self.weights, self.plan.parts, strict=True))
        self.percent = min(max(self.percent, mean), 100.0)
        return ProgressEvent(
            stage=self.stage, percent=round(self.percent, 2), message=message, eta_s=eta_s
        )

    def note(self, message: str) -> ProgressEvent:
        return ProgressEvent(stage=self.stage, percent=round(self.percent, 2), message=message)

    def waiting(self, pending: deque[_Part]) -> Iterator[Event]:
        """Every poll, while parts wait for a worker: how many, and for how long."""
        queued = [p for p in self.plan.parts if p.status == "IN_QUEUE"]
        if not queued:
            return
        now = time.monotonic()
        waited = int(max(now - p.queued_since for p in queued))
        retry = any(p.ran for p in queued)
        running = sum(p.status == "IN_PROGRESS" for p in self.plan.parts)
        if not self.plan.split:
            what = "the first one was lost, RunPod retries the job; " if retry else ""
            message = f"Waiting for a worker ({what}{waited} s)"
        else:
            count, parts = len(queued) + len(pending), len(self.plan.parts)
            message = f"{count} of {parts} parts waiting for a worker ({waited} s)"
            if running:
                message = f"{_plural(running, 'part')} running, {message}"
        if not running and not self.plan.split:
            self.stage = "queued"  # the worker was lost: the job waits again
        yield self.progress(message)

    def shift(self, part: _Part, cue: Cue) -> Cue:
        if not self.plan.split:
            return cue
        offset = part.offset
        words = cue.words and [
            w.model_copy(update={"start": _at(w.start, offset), "end": _at(w.end, offset)})
            for w in cue.words
        ]
        return cue.model_copy(
            update={
                "id": part.index * ID_STRIDE + cue.id,
                "start": _at(cue.start, offset),
                "end": _at(cue.end, offset),
                "words": words,
            }
        )

    def result(self) -> ResultEvent:
        """One result for the run, once every part has its own: seconds per stage summed over
        the parts (worker time), plus the client's `prepare` and the `wall` time it waited."""
        plan = self.plan
        done = [(part, part.result) for part in plan.parts if part.result is not None]
        assert len(done) == len(plan.parts), "a part ended without a result"
        timings = Counter[str]()
        for part, result in done:
            timings.update(result.timings)
            timings["queue"] += part.queue_s
        timings.update(plan.timings)
        timings["wall"] = time.monotonic() - self.started
        rounded = {key: round(value, 3) for key, value in timings.items()}
        first = done[0][1]
        if not plan.split:
            return first.model_copy(update={"timings": rounded, "title": first.title or plan.title})
        cues = sorted((c for _, r in done for c in r.cues), key=lambda c: (c.start, c.id))
        spoken = Counter[str]()
        for part, result in done:
            spoken[result.language] += part.duration
        languages = dict.fromkeys(lang for _, result in done for lang in result.targets)
        return ResultEvent(
            cues=cues,
            language=spoken.most_common(1)[0][0],
            duration=round(plan.duration, 3),
            title=plan.title,
            timings=rounded,
            files=[],
            targets={
                lang: TargetReport.combine([r.targets[lang] for _, r in done if lang in r.targets])
                for lang in languages
            },
        )

    def failure(self, part: _Part) -> ErrorEvent:
        error = part.error
        assert error is not None
        if not self.plan.split or error.code == "cancelled":
            return error
        where = (
            f"Part {part.index + 1} of {len(self.plan.parts)} "
            f"({_clock(part.offset)}–{_clock(part.offset + part.duration)})"
        )
        return error.model_copy(update={"message": f"{where}: {error.message}"})

    def _stage(self, part: _Part) -> Stage:
        """A cut file's stage: the furthest any part has got, never going back (parts start
        one after another), and "finalize" only once no other part is still before it."""
        stage = part.stage
        if stage == "finalize":
            behind = [p.stage for p in self.plan.parts if p is not part and p.result is None]
            stage = max([s for s in behind if s != "finalize"] or [stage], key=_STAGES.index)
        return max(self.stage, stage, key=_STAGES.index)

    def _label(self, part: _Part, message: str) -> str:
        if not self.plan.split:
            return message
        return f"Part {part.index + 1} of {len(self.plan.parts)}: {message}"


def _part_input(plan: _Plan, part: _Part) -> dict[str, Any]:
    """The JobSpec a part's worker runs, as JSON; a file's audio goes inside as Opus."""
    job = plan.job
    if plan.media is not None and part.piece is not None:
        whole = not plan.split and plan.media == Path(job.source.path or "").expanduser()
        data = audio.encode_opus(
            plan.media,
            start=0.0 if whole else part.piece.start,
            duration=None if whole else part.piece.duration,
        )
        encoded = audio.to_b64(data)
        if len(encoded) > audio.AUDIO_PAYLOAD_BUDGET:
            raise SubtideError(
                "bad_input",
                f"A part of {plan.title} compresses to {len(encoded) / 1e6:.1f} MB, too much for "
                f"one request to RunPod ({audio.RUNPOD_PAYLOAD_LIMIT / 1e6:.0f} MB at most).",
                "Use a shorter chunk length.",
            )
        # Parts are rendered by the client from the merged cues, not by each worker.
        formats = [] if plan.split else job.formats
        source = Source(audio_b64=encoded, title=plan.title)
        job = job.model_copy(update={"source": source, "formats": formats})
    return job.model_dump(mode="json", exclude_none=True)


def _check_size(body: dict[str, Any]) -> None:
    """Refuses a job RunPod would refuse (audio_b64 given by the caller can be any size)."""
    size = len(json.dumps(body, separators=(",", ":")))
    if size > audio.RUNPOD_PAYLOAD_LIMIT:
        raise SubtideError(
            "bad_input",
            f"The job is {size / 1e6:.1f} MB, more than one request to RunPod may carry "
            f"({audio.RUNPOD_PAYLOAD_LIMIT / 1e6:.0f} MB).",
            "Send the file by its path (it is then compressed and cut to fit) or as a URL.",
        )


def _unexpected(target: Target, what: str) -> BackendError:
    return BackendError(
        f"The {target.kind.label} at {target.url} answered unexpectedly ({what}).",
        "Check the URL: it should be https://api.runpod.ai/v2/ENDPOINT_ID.",
    )


def _failure(error: object) -> ErrorEvent:
    """The end of a FAILED job whose own error Event never arrived."""
    text = str(error or "").strip()
    # The SDK reports a handler that raised as JSON with a traceback: only its message counts.
    try:
        detail = json.loads(text)
    except ValueError:
        detail = None
    if isinstance(detail, dict) and "error_message" in detail:
        return ErrorEvent(
            code="internal",
            message=f"The worker failed: {str(detail['error_message'])[:200]}",
            hint=_CONSOLE_HINT,
        )
    said = f": {text[:300].rstrip('.')}" if text else ""
    return ErrorEvent(
        code="backend_unavailable",
        message=f"The endpoint reported the job as failed{said}.",
        hint=f"{_CONSOLE_HINT} A worker that crashed or ran out of memory ends its job like this.",
    )


def _health_message(body: dict[str, Any]) -> str:
    workers = body.get("workers") if isinstance(body.get("workers"), dict) else {}
    jobs = body.get("jobs") if isinstance(body.get("jobs"), dict) else {}
    idle, running = _count(workers, "idle"), _count(workers, "running")
    starting = _count(workers, "initializing")
    queued = _count(jobs, "inQueue")
    if idle + running == 0:
        said = "no worker running: the first job starts one (cold start, 10–30 s)"
        if starting:
            said = f"{starting} worker(s) starting (cold start, 10–30 s)"
    else:
        said = f"{idle} workers idle, {running} running"
        if starting:
            said += f", {starting} starting"
    return f"{said}; {queued} jobs queued"


def _count(section: dict[str, Any], key: str) -> int:
    value = section.get(key)
    return value if isinstance(value, int) else 0


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _ms(value: object) -> float:
    return value / 1000 if isinstance(value, int | float) else 0.0


def _at(seconds: float, offset: float) -> float:
    return round(seconds + offset, 3)


def _clock(seconds: float) -> str:
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
