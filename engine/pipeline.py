"""`Engine.run(job)`: the stages in order, yielding Events as the work goes."""

from __future__ import annotations

import dataclasses
import logging
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from importlib import metadata
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from engine import captions, media, outcome
from engine.asr import (
    DecodeOptions,
    Lull,
    ModelChoice,
    Segment,
    Transcriber,
    TranscriptInfo,
    decoding_setup,
    resolve_model,
)
from engine.cache import Cache, CacheLimits
from engine.cues import CueBuilder
from engine.diarize import Diarization, Diarizer, SpeakerTrack, Turn, VoiceDiarizer
from engine.ffmpeg import require_file
from engine.formats import SUBTITLE_SUFFIXES, file_stem, read_subtitles, render_files
from engine.hallucination import HallucinationFilter
from engine.journal import Journal
from engine.languages import check_spoken, check_target, language_name, same_language
from engine.protocol import (
    RETRY_HINT,
    CaptionTrack,
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
    TextSource,
    TranslationConfig,
)
from engine.stop import Stop, stopped_if
from engine.translate import LLMConfig, TranslateOptions, Translator
from engine.translations import Translations
from engine.url_guard import UrlGuard

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)
T = TypeVar("T")
SAMPLE_RATE = 16000
# Where each stage sits on the job's 0-100 scale; transcription is most of the work, and
# translation, which mostly runs beside it, takes the end of its share.
_SPAN: dict[Stage, tuple[float, float]] = {
    "queued": (0, 0),
    "download": (0, 10),
    "decode": (10, 15),
    "transcribe": (15, 95),
    "translate": (80, 95),
    "finalize": (95, 100),
}
_SPAN_TRANSLATING: dict[Stage, tuple[float, float]] = {**_SPAN, "transcribe": (15, 80)}
# Decoded audio this much shorter than the file says (seconds, or share of its duration, the
# larger) means the file was cut short.
_CUT_SHORT_S = 1.0
_CUT_SHORT_SHARE = 0.05
# How often the cue loop wakes while Whisper decodes a batch, to send translations on.
_HEARTBEAT_S = 0.5
# OpenAI's own API needs a model name; this is a cheap, capable default there.
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"


@dataclass
class EngineOptions:
    # Off (ENABLE_WHISPER=false): only a video's own captions and subtitle files are used.
    whisper_enabled: bool = True
    whisper_model: str = "bundled"
    device: str = "auto"
    compute_type: str = "auto"
    cpu_threads: int = 0
    batch_size: int = 0  # 0: chosen for the device (engine.asr)
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "subtide")
    cache_limits: CacheLimits = field(default_factory=CacheLimits)
    use_cache: bool = True
    allow_private_urls: bool = False
    # The server's own LLM; a job's `translation` overrides it field by field.
    llm: TranslationConfig = field(default_factory=TranslationConfig)
    llm_timeout: float = 60.0
    translate: TranslateOptions = field(default_factory=TranslateOptions)
    diarization_enabled: bool = True
    # A hub id (needs hf_token) or a local pipeline folder; "auto" prefers it when usable.
    diarization_pipeline: str = "pyannote/speaker-diarization-community-1"
    hf_token: str | None = field(default=None, repr=False)


class _Progress:
    """Turns stage fractions into one percent that never goes down, with an ETA."""

    def __init__(self, spans: dict[Stage, tuple[float, float]] = _SPAN) -> None:
        self._spans = spans
        self.percent = 0.0
        self._stage: Stage | None = None
        self._stage_started = time.monotonic()

    def event(
        self,
        stage: Stage,
        fraction: float = 0.0,
        message: str = "",
        *,
        notice: bool = False,
        language: str | None = None,
    ) -> ProgressEvent:
        if stage != self._stage:
            self._stage, self._stage_started = stage, time.monotonic()
        low, high = self._spans[stage]
        fraction = min(max(fraction, 0.0), 1.0)
        self.percent = max(self.percent, low + (high - low) * fraction)
        return ProgressEvent(
            stage=stage,
            percent=round(self.percent, 2),
            message=message,
            eta_s=self._eta(fraction),
            notice=notice,
            language=language,
        )

    def note(self, message: str, *, notice: bool = False) -> ProgressEvent:
        """A message that moves nothing: same stage, same percent. A notice is one the user
        must see (a model replaced, cues left out, no speech found), whatever the display."""
        return ProgressEvent(
            stage=self._stage or "queued", percent=self.percent, message=message, notice=notice
        )

    def _eta(self, fraction: float) -> float | None:
        if not 0.02 <= fraction < 1.0:
            return None
        spent = time.monotonic() - self._stage_started
        return round(spent / fraction * (1.0 - fraction), 1)


