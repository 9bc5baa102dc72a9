"""Everything that crosses a boundary: the job, the cues, the events, the backend contract.

Every transport (in process, HTTP SSE, RunPod serverless) carries these same JSON objects, so a
field added here reaches every front end. Only pydantic and the standard library are imported.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Annotated, Literal, Protocol, runtime_checkable

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

Stage = Literal["queued", "download", "decode", "transcribe", "diarize", "translate", "finalize"]
ErrorCode = Literal[
    "bad_input",
    "unsupported_source",
    "source_unavailable",
    "model_unavailable",
    "translation_failed",
    "auth",
    # A remote backend (RunPod, a pod, a server) could not be reached or refused the request.
    "backend_unavailable",
    "cancelled",
    "internal",
]
Format = Literal["srt", "vtt", "ass", "txt", "json"]
# The video with its subtitles: as tracks a player switches (soft), or drawn into the picture.
VideoKind = Literal["video_soft", "video_burn"]
VIDEO_KINDS: tuple[VideoKind, ...] = ("video_soft", "video_burn")
# Where a result's text came from: the video's own captions (made by people, or the site's
# automatic ones), or our speech recognition.
TextSource = Literal["captions-manual", "captions-auto", "asr"]
DiarizeMode = Literal["off", "auto", "pyannote", "builtin"]


# The hint of an error nobody could foresee (a crash, a process that died).
RETRY_HINT = "Try again; if it happens again, report it with the log output."


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Source(_Model):
    """Exactly one of `url`, `audio_b64` or `path`."""

    url: str | None = None
    audio_b64: str | None = Field(default=None, repr=False)
    path: str | None = None
    title: str | None = None
    # A time range of a link, in seconds (None: from its start / to its end): only that much is
    # decoded and transcribed, and cue times count from `start`. How a long link is shared out
    # among parallel workers: each fetches the link and transcribes its own range.
    start: float | None = Field(default=None, ge=0)
    end: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _exactly_one(self) -> Source:
        given = [name for name in ("url", "audio_b64", "path") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError("a source needs exactly one of url, audio_b64 or path")
        return self

    @model_validator(mode="after")
    def _range(self) -> Source:
        if self.ranged and not self.url:
            raise ValueError("only a url source takes a time range (start, end)")
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise ValueError("a source's start must come before its end")
        return self

    @property
    def ranged(self) -> bool:
        return self.start is not None or self.end is not None

    @property
    def label(self) -> str:
        """A short human name for messages (never the base64 payload)."""
        return self.url or self.path or "uploaded audio"


class TranslationConfig(_Model):
    """The LLM to translate with; unset fields fall back to the server's own settings."""

    base_url: str | None = None
    model: str | None = None
    # repr=False keeps the key out of logs and tracebacks that print the job.
    api_key: str | None = Field(default=None, repr=False)


class Style(_Model):
    """Readability rules for cues (defaults follow common broadcast guidelines)."""

    max_chars_per_line: int = Field(default=42, ge=10, le=200)
    max_chars_per_line_cjk: int = Field(default=16, ge=4, le=100)
    max_lines: int = Field(default=2, ge=1, le=4)
    max_cps: float = Field(default=20.0, gt=0)
    min_duration: float = Field(default=0.83, ge=0)
    max_duration: float = Field(default=7.0, gt=0)
    min_gap: float = Field(default=0.083, ge=0)
    dual: bool = False
    speaker_labels: bool = False

    @model_validator(mode="after")
    def _durations(self) -> Style:
        if self.min_duration > self.max_duration:
            raise ValueError("min_duration must not exceed max_duration")
        return self


class VideoOptions(_Model):
    """How a job's video outputs (`video_soft`, `video_burn` in `formats`) are made."""

    # The soft-subtitled file's container: MKV carries ASS (speaker colours), MP4 mov_text.
    container: Literal["mkv", "mp4"] = "mkv"
    # The language burned in (a target, or the spoken one); None: the first target, else the
    # spoken language.
    burn_lang: str | None = Field(default=None, max_length=35)
    # A burned video is scaled down to this height (keeping its aspect), never up.
    max_height: int = Field(default=1080, ge=144, le=4320)


