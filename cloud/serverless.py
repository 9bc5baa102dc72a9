"""`ServerlessBackend`: Subtide jobs on a RunPod serverless (queue) endpoint.

A job goes in with `POST /run`; its Events come back as the chunks of `/stream/{id}`, polled as
the worker yields them (the worker, `runpod/handler.py`, yields one Event per chunk), and
`/status/{id}` gives the end state: COMPLETED, FAILED, CANCELLED or TIMED_OUT. Its `output`
is the list of every chunk (`return_aggregate_stream`), so a result the stream missed is still
there.

A local file never travels as a path: its audio goes inside the payload as compressed Opus
(`cloud.audio`). A long file is cut at pauses into parts that run as parallel jobs, one per
worker as the endpoint scales out, and their Events are merged into those of one job.

A long link is shared out by time: its length comes from the page (yt-dlp metadata) or, for a
bare media file, from the media's header (`media.link_duration`), never from a download of the
media. Each part sends the link with a time range that overlaps its neighbours' by a few
seconds, so a word at a boundary is heard whole by one of them. The seam between two parts then
goes to a pause both heard, and each cue is kept from one part only.

Parts are one job to the user: the language heard in the first part is sent with the others
(unless the job names one), and the speakers of every part are linked by voice into one set
(`cloud.speakers`).
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, get_args

from pydantic import ValidationError

from cloud import audio, speakers
from cloud.detect import Kind, Target, detect
from cloud.transport import BackendError, Transport
from engine import captions, media
from engine.chunks import MissingCues, Reassembler, reassembled
from engine.protocol import (
    RETRY_HINT,
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
# A link's part is sent this much of its neighbours' audio each side: more than the seam may
# move (SEAM_WINDOW_S), plus a margin, as Whisper garbles the words cut off at a range's edge.
OVERLAP_S = 5.0
# How far the seam between two parts of a link may move from their even boundary to a pause
# (a gap between words of at least PAUSE_S) that both parts heard.
SEAM_WINDOW_S = 3.0
PAUSE_S = 0.3
_STAGES: tuple[Stage, ...] = get_args(Stage)
_CONSOLE_HINT = "See the worker logs on the endpoint's page in the RunPod console."


@dataclass
class _Part:
    """One job on the endpoint: the whole source, or one piece of a cut file."""

    index: int
    piece: audio.Piece | None  # None: the source is sent as it is
    # A link's part: the time range its worker transcribes (the piece and OVERLAP_S each side;
    # None: to the end). Its cue times count from the range's start.
    reach: tuple[float, float | None] | None = None
    job_id: str | None = None
    status: str = "PENDING"  # not submitted yet; then RunPod's status
    queued_since: float = 0.0
    ran: bool = False  # a worker took it once (IN_QUEUE again means RunPod retries it)
    percent: float = 0.0
    stage: Stage = "queued"
    result: ResultEvent | None = None
    error: ErrorEvent | None = None
    said: str | None = None  # an `{"error": ...}` chunk: how the handler fails a job
    stream: Reassembler = field(default_factory=Reassembler)  # makes a slim result whole
    queue_s: float = 0.0

    @property
    def duration(self) -> float:
        return self.piece.duration if self.piece else 0.0

    @property
    def offset(self) -> float:
        if self.reach:
            return self.reach[0]
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
    language: str | None = None  # the job's, else the first one a part reported

    @property
    def split(self) -> bool:
        return len(self.parts) > 1

    @property
    def links_speakers(self) -> bool:
        return self.split and self.job.diarize != "off"

    @property
    def overlaps(self) -> bool:
        """Parts of a link: neighbours heard the same seconds, each cue is kept once."""
        return self.split and self.parts[0].reach is not None

    def may_send(self, part: _Part) -> bool:
        """Whether `part` may go now: the first at once; the others once the language is known,
        so no part spends its worker's time detecting it again, or detects another one."""
        return part.index == 0 or self.language is not None