class Engine:
    """The local pipeline; implements `engine.protocol.Backend`."""

    def __init__(self, options: EngineOptions | None = None) -> None:
        self.options = options or EngineOptions()
        self.cache = Cache(self.options.cache_dir, self.options.cache_limits)
        self._cancel = threading.Event()
        self._model_lock = threading.Lock()
        self._transcriber: Transcriber | None = None
        self._diarizers: dict[str, Diarizer] = {}

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def loaded_model(self) -> str | None:
        """The Whisper model in memory, if one was loaded (captions never load one)."""
        current = self._transcriber
        return current.name if current else None

    def warm(self) -> None:
        """Loads the default Whisper model now, so the first job does not wait for it."""
        if not self.options.whisper_enabled:
            return
        self._load(self._resolve_model(self.options.whisper_model))

    def _resolve_model(self, spec: str) -> ModelChoice:
        # Offline, a model from the hub falls back to the configured one where that is bundled.
        models = self.options.cache_dir / "models"
        return resolve_model(spec, models, fallback=self.options.whisper_model)

    def health(self) -> Health:
        return Health(
            ok=True,
            version=engine_version(),
            device=decoding_setup(
                self.options.device,
                self.options.compute_type,
                self.options.cpu_threads,
                self.options.batch_size,
                self.options.whisper_model,
            ).describe(),
            model=self.options.whisper_model,
        )

    def run(self, job: JobSpec) -> Iterator[Event]:
        try:
            yield from self._run(job)
        except SubtideError as exc:
            yield exc.to_event()
        except Exception:
            # The user gets a plain message; the traceback goes to the log only.
            log.exception("internal error while processing %s", job.source.label)
            yield ErrorEvent(
                code="internal",
                message="Subtide hit an unexpected error and stopped this job.",
                hint=RETRY_HINT,
            )
        finally:
            # Cleared when a job ends, not when it starts: a cancel that comes before the
            # job's first step still stops it.
            self._cancel.clear()

    def _run(self, job: JobSpec) -> Iterator[Event]:
        job = _checked_languages(job)
        llm = self._llm_for(job)
        progress = _Progress(_SPAN_TRANSLATING if llm else _SPAN)
        timings: dict[str, float] = {}
        started = time.monotonic()
        yield progress.event("queued", message="Starting")
        if self.options.use_cache:
            self.cache.maybe_cleanup()
        with ExitStack() as stack:
            translator = None
            if llm:
                options = dataclasses.replace(
                    self.options.translate,
                    glossary=job.glossary,
                    description=job.description,
                    style=job.style,
                )
                cache = self.cache if self.options.use_cache else None
                translator = stack.enter_context(Translator(llm, options, cache))
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="subtide-")))
            mark = time.monotonic()
            listing = yield from self._listing(job.source, progress)
            found = None
            # A range is a part of a long link shared out among workers: it is transcribed
            # (the video's captions cover the whole video, not the range).
            if listing and not job.source.ranged:
                found = yield from self._captions(job, listing, progress)
            if listing and found:
                text = yield from self._caption_text(job, found, listing, progress, translator)
                timings["captions"] = time.monotonic() - mark
            else:
                if job.source.url:
                    self._require_whisper(job)  # before a download that would be for nothing
                download = yield from self._fetch(job.source, work, progress, listing)
                timings["download"] = time.monotonic() - mark
                try:
                    text = yield from self._text_of(
                        job, download, listing, progress, translator, timings
                    )
                except SubtideError as exc:
                    raise _as_given(exc, download.path, job.source) from None
            mark = time.monotonic()
            yield from self._finish_translations(text.translations, progress)
            if text.translations.targets:
                timings["translate"] = time.monotonic() - mark
        cues = text.translations.cues()
        reports = text.translations.report()
        yield from _outcome_notes(reports, text.language, progress)

        mark = time.monotonic()
        yield progress.event("finalize", message="Writing subtitles")
        files = render_files(
            cues,
            job.subtitle_formats,
            stem=file_stem(job.source, text.title),
            language=text.language,
            # A target where nothing could be translated gets no files: they would hold the
            # source text under a translation's name.
            target_langs=outcome.written(reports, text.translations.targets),
            style=job.style,
            title=text.title,
            duration=text.duration,
            source=text.source,
        )
        timings["finalize"] = time.monotonic() - mark
        timings["total"] = time.monotonic() - started
        yield progress.event("finalize", 1.0, message="Done")
        yield ResultEvent(
            cues=cues,
            language=text.language,
            duration=text.duration,
            title=text.title,
            timings={k: round(v, 3) for k, v in timings.items()},
            files=files,
            source=text.source,
            caption_tracks=[t.info for t in listing.tracks] if listing else [],
            caption_track=text.track_id,
            targets=reports,
            speakers=text.speakers,
        )

    def _text_of(
        self,
        job: JobSpec,
        download: media.Download,
        listing: _Listing | None,
        progress: _Progress,
        translator: Translator | None,
        timings: dict[str, float],
    ) -> Generator[Event, None, _Text]:
        """The cues of a downloaded or local source: a subtitle file read, or audio transcribed."""
        named = job.source.title or download.title or (listing.title if listing else None)
        # A local file's name is its title, as a link's page title is the link's.
        title = named or (Path(job.source.path).stem if job.source.path else None)
        mark = time.monotonic()
        if download.path.suffix.lower() in SUBTITLE_SUFFIXES:
            return (yield from self._subtitle_text(job, download.path, title, progress, translator))
        self._require_whisper(job)
        diarizer = yield from self._diarizer_for(job, progress)
        yield progress.event("decode", message="Reading the audio")
        start, end = job.source.start, job.source.end
        if download.whole_s is None:
            # The whole media is here (see `_fetch`): only the range is decoded, and
            # transcribing it is the work that a part saves.
            probed, audio = media.probe_and_decode(download.path, SAMPLE_RATE, start=start, end=end)
            expected = _range_length(probed.audio_duration, start, end)
        else:  # only the range was fetched: the file is the range
            _, audio = media.probe_and_decode(download.path, SAMPLE_RATE)
            expected = _range_length(download.whole_s, start, end)
        timings["decode"] = time.monotonic() - mark
        duration = len(audio) / SAMPLE_RATE
        if duration < 0.1:
            raise SubtideError("bad_input", f"{job.source.label} contains no audible audio.")
        # An upload's file is named by its hash: the title says more.
        shown = named or download.path.name
        if _cut_short(duration, expected):
            yield progress.note(
                f"Only {duration:.1f} s of {expected:.1f} s of {shown} "
                "could be decoded: the file looks cut short. "
                "The subtitles cover the part that could be read.",
                notice=True,
            )
        mark = time.monotonic()
        track = _speaker_track(diarizer, job, audio) if diarizer else None
        try:
            language, translations = yield from self._transcribe(
                job, audio, title, progress, translator, track
            )
        finally:
            if track:  # a job that stopped early stops its diarization too
                track.close()
        timings["transcribe"] = time.monotonic() - mark
        if not translations.cues():
            yield progress.note(
                f"No speech was found in {shown} (silence, music or noise?): "
                "the subtitle files are written, empty.",
                notice=True,
            )
        speakers = track.voices() if track else {}
        return _Text(translations, language, duration, title, "asr", speakers=speakers)

    def _subtitle_text(
        self,
        job: JobSpec,
        path: Path,
        title: str | None,
        progress: _Progress,
        translator: Translator | None,
    ) -> Generator[Event, None, _Text]:
        yield progress.event("decode", message="Reading the subtitles")
        if job.diarize != "off":
            yield progress.note(
                "Speaker labels need audio: skipped for a subtitle file.", notice=True
            )
        cues = yield from _readable_cues(job, path, progress)
        language = job.source_lang or "und"
        translations = yield from self._translations(translator, job, language, progress)
        translations.add(cues)
        yield CuesEvent(cues=cues)
        duration = max(c.end for c in cues)
        # A subtitle file is existing captions, not speech recognition.
        return _Text(translations, language, duration, title, "captions-manual")

    def _require_whisper(self, job: JobSpec) -> None:
        if self.options.whisper_enabled:
            return
        asked = job.force_asr or job.caption_track == captions.ASR
        reason = (
            "so it can't transcribe as asked"
            if asked
            else (f"and {job.source.label} has no captions Subtide can use")
        )
        raise SubtideError(
            "model_unavailable",
            f"Transcription is turned off on this server, {reason}.",
            hint="Use a video that has captions, or ask the operator to set ENABLE_WHISPER=true.",
        )

    # --- the video's own captions -----------------------------------------------------------

    def _listing(
        self, source: Source, progress: _Progress
    ) -> Generator[Event, None, _Listing | None]:
        """What a link offers (title, caption tracks), read once; the download reuses it."""
        if not source.url:
            return None
        url = str(source.url)
        yield progress.event("download", message=f"Looking at {media.host_label(url)}")

        def extract(_report: Callable[[float], None]) -> dict[str, Any]:
            return media.extract(url, allow_private=self.options.allow_private_urls)

        info = yield from self._with_progress(extract, "download", progress)
        return _Listing(info, captions.list_tracks(info))

    def _captions(
        self, job: JobSpec, listing: _Listing, progress: _Progress
    ) -> Generator[Event, None, _Found | None]:
        """The video's own captions, or None to transcribe.

        A track that can't be fetched or read is reported and the next choice is tried; when
        none is left, Whisper transcribes."""
        if job.force_asr or job.caption_track == captions.ASR:
            return None
        remaining = list(listing.tracks)
        track = yield from self._picked(job, remaining, listing, progress)
        while track is not None:
            remaining.remove(track)
            try:
                found = yield from self._read_track(job, track, progress)
            except SubtideError as exc:
                if exc.code == "cancelled":
                    raise
                fallback = "Trying another track." if remaining else "Transcribing instead."
                yield progress.note(
                    f"The {track.info.name} captions can't be used: {exc.message} {fallback}",
                    notice=True,
                )
                track = self._choose(job, remaining, listing)
                continue
            return found
        return None

    def _picked(
        self, job: JobSpec, tracks: list[captions.Track], listing: _Listing, progress: _Progress
    ) -> Generator[Event, None, captions.Track | None]:
        """The track the job names, else the engine's choice."""
        if job.caption_track:
            picked = captions.find(tracks, job.caption_track)
            if picked:
                return picked
            yield progress.note(
                f"This video has no caption track '{job.caption_track}'; choosing one instead.",
                notice=True,
            )
        return self._choose(job, tracks, listing)

    def _choose(
        self, job: JobSpec, tracks: list[captions.Track], listing: _Listing
    ) -> captions.Track | None:
        spoken = job.source_lang or listing.language
        return captions.choose(
            tracks,
            targets=job.target_langs,
            spoken=spoken,
            whisper_enabled=self.options.whisper_enabled,
        )

    def _read_track(
        self, job: JobSpec, track: captions.Track, progress: _Progress
    ) -> Generator[Event, None, _Found]:
        yield progress.event("download", 0.5, message=f"Fetching the {track.info.name} captions")
        raw = track.data or media.fetch_bytes(
            str(track.url),
            allow_private=self.options.allow_private_urls,
            headers=track.headers,
            impersonate=track.impersonate,
        )
        self._check_cancel()
        read = captions.read_captions(raw, str(track.info.ext), automatic=track.automatic)
        language, relabelled = captions.checked_language(track.info.lang, read.cues)
        for note in [*read.notes, *([relabelled] if relabelled else [])]:
            yield progress.note(note, notice=True)
        kind = "automatic " if track.automatic else ""
        yield progress.event(
            "decode",
            1.0,
            message=f"Using the video's {kind}{language_name(language)} captions",
            notice=True,
        )
        if job.diarize != "off":
            yield progress.note(
                "Speaker labels come from the audio, which captions don't need: not added. "
                "Speaker names the captions carry are kept.",
                notice=True,
            )
        cues = captions.recue(read.cues, job.style, language) if job.recue_captions else read.cues
        return _Found(track.info, cues, language)

    def _caption_text(
        self,
        job: JobSpec,
        found: _Found,
        listing: _Listing,
        progress: _Progress,
        translator: Translator | None,
    ) -> Generator[Event, None, _Text]:
        translations = yield from self._translations(translator, job, found.language, progress)
        translations.add(found.cues)
        yield CuesEvent(cues=found.cues)
        return _Text(
            translations=translations,
            language=found.language,
            # Captions need no download: the site's duration, else where the captions end.
            duration=listing.duration or max(c.end for c in found.cues),
            title=job.source.title or listing.title,
            source="captions-auto" if found.track.automatic else "captions-manual",
            track_id=found.track.id,
        )

    def _diarizer_for(
        self, job: JobSpec, progress: _Progress
    ) -> Generator[Event, None, Diarizer | None]:
        """The backend a job asked for, loaded before transcription so a bad setup fails fast.

        `auto` takes pyannote when a token or a local pipeline is configured, and falls back
        to the built-in model (saying why) when pyannote can't be used."""
        if job.diarize == "off":
            return None
        if not self.options.diarization_enabled:
            raise SubtideError(
                "bad_input",
                "Speaker labelling is turned off on this server.",
                hint="Set diarize to 'off', or ask the operator to set ENABLE_DIARIZATION=true.",
            )
        wants_pyannote = job.diarize == "pyannote" or (
            job.diarize == "auto" and self._pyannote_configured()
        )
        if wants_pyannote:
            yield progress.note("Loading the pyannote speaker model")
            try:
                return self._diarizer("pyannote")
            except SubtideError as exc:
                if job.diarize == "pyannote":
                    raise
                yield progress.note(
                    f"{exc.message} Using the built-in speaker model instead.", notice=True
                )
        return self._diarizer("builtin")

    def _pyannote_configured(self) -> bool:
        return bool(self.options.hf_token) or Path(self.options.diarization_pipeline).is_dir()

    def _diarizer(self, backend: str) -> Diarizer:
        with self._model_lock:
            if backend not in self._diarizers:
                if backend == "pyannote":
                    from engine.diarize_pyannote import PyannoteDiarizer

                    self._diarizers[backend] = PyannoteDiarizer(
                        self.options.diarization_pipeline,
                        token=self.options.hf_token,
                        device=self.options.device,
                    )
                else:
                    from engine.diarize_builtin import BuiltinDiarizer

                    self._diarizers[backend] = BuiltinDiarizer()
            return self._diarizers[backend]

    def _llm_for(self, job: JobSpec) -> LLMConfig | None:
        """The LLM a job translates with: its own settings over the server's, checked early."""
        if not job.target_langs:
            return None
        server, asked = self.options.llm, job.translation or TranslationConfig()
        own_server = not asked.base_url or asked.base_url == server.base_url
        guard = None
        if not own_server:
            # A job may point at any URL: the server's key never goes to it, nor may it reach
            # into a private network when the engine serves others, then or at any connection.
            checked = UrlGuard(allow_private=self.options.allow_private_urls)
            checked.check_url(str(asked.base_url))
            # A desktop's LLM may sit behind a proxy of its environment: pinned on servers only.
            guard = None if checked.allow_private else checked
        base_url = asked.base_url or server.base_url
        api_key = asked.api_key or (server.api_key if own_server else None)
        model = asked.model or server.model or (None if base_url else DEFAULT_OPENAI_MODEL)
        if not base_url and not api_key:
            if not _surely_translates(job):
                # The video's captions or its spoken language may cover every target: decided
                # once they are known, and a target that does need one fails alone.
                return None
            raise SubtideError(
                "bad_input",
                "Translation needs an LLM, and none is configured.",
                hint="Set SERVER_API_KEY (and SERVER_API_URL for a server other than OpenAI), "
                "or pass --llm-url / --llm-key; Ollama or LM Studio need only the URL and model.",
            )
        if not model:
            raise SubtideError(
                "bad_input",
                f"Name the model to translate with on {media.host_label(base_url or '')}.",
                hint="Set SERVER_MODEL or pass --llm-model (e.g. llama3.1 for Ollama).",
            )
        return LLMConfig(
            model=model,
            base_url=base_url,
            api_key=api_key,
            timeout=self.options.llm_timeout,
            guard=guard,
        )

    def _translations(
        self, translator: Translator | None, job: JobSpec, language: str, progress: _Progress
    ) -> Generator[Event, None, Translations]:
        targets = [t for t in job.target_langs if not same_language(t, language)]
        for skipped in dict.fromkeys(t for t in job.target_langs if t not in targets):
            yield progress.note(
                f"The video is already in {skipped}: no translation needed.", notice=True
            )
        return Translations(translator, targets, None if language == "und" else language, job.style)

    def _finish_translations(
        self, translations: Translations, progress: _Progress
    ) -> Iterator[Event]:
        if not translations.targets:
            return
        yield progress.event(
            "translate", translations.fraction_done, message="Translating the rest"
        )
        try:
            for updated in translations.drain():
                self._check_cancel()
                if updated:
                    yield CuesEvent(cues=updated)
                yield _translating(translations, progress)
        finally:
            translations.cancel()

    def _fetch(
        self, source: Source, work: Path, progress: _Progress, listing: _Listing | None
    ) -> Generator[Event, None, media.Download]:
        if source.path:
            path = Path(source.path).expanduser()
            # Here, before any model loads: a named pipe would otherwise hang the first read.
            subtitles = path.suffix.lower() in SUBTITLE_SUFFIXES
            require_file(path, "subtitle file" if subtitles else "media file")
            return media.Download(path, source.title)
        if source.audio_b64:
            return media.Download(media.write_audio_b64(source.audio_b64, work), source.title)
        url = str(source.url)
        cached = self.cache.get_audio(url) if self.options.use_cache else None
        if cached:
            yield progress.event("download", 1.0, message="Using the cached download")
            return cached
        yield progress.event("download", message=f"Downloading from {media.host_label(url)}")
        if source.ranged:
            part = yield from self._fetch_range(source, work, progress, listing)
            if part is not None:
                return part

        # The whole media: a link, or a range whose media can't be read by range (see
        # `_fetch_range`), of which `_text_of` decodes only the range; a worker given more
        # ranges of such a link then downloads it once (the cache).
        def fetch(report: Callable[[float], None]) -> media.Download:
            return media.download(
                url,
                work,
                allow_private=self.options.allow_private_urls,
                on_progress=report,
                info=listing.info if listing else None,
            )

        download = yield from self._with_progress(fetch, "download", progress)
        return self.cache.put_audio(url, download) if self.options.use_cache else download

    def _fetch_range(
        self, source: Source, work: Path, progress: _Progress, listing: _Listing | None
    ) -> Generator[Event, None, media.Download | None]:
        """Only the range of a link, read through the guarded relay (media.download_range):
        about the range's bytes, not the whole media's. None when the media can't be read by
        range (HLS or DASH fragments, a server that ignores Range)."""

        def fetch(report: Callable[[float], None]) -> media.Download | None:
            return media.download_range(
                str(source.url),
                work,
                start=source.start,
                end=source.end,
                allow_private=self.options.allow_private_urls,
                on_progress=report,  # called every quarter second, so a cancel stops the read
                info=listing.info if listing else None,
            )

        part = yield from self._with_progress(fetch, "download", progress)
        if part is None:
            yield progress.note("This link can't be read by time range: downloading it whole")
        return part

    def _with_progress(
        self, work: Callable[[Callable[[float], None]], T], stage: Stage, progress: _Progress
    ) -> Generator[Event, None, T]:
        """Runs blocking work in a thread and turns its progress reports into Events."""
        reports: queue.Queue[float] = queue.Queue()
        outcome: dict[str, object] = {}

        def report(fraction: float) -> None:
            stopped_if(self._cancel.is_set)
            reports.put(fraction)

        def target() -> None:
            try:
                outcome["value"] = work(report)
            except BaseException as exc:
                outcome["error"] = exc

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        while thread.is_alive() or not reports.empty():
            try:
                fraction = reports.get(timeout=0.25)
            except queue.Empty:
                continue
            yield progress.event(stage, fraction, message=f"{stage.capitalize()}: {fraction:.0%}")
        if "error" in outcome:
            raise outcome["error"]  # type: ignore[misc]
        self._check_cancel()
        return outcome["value"]  # type: ignore[return-value]

    def _transcribe(
        self,
        job: JobSpec,
        audio: np.ndarray,
        title: str | None,
        progress: _Progress,
        translator: Translator | None,
        track: SpeakerTrack | None,
    ) -> Generator[Event, None, tuple[str, Translations]]:
        duration = len(audio) / SAMPLE_RATE
        # A video's title primes Whisper with its names and terms; a file's name (an upload, a
        # part of a file cut for parallel workers) says little and can cost punctuation, so a
        # file transcribes the same wherever it runs.
        prompt = title if job.source.url else None
        options = DecodeOptions(language=job.source_lang, initial_prompt=prompt)
        yield progress.event("transcribe", message="Preparing the speech model")
        choice = self._resolve_model(job.whisper_model or self.options.whisper_model)
        if choice.notice:
            yield progress.event("transcribe", message=choice.notice, notice=True)
        key = Cache.transcript_key(audio, choice.name, options)
        cached = self.cache.get_transcript(key) if self.options.use_cache else None
        if cached:
            yield progress.event("transcribe", message="Using the cached transcript")
            info, segments, fresh = cached[0], iter(cached[1]), False
        else:
            transcriber = self._load(choice)
            journal = self.cache.journal(key) if self.options.use_cache else None
            info, decoded = yield from self._decode(transcriber, audio, options, journal, progress)
            segments, fresh = HallucinationFilter()(decoded), True
        yield progress.event(
            "transcribe", message=_language_message(job, info), language=info.language
        )

        translations = yield from self._translations(translator, job, info.language, progress)
        emitter = _Emitter(translations, track, info.language)
        builder = CueBuilder(job.style, info.language)
        kept: list[Segment] = []
        for segment in segments:
            self._check_cancel()
            if isinstance(segment, Lull):  # still decoding: what is settled goes out meanwhile
                yield from emitter.push(builder.quiet_until(segment.until))
                continue
            kept.append(segment)
            yield from emitter.push(builder.add(segment.words))
            yield progress.event(
                "transcribe",
                segment.end / duration if duration else 1.0,
                message=f"Transcribed {_clock(segment.end)} of {_clock(duration)}",
            )
        yield from emitter.push([_clamp(cue, duration) for cue in builder.finish()])
        if track and not track.ready:
            yield progress.note("Waiting for the speaker labels")
            while not track.wait(timeout=0.25):
                self._check_cancel()
        yield from emitter.push([])
        if track:
            yield progress.note(f"Speakers: {emitter.speaker_count}")
        if fresh and self.options.use_cache:
            self.cache.put_transcript(key, info, kept)
            self.cache.journal(key).remove()  # the checkpoint became the cache entry
        return info.language, translations

    def _decode(
        self,
        transcriber: Transcriber,
        audio: np.ndarray,
        options: DecodeOptions,
        journal: Journal | None,
        progress: _Progress,
    ) -> Generator[Event, None, tuple[TranscriptInfo, Iterator[Segment | Lull]]]:
        """Decoded segments, journaled as they come, with Lulls while a batch decodes; a
        journal left by a run that died is taken up where it stopped. The model's process is
        killed by a stop: heard while it loads, runs the VAD or decodes a batch."""
        stop = self._cancel.is_set
        checkpoint = journal.checkpoint() if journal else None
        if checkpoint is None:
            yield progress.event(
                "transcribe",
                message=f"Transcribing with {transcriber.name} on {transcriber.setup.describe()}",
            )
            info, decoded = transcriber.transcribe(audio, options, stop, heartbeat_s=_HEARTBEAT_S)
            done: list[Segment] = []
        else:
            at, total = _clock(checkpoint.at), _clock(checkpoint.info.duration)
            yield progress.event("transcribe", message=f"Resuming at {at} of {total}", notice=True)
            known = dataclasses.replace(options, language=checkpoint.info.language)
            last = next((s.words[-1] for s in reversed(checkpoint.segments) if s.words), None)
            _, decoded = transcriber.transcribe(
                audio,
                known,
                stop,
                resume_seek=checkpoint.seek,
                heartbeat_s=_HEARTBEAT_S,
                resume_after=last,
            )
            info, done = checkpoint.info, checkpoint.segments
        if journal is None:
            return info, decoded
        journal.start(info, done)
        return info, chain(done, _journaled(decoded, journal))

    def _load(self, choice: ModelChoice) -> Transcriber:
        """Loads a model once and keeps it; a different model replaces it (memory is finite)."""
        with self._model_lock:
            current = self._transcriber
            if current is None or current.name != choice.name:
                if current:
                    current.close()
                self._transcriber = None
                current = Transcriber(
                    choice,
                    device=self.options.device,
                    compute_type=self.options.compute_type,
                    cpu_threads=self.options.cpu_threads,
                    batch_size=self.options.batch_size,
                    stop=self._cancel.is_set,
                )
                self._transcriber = current
            return current

    def _check_cancel(self) -> None:
        stopped_if(self._cancel.is_set)