class JobSpec(_Model):
    source: Source
    source_lang: str | None = None
    target_langs: list[str] = Field(default_factory=list)
    whisper_model: str | None = None
    diarize: DiarizeMode = "off"
    num_speakers: int | None = Field(default=None, ge=1, le=32)
    min_speakers: int | None = Field(default=None, ge=1, le=32)
    max_speakers: int | None = Field(default=None, ge=1, le=32)
    # Names for the labels diarization gives, e.g. {"SPEAKER_1": "Anna"}.
    speaker_names: dict[str, str] = Field(default_factory=dict)
    translation: TranslationConfig | None = None
    glossary: dict[str, str] = Field(default_factory=dict)
    # One line about the video (topic, names, register) to guide the translation; it goes
    # with every LLM request, so a server may bound it further (MAX_DESCRIPTION_CHARS).
    description: str | None = Field(default=None, max_length=2000)
    style: Style = Field(default_factory=Style)
    formats: list[Format | VideoKind] = Field(default_factory=lambda: ["srt"])
    # None (the defaults) is left out of what clients send, so workers older than it still
    # read their jobs.
    video: VideoOptions | None = None
    # Transcribe even when the video carries captions.
    force_asr: bool = False
    # A `CaptionTrack.id` from an earlier result, or "asr"; None lets the engine choose.
    caption_track: str | None = Field(default=None, max_length=200)
    # Captions keep their own timing; True re-cues them with the readability rules of `style`.
    recue_captions: bool = False
    # A subtitle file some of whose cues cannot be read is refused (translating it would lose
    # them); True goes on with the readable ones, and a notice says which were left out.
    skip_unreadable_cues: bool = False

    @model_validator(mode="after")
    def _speaker_bounds(self) -> JobSpec:
        if self.min_speakers and self.max_speakers and self.min_speakers > self.max_speakers:
            raise ValueError("min_speakers must not exceed max_speakers")
        return self

    @property
    def subtitle_formats(self) -> list[Format]:
        return [fmt for fmt in self.formats if fmt not in VIDEO_KINDS]  # type: ignore[misc]

    @property
    def video_kinds(self) -> list[VideoKind]:
        return [fmt for fmt in self.formats if fmt in VIDEO_KINDS]  # type: ignore[misc]


class Word(_Model):
    start: float
    end: float
    text: str
    probability: float | None = None


class Cue(_Model):
    id: int
    start: float
    end: float
    text: str
    translations: dict[str, str] = Field(default_factory=dict)
    # Target languages whose translation failed for this cue; it keeps its source text there.
    untranslated: list[str] = Field(default_factory=list)
    speaker: str | None = None
    words: list[Word] | None = None


class RenderedFile(_Model):
    format: Format
    filename: str
    content: str
    lang: str | None = None


class VideoFile(_Model):
    """A video a job made. Too big for an event: a server serves it at `url`."""

    kind: VideoKind
    filename: str
    size: int = Field(ge=0)
    url: str | None = None


class ProgressEvent(_Model):
    type: Literal["progress"] = "progress"
    stage: Stage
    percent: float = Field(ge=0, le=100)
    message: str = ""
    eta_s: float | None = None
    # A message the user must see whatever the display (a model replaced, no speech found, cues
    # left out, the caption track used): the CLI prints it as a lasting line, not in its bar.
    notice: bool = False
    # The spoken language, on the event that reports it (detected or given): a client that cuts
    # a long source into parts sends it with the other parts, so they do not detect it again.
    language: str | None = None


class CuesEvent(_Model):
    type: Literal["cues"] = "cues"
    cues: list[Cue]


class CaptionTrack(_Model):
    """A caption track the video offers; a job picks one by passing `id` as `caption_track`."""

    id: str
    lang: str
    name: str | None = None
    automatic: bool = False
    ext: str | None = None


# Why lines of a target language kept their source text: the service never answered in time
# (timeout), answered with errors or could not be reached (unavailable), its replies never
# carried the line (invalid) or carried it unchanged (unchanged); or no LLM was configured for a
# job that turned out to need one (no_model).
TranslationProblem = Literal["timeout", "unavailable", "invalid", "unchanged", "no_model"]