class ServerlessBackend:
    """A RunPod serverless queue endpoint as a `Backend`.

    `url` is the endpoint, `https://api.runpod.ai/v2/ENDPOINT_ID`; `target` skips detecting its
    kind (a stand-in or proxy at another address). Files and links longer than `chunk_s` seconds
    run as parts of about that length, at most `max_parallel` at a time. `allow_private_urls`:
    a link's length is read here, on the user's own machine, which may reach its own network as
    the desktop app does (the worker judges the link again with its own settings).
    `execution_timeout_s` asks RunPod to stop each job after that long (None: the endpoint's
    own setting).

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
        allow_private_urls: bool = True,
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
        self.allow_private_urls = allow_private_urls
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
                hint=RETRY_HINT,
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
        if job.source.url and not job.source.ranged:
            return (yield from self._plan_link(job))
        if not job.source.path:
            return _Plan(job, [_Part(0, None)], title=job.source.title, language=job.source_lang)
        mark = time.monotonic()
        path = Path(job.source.path).expanduser()
        title = job.source.title or path.stem
        yield ProgressEvent(stage="decode", percent=0, message=f"Reading {path.name}")
        duration = audio.probe_duration(path)
        if 0 < duration <= self.chunk_s:
            pieces, media = [audio.Piece(0, 0.0, duration)], path
        else:
            yield ProgressEvent(
                stage="decode", percent=0, message=f"Finding pauses to cut {path.name} at"
            )
            media = work / "audio.wav"
            duration, silences = audio.decode_with_silences(path, media)
            pieces = audio.plan_pieces(duration, silences, self.chunk_s)
        parts = [_Part(p.index, p) for p in pieces]
        plan = _Plan(job, parts, media, title, duration, language=job.source_lang)
        plan.timings["prepare"] = time.monotonic() - mark
        return plan

    def _plan_link(self, job: JobSpec) -> Generator[Event, None, _Plan]:
        """A link as it is, or, when the page says it is long, as time ranges of it."""
        mark = time.monotonic()
        url = str(job.source.url)
        whole = _Plan(job, [_Part(0, None)], title=job.source.title, language=job.source_lang)
        yield ProgressEvent(
            stage="download", percent=0, message=f"Looking at {media.host_label(url)}"
        )
        try:
            info = media.extract(url, allow_private=self.allow_private_urls)
        except ImportError:  # a client installed without yt-dlp: the worker reads the page
            return whole
        except SubtideError as exc:
            # The worker reads the link again and says what is wrong; it may also reach what
            # this machine can't (or be refused what this one may reach).
            log.info(
                "could not read %s here (%s): sent as one job", media.host_label(url), exc.message
            )
            return whole
        # A video with captions is read from them, in moments, by one worker.
        if _may_use_captions(job) and captions.list_tracks(info):
            return whole
        duration = _seconds(info.get("duration")) or self._media_length(url, info)
        if duration <= self.chunk_s:
            return whole
        pieces = audio.plan_pieces(duration, [], self.chunk_s)  # even: no pauses known yet
        parts = [_Part(p.index, p, reach=_reach(p, len(pieces))) for p in pieces]
        title = job.source.title or info.get("title")
        plan = _Plan(job, parts, title=title, duration=duration, language=job.source_lang)
        plan.timings["prepare"] = time.monotonic() - mark
        return plan

    def _media_length(self, url: str, info: dict[str, Any]) -> float:
        """The length of a link whose page does not state it (a bare media file), read from
        the media's own header through the guarded relay, without downloading the media; 0
        when it can't be told here (the link then runs as one job)."""
        try:
            return media.link_duration(url, allow_private=self.allow_private_urls, info=info)
        except SubtideError as exc:
            log.info("could not read the length of %s (%s)", media.host_label(url), exc.message)
            return 0.0

    def _follow(self, plan: _Plan, merge: _Merge) -> Iterator[Event]:
        pending = deque(plan.parts)
        running: list[_Part] = []
        while True:
            if self._cancel.is_set():
                yield ErrorEvent(code="cancelled", message="The job was cancelled.")
                return
            # One part sent per round: the parts already running are heard from between the
            # encodings of the next ones.
            sendable = bool(pending) and plan.may_send(pending[0])
            if sendable and len(running) < self.max_parallel:
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
                yield from merge.finish()
                return
            if pending and plan.may_send(pending[0]) and len(running) < self.max_parallel:
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
        page = self.transport.json_value(self.transport.request("GET", f"/stream/{part.job_id}"))
        outputs, status = _stream_page(page)
        for output in outputs:
            yield from self._chunk(part, output, merge)
        final = None
        if status is None:  # a bare list of chunks says nothing of the job's state
            final = self._status(part)
            status = str(final.get("status") or part.status)
        if status in TERMINAL:
            yield from self._end(part, final or self._status(part), merge)
        else:
            self._track(part, status)

    def _status(self, part: _Part) -> dict[str, Any]:
        return self.transport.json(self.transport.request("GET", f"/status/{part.job_id}"))

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
        try:
            event = part.stream.feed(event)
        except MissingCues as exc:
            # Left without a result: the job's end takes it from the aggregated output.
            log.warning("the stream of job %s lost chunks: %s", part.job_id, exc)
            return
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
        try:
            whole = list(reassembled(events))
        except MissingCues:
            whole = []  # RunPod's own copy is incomplete: no result to give
        result = next((e for e in reversed(whole) if isinstance(e, ResultEvent)), None)
        if result is None:
            part.error = ErrorEvent(
                code="backend_unavailable",
                message="The endpoint finished the job without a Subtide result.",
                hint="Check that the endpoint runs the Subtide image with MODE=serverless.",
            )
            return
        if streamed := merge.streamed(part, result.cues):
            yield CuesEvent(cues=streamed)
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
            self.plan.language = self.plan.language or event.language
            part.percent = max(part.percent, event.percent)
            part.stage = event.stage
            self.stage = self._stage(part) if self.plan.split else event.stage
            message = self._label(part, event.message)
            yield self.progress(message, event.eta_s if not self.plan.split else None)
        elif isinstance(event, CuesEvent):
            if streamed := self.streamed(part, event.cues):
                yield CuesEvent(cues=streamed)
        elif isinstance(event, ResultEvent):
            self.plan.language = self.plan.language or event.language
            part.percent = 100.0
            part.result = event.model_copy(
                update={"cues": [self._moved(part, cue) for cue in event.cues]}
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

    def streamed(self, part: _Part, cues: list[Cue]) -> list[Cue]:
        """A part's cues as streamed, on the whole source's clock. Speakers are held back while
        the parts' labels are not linked yet: SPEAKER_1 of one part is nobody in another. So
        are a link's cues near a seam: the result keeps them from one part or the other."""
        moved = [self._moved(part, cue) for cue in cues]
        if self.plan.overlaps:
            moved = [cue for cue in moved if _clear_of_seams(self.plan, part, cue)]
        if self.plan.links_speakers:
            moved = [cue.model_copy(update={"speaker": None}) for cue in moved]
        return moved

    def _moved(self, part: _Part, cue: Cue) -> Cue:
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

    def finish(self) -> Iterator[Event]:
        """The result; first, when speakers were linked, the cues with their labels."""
        result = self.result()
        if self.plan.links_speakers or self.plan.overlaps:
            yield CuesEvent(cues=result.cues)
        yield result

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
        results = [r for _, r in done]
        if plan.overlaps:
            results = _seamed(plan.parts, results)
        cues, voices = _linked_speakers(plan.job, results)
        spoken = Counter[str]()
        for part, result in done:
            spoken[result.language] += part.duration
        languages = dict.fromkeys(lang for _, result in done for lang in result.targets)
        return ResultEvent(
            cues=cues,
            language=spoken.most_common(1)[0][0],
            duration=round(_duration(plan, results), 3),
            title=plan.title,
            timings=rounded,
            files=[],
            targets={
                lang: TargetReport.combine([r.targets[lang] for _, r in done if lang in r.targets])
                for lang in languages
            },
            speakers=voices,
        )

    def failure(self, part: _Part) -> ErrorEvent:
        error = part.error
        assert error is not None
        if not self.plan.split or error.code == "cancelled":
            return error
        start = part.piece.start if part.piece else 0.0
        where = (
            f"Part {part.index + 1} of {len(self.plan.parts)} "
            f"({_clock(start)}–{_clock(start + part.duration)})"
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
    """The JobSpec a part's worker runs, as JSON; a file's audio goes inside as Opus, a link
    goes with the time range its part transcribes."""
    job = plan.job
    if part.reach is not None:
        start, end = part.reach
        source = Source(url=job.source.url, title=plan.title, start=start or None, end=end)
        job = job.model_copy(update={"source": source})
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
        source = Source(audio_b64=encoded, title=plan.title)
        job = job.model_copy(update={"source": source})
    if plan.split:
        job = job.model_copy(update=_part_settings(plan))
    return job.model_dump(mode="json", exclude_none=True)


def _part_settings(plan: _Plan) -> dict[str, Any]:
    """What a part of a cut source runs with, beside the job's own settings."""
    job = plan.job
    return {
        # Rendered by the client from the merged cues, not by each worker.
        "formats": [],
        "source_lang": plan.language,
        # A part may hear fewer voices than the whole: the job's count only bounds it. Names go
        # on once labels are linked across parts.
        "num_speakers": None,
        "min_speakers": None,
        "max_speakers": job.num_speakers or job.max_speakers,
        "speaker_names": {},
    }


def _linked_speakers(
    job: JobSpec, results: list[ResultEvent]
) -> tuple[list[Cue], dict[str, list[float]]]:
    """The parts' cues in order, with one label per voice across parts (SPEAKER_1, 2, ... by
    first appearance, then the job's names), and each linked speaker's voice."""
    groups = speakers.link(
        _labels(results), num_speakers=job.num_speakers, max_speakers=job.max_speakers
    )
    group_of = {(label.part, label.name): g for g, group in enumerate(groups) for label in group}
    placed = [
        (cue, group_of.get((k, cue.speaker))) for k, r in enumerate(results) for cue in r.cues
    ]
    placed.sort(key=lambda pair: (pair[0].start, pair[0].id))
    names: dict[int, str] = {}
    for _, group in placed:
        if group is not None and group not in names:
            label = f"SPEAKER_{len(names) + 1}"
            names[group] = job.speaker_names.get(label, label)
    cues = [
        cue if group is None else cue.model_copy(update={"speaker": names[group]})
        for cue, group in placed
    ]
    return cues, {names[g]: speakers.voice_of(groups[g]) for g in names}


def _labels(results: list[ResultEvent]) -> list[speakers.Label]:
    """Every part's labels with their voices; a label its worker gave no voice (a diarizer
    without embeddings) is kept apart, so it never takes another part's speaker's name."""
    labels = []
    for k, result in enumerate(results):
        used = dict.fromkeys(cue.speaker for cue in result.cues if cue.speaker)
        for name in {**result.speakers, **used}:
            labels.append(speakers.Label(k, name, tuple(result.speakers.get(name, ()))))
    return labels


def _duration(plan: _Plan, results: list[ResultEvent]) -> float:
    """The source's length: a link's last part says where it really ends (the page's length
    is often rounded)."""
    if plan.overlaps:
        return plan.parts[-1].offset + results[-1].duration
    return plan.duration


def _may_use_captions(job: JobSpec) -> bool:
    return not job.force_asr and job.caption_track != "asr"


def _reach(piece: audio.Piece, count: int) -> tuple[float, float | None]:
    """The range a link's part transcribes: its piece and OVERLAP_S of each neighbour's. The
    last runs to the end: a page's duration is often rounded to the second."""
    start = max(piece.start - OVERLAP_S, 0.0)
    end = None if piece.index == count - 1 else round(piece.end + OVERLAP_S, 3)
    return round(start, 3), end


def _clear_of_seams(plan: _Plan, part: _Part, cue: Cue) -> bool:
    """Whether a cue of a link's part is surely kept: its middle inside the part's own piece,
    further from each seam than the seam may move."""
    assert part.piece is not None
    low = part.piece.start + SEAM_WINDOW_S if part.index > 0 else -math.inf
    last = part.index == len(plan.parts) - 1
    high = part.piece.end - SEAM_WINDOW_S if not last else math.inf
    return low <= _middle(cue) < high


def _seamed(parts: list[_Part], results: list[ResultEvent]) -> list[ResultEvent]:
    """The results of a link's overlapping parts with each cue kept once: a cue belongs to the
    part on whose side of the seam its middle lies. Cues stay whole (their words, speakers and
    translations as the worker made them)."""
    seams = [
        _seam(parts[k].piece.end, results[k].cues, results[k + 1].cues)  # type: ignore[union-attr]
        for k in range(len(parts) - 1)
    ]
    bounds = [-math.inf, *seams, math.inf]
    return [
        result.model_copy(
            update={"cues": [c for c in result.cues if bounds[k] <= _middle(c) < bounds[k + 1]]}
        )
        for k, result in enumerate(results)
    ]


def _seam(boundary: float, before: list[Cue], after: list[Cue]) -> float:
    """Where one part hands over to the next: the pause nearest their even `boundary` (within
    SEAM_WINDOW_S) that no cue of either part runs across, else the nearest pause either heard,
    else the boundary itself."""
    cues = before + after
    pauses = [p for p in _pauses(before) + _pauses(after) if abs(p - boundary) <= SEAM_WINDOW_S]
    if not pauses:
        return boundary

    def rank(point: float) -> tuple[bool, float]:
        crossed = any(cue.start < point < cue.end for cue in cues)
        return crossed, abs(point - boundary)

    return min(pauses, key=rank)


def _pauses(cues: list[Cue]) -> list[float]:
    """The middles of the gaps of at least PAUSE_S between the words of `cues` (a cue without
    words counts as one)."""
    spans = sorted((w.start, w.end) for cue in cues for w in cue.words or [cue])
    return [(end + start) / 2 for (_, end), (start, _) in pairwise(spans) if start - end >= PAUSE_S]


def _middle(cue: Cue) -> float:
    return (cue.start + cue.end) / 2


def _seconds(value: object) -> float:
    return float(value) if isinstance(value, int | float) and value > 0 else 0.0


def _stream_page(page: object) -> tuple[list[object], str | None]:
    """The outputs of a /stream answer and the job's status, None when it does not say.
    RunPod documents both `{"status": ..., "stream": [{"output": ...}, ...]}` and the bare
    list of chunks."""
    if isinstance(page, dict):
        items, status = page.get("stream"), page.get("status")
    else:
        items, status = page, None
    chunks = items if isinstance(items, list) else []
    outputs = [item.get("output") for item in chunks if isinstance(item, dict)]
    return outputs, str(status) if status else None


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