@dataclass(frozen=True)
class _Listing:
    """What yt-dlp found behind a link, read once for the captions and the download."""

    info: dict[str, Any]
    tracks: list[captions.Track]

    @property
    def title(self) -> str | None:
        return self.info.get("title")

    @property
    def duration(self) -> float | None:
        duration = self.info.get("duration")
        return float(duration) if isinstance(duration, int | float) and duration > 0 else None

    @property
    def language(self) -> str | None:
        """The spoken language when the site says it (YouTube does)."""
        return self.info.get("language") or None


@dataclass(frozen=True)
class _Found:
    track: CaptionTrack
    cues: list[Cue]
    language: str


@dataclass(frozen=True)
class _Text:
    """A job's text, wherever it came from, with its translations under way."""

    translations: Translations
    language: str
    duration: float
    title: str | None
    source: TextSource
    track_id: str | None = None
    speakers: dict[str, list[float]] = field(default_factory=dict)


class _Emitter:
    """Sends finished cues on: speaker labels (held back until diarization is done), ids in
    order, translation, and the events; translations that came in follow."""

    def __init__(
        self, translations: Translations, track: SpeakerTrack | None, language: str
    ) -> None:
        self._translations, self._track, self._language = translations, track, language
        self._held: list[Cue] = []
        self._next_id = 1
        self._speakers: set[str] = set()

    @property
    def speaker_count(self) -> int:
        return len(self._speakers)

    def push(self, ready: list[Cue]) -> Iterator[Event]:
        self._held.extend(ready)
        if self._held and (self._track is None or self._track.ready):
            cues = self._held
            self._held = []
            if self._track:
                cues = self._track.label(cues, self._language)
                self._speakers.update(c.speaker for c in cues if c.speaker)
            cues = [c.model_copy(update={"id": self._next_id + i}) for i, c in enumerate(cues)]
            self._next_id += len(cues)
            self._translations.add(cues)
            yield CuesEvent(cues=cues)
        updated = self._translations.updates()
        if updated:
            yield CuesEvent(cues=updated)