class TargetReport(_Model):
    """How the translation into one target language went."""

    translated: int = 0
    total: int = 0
    # The commonest reason why lines were kept in the source language; None when none were.
    reason: TranslationProblem | None = None
    # Share (0-1) of the translated cues within the style's line and reading-speed limits.
    within_limits: float | None = None

    @property
    def kept(self) -> int:
        return self.total - self.translated

    @property
    def failed(self) -> bool:
        """Nothing could be translated: the target gets no subtitle files."""
        return self.total > 0 and self.translated == 0

    @classmethod
    def combine(cls, reports: Sequence[TargetReport]) -> TargetReport:
        """One report for the parts of a file cut for parallel workers: counts summed, the
        reason of the part that kept most lines, the share within limits weighted by lines."""
        translated = sum(r.translated for r in reports)
        kept_most = max(reports, key=lambda r: r.kept, default=None)
        measured = [r for r in reports if r.within_limits is not None and r.translated]
        within = None
        if measured:
            weighted = sum((r.within_limits or 0.0) * r.translated for r in measured)
            within = weighted / sum(r.translated for r in measured)
        return cls(
            translated=translated,
            total=sum(r.total for r in reports),
            reason=kept_most.reason if kept_most and kept_most.kept else None,
            within_limits=within,
        )


class ResultEvent(_Model):
    type: Literal["result"] = "result"
    cues: list[Cue]
    language: str
    duration: float
    title: str | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    files: list[RenderedFile] = Field(default_factory=list)
    videos: list[VideoFile] = Field(default_factory=list)
    source: TextSource = "asr"
    # Every track the video offers (empty for files), and the id of the one used, if any.
    caption_tracks: list[CaptionTrack] = Field(default_factory=list)
    caption_track: str | None = None
    # Per target language translated (not one the video already was in): lines translated and
    # kept. A backend that predates this field sends none, and every target counts as written.
    targets: dict[str, TargetReport] = Field(default_factory=dict)
    # Speaker label (as the cues carry it) -> its voice, a unit embedding rounded to a few
    # decimals: a client that cut the source into parts links labels across them by these.
    speakers: dict[str, list[float]] = Field(default_factory=dict)
    # A result too big for one RunPod stream chunk travels slim: `cues` empty, its cues sent
    # before it in `cues` events, and here their ids in the result's order (each at its last
    # streamed version). None: `cues` is complete. `engine.chunks.Reassembler` restores it.
    streamed_cue_ids: list[int] | None = None


class ErrorEvent(_Model):
    type: Literal["error"] = "error"
    code: ErrorCode
    message: str
    hint: str | None = None


Event = Annotated[ProgressEvent | CuesEvent | ResultEvent | ErrorEvent, Field(discriminator="type")]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def parse_event(data: str | bytes | dict) -> Event:
    """Read one Event from its JSON text or its decoded dict."""
    if isinstance(data, dict):
        return EVENT_ADAPTER.validate_python(data)
    return EVENT_ADAPTER.validate_json(data)


def validation_problems(exc: ValidationError) -> list[str]:
    """Each problem of a validation error as "field.path: message". The input itself is never
    echoed: it may hold an API key. ("body" is the request body in FastAPI's locations.)"""
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        problems.append(f"{where}: {error['msg']}" if where else str(error["msg"]))
    return problems


class SubtideError(Exception):
    """A failure the user can act on: it becomes an `error` Event, never a traceback."""

    def __init__(self, code: ErrorCode, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message
        self.hint = hint

    def to_event(self) -> ErrorEvent:
        return ErrorEvent(code=self.code, message=self.message, hint=self.hint)


class Health(_Model):
    ok: bool
    version: str
    device: str | None = None
    model: str | None = None
    message: str = ""


@runtime_checkable
class Backend(Protocol):
    def run(self, job: JobSpec) -> Iterator[Event]: ...

    def health(self) -> Health: ...

    def cancel(self) -> None: ...