def _translating(translations: Translations, progress: _Progress) -> ProgressEvent:
    """ "Translated 120 of 400 lines (de, fr) — about 2 min left": the time left from the rate
    lines have finished at, not from the stage's share of the job's percent."""
    eta = translations.eta_s()
    left = f" — {_time_left(eta)}" if eta is not None else ""
    message = (
        f"Translated {translations.finished_lines} of {translations.expected_lines} lines "
        f"({', '.join(translations.targets)}){left}"
    )
    event = progress.event("translate", translations.fraction_done, message=message)
    return event.model_copy(update={"eta_s": eta})


def _time_left(seconds: float) -> str:
    if seconds < 60:
        return "under a minute left"
    return f"about {round(seconds / 60)} min left"


def _outcome_notes(
    reports: dict[str, TargetReport], language: str, progress: _Progress
) -> Iterator[Event]:
    """What each target came to. Lines kept in the source language are a passing message: the
    result's `targets` carry them to every front end, which words its own lasting warning
    (the CLI names the files written). How well the translations fit is a notice when some
    cues are outside the limits: a lasting line each run that says all is well is noise."""
    for lang, report in reports.items():
        if report.failed:
            yield progress.note(outcome.failure_message(lang, report)[0])
        elif report.kept:
            yield progress.note(outcome.kept_message(lang, report, language))
        fit = outcome.fit_message(lang, report)
        if fit:
            yield progress.note(fit, notice=(report.within_limits or 0.0) < 1.0)


def _checked_languages(job: JobSpec) -> JobSpec:
    """The job with its language codes checked and spelled as usual, before any work: a code
    Whisper does not know would otherwise fail deep inside it, after the download."""
    # A subtitle file's language is read, not heard: any language a translation can be in.
    check_source = check_target if _is_subtitle_file(job.source) else check_spoken
    return job.model_copy(
        update={
            "source_lang": check_source(job.source_lang) if job.source_lang else None,
            "target_langs": list(dict.fromkeys(check_target(t) for t in job.target_langs)),
        }
    )


def _is_subtitle_file(source: Source) -> bool:
    return source.path is not None and Path(source.path).suffix.lower() in SUBTITLE_SUFFIXES


def _surely_translates(job: JobSpec) -> bool:
    """Whether the job needs an LLM whatever it finds. A file or an upload has no caption
    tracks, so only its language can spare a target: known when given, and a subtitle file's is
    never detected. A link may carry a caption track in each target."""
    if job.source.url:
        return False
    if job.source_lang:
        return any(not same_language(t, job.source_lang) for t in job.target_langs)
    return _is_subtitle_file(job.source)


def _readable_cues(
    job: JobSpec, path: Path, progress: _Progress
) -> Generator[Event, None, list[Cue]]:
    """A subtitle file's cues. One that cannot be read is never dropped unasked: translating
    the rest would write a shorter file that looks complete."""
    parsed = read_subtitles(path)
    if not parsed.unreadable:
        return parsed.cues
    problem = parsed.problem(path.name)
    if not (job.skip_unreadable_cues and parsed.cues):
        hint = "Fix them, or pass --force to go on without them."
        raise SubtideError("bad_input", f"{problem}.", hint=hint if parsed.cues else "Fix them.")
    yield progress.note(f"{problem}; going on without them.", notice=True)
    return parsed.cues


def _as_given(exc: SubtideError, path: Path, source: Source) -> SubtideError:
    """The error with a downloaded or uploaded file named as the user gave it: our temporary
    name (media.unknown_video, upload-3f2a…) means nothing to them."""
    if source.path:
        return exc
    given = media.shown_url(source.url) if source.url else "the uploaded audio"
    message = exc.message.replace(path.name, given)
    hint = exc.hint.replace(path.name, given) if exc.hint else None
    return SubtideError(exc.code, message, hint)


def _range_length(whole: float, start: float | None, end: float | None) -> float:
    """How much audio a range of a file of `whole` seconds holds."""
    return max(min(whole, end if end is not None else whole) - (start or 0.0), 0.0)


def _cut_short(decoded: float, expected: float) -> bool:
    """Whether the audio decoded ends well before the duration the file's header states (a
    download or copy that stopped part way); headers and decoders differ by a frame or so."""
    return expected > 0 and expected - decoded > max(_CUT_SHORT_S, _CUT_SHORT_SHARE * expected)


def _speaker_track(diarizer: Diarizer, job: JobSpec, audio: np.ndarray) -> SpeakerTrack:
    counts = {
        "num_speakers": job.num_speakers,
        "min_speakers": job.min_speakers,
        "max_speakers": job.max_speakers,
    }

    def run(stop: Stop) -> Diarization | list[Turn]:
        if isinstance(diarizer, VoiceDiarizer):
            return diarizer.diarize_voices(audio, **counts, stop=stop)
        return diarizer.diarize(audio, **counts, stop=stop)

    return SpeakerTrack(run, job.speaker_names, job.style)


def _language_message(job: JobSpec, info: TranscriptInfo) -> str:
    if job.source_lang:
        return f"Language: {job.source_lang} (as given)"
    return f"Detected language: {info.language} ({info.language_probability:.0%})"


def _clamp(cue: Cue, duration: float) -> Cue:
    if cue.end <= duration or cue.start >= duration:
        return cue
    return cue.model_copy(update={"end": duration})


def _journaled(segments: Iterator[Segment | Lull], journal: Journal) -> Iterator[Segment | Lull]:
    try:
        for segment in segments:
            if isinstance(segment, Segment):
                journal.append(segment)
            yield segment
    finally:
        journal.close()


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def engine_version() -> str:
    try:
        return metadata.version("subtide")
    except metadata.PackageNotFoundError:
        return "0+unknown"
