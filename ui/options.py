"""The choices the form offers and the form's values turned into a `JobSpec`."""

from __future__ import annotations

import mimetypes
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from engine.formats import SUBTITLE_SUFFIXES
from engine.languages import TARGET_VARIANTS, WHISPER_LANGUAGES, language_name
from engine.protocol import (
    CaptionTrack,
    DiarizeMode,
    JobSpec,
    ResultEvent,
    Source,
    Style,
    SubtideError,
    TranslationConfig,
    validation_problems,
)
from engine.translate import parse_glossary

WHISPER_MODELS = (
    "bundled",
    "bundled:tiny.en",
    "tiny",
    "base",
    "small",
    "medium",
    "large-v3",
    "turbo",
)
SPEAKER_MODES: tuple[DiarizeMode, ...] = ("off", "auto", "builtin", "pyannote")
AUTO = ""  # the source-language choice that lets Whisper detect the language
ASR_TRACK = "asr"  # the caption-track choice that transcribes instead

MediaKind = Literal["video", "audio", "subtitles"]


def language_choices(codes: tuple[str, ...]) -> list[tuple[str, str]]:
    """(label, code) pairs sorted by name: "German (de)" finds by name and by code."""
    return sorted(((f"{_name(code)} ({code})", code) for code in codes), key=_label)


def _name(code: str) -> str:
    # "Portuguese (Brazil)" would read "Portuguese (Brazil) (pt-BR)" with its code after it.
    name, _, detail = language_name(code).partition(" (")
    return f"{name}, {detail.removesuffix(')')}" if detail else name


def target_choices() -> list[tuple[str, str]]:
    return language_choices(WHISPER_LANGUAGES + TARGET_VARIANTS)


def source_choices() -> list[tuple[str, str]]:
    return [("Auto-detect", AUTO), *language_choices(WHISPER_LANGUAGES)]


DEFAULT_MODEL = ""  # the backend's own WHISPER_MODEL


def model_choices(default: str, offered: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """The default first (this machine's model here, a remote backend's own setting there),
    then the models `offered`, or every model Subtide knows."""
    names = WHISPER_MODELS if offered is None else offered
    return [(f"Default ({default} here)", DEFAULT_MODEL), *((m, m) for m in names)]


def _label(choice: tuple[str, str]) -> str:
    return choice[0]


@dataclass(frozen=True)
class Form:
    """What the user filled in, as the run handler receives it."""

    url: str
    file: str | None
    targets: list[str]
    caption_track: str
    source_lang: str
    whisper_model: str
    force_asr: bool
    recue: bool
    speakers: DiarizeMode
    num_speakers: float | None
    llm_url: str
    llm_model: str
    llm_key: str
    about: str
    glossary: str
    max_chars: float
    max_lines: float
    dual: bool
    speaker_labels: bool

    @classmethod
    def of(
        cls,
        url: str | None,
        file: str | None,
        targets: list[str] | None,
        caption_track: str | None,
        source_lang: str | None,
        whisper_model: str | None,
        force_asr: bool,
        recue: bool,
        speakers: DiarizeMode,
        num_speakers: float | None,
        llm_url: str | None,
        llm_model: str | None,
        llm_key: str | None,
        about: str | None,
        glossary: str | None,
        max_chars: float,
        max_lines: float,
        dual: bool,
        speaker_labels: bool,
    ) -> Form:
        """The form as the page (or a script) sends it: an empty box may come as None."""
        return cls(
            url=url or "",
            file=file,
            targets=targets or [],
            caption_track=caption_track or "",
            source_lang=source_lang or "",
            whisper_model=whisper_model or "",
            force_asr=force_asr,
            recue=recue,
            speakers=speakers,
            num_speakers=num_speakers,
            llm_url=llm_url or "",
            llm_model=llm_model or "",
            llm_key=llm_key or "",
            about=about or "",
            glossary=glossary or "",
            max_chars=max_chars,
            max_lines=max_lines,
            dual=dual,
            speaker_labels=speaker_labels,
        )

    def source(self) -> Source:
        url = self.url.strip()
        if url and self.file:
            raise SubtideError(
                "bad_input",
                "There is both a link and an uploaded file.",
                hint="Clear one of them, then press Run again.",
            )
        if self.file:
            return Source(path=self.file)
        if url:
            return Source(url=url)
        raise SubtideError(
            "bad_input",
            "Nothing to subtitle yet.",
            hint="Paste a video link or upload a video, audio or subtitle file.",
        )

    def job(self) -> JobSpec:
        """The job these values describe; a value the engine would refuse is a SubtideError."""
        try:
            return JobSpec(
                source=self.source(),
                source_lang=self.source_lang or None,
                target_langs=list(dict.fromkeys(self.targets)),
                whisper_model=self.whisper_model.strip() or None,
                force_asr=self.force_asr,
                recue_captions=self.recue,
                caption_track=self.caption_track or None,
                diarize=self.speakers,
                # Number boxes arrive as floats; 0 or empty means "find out".
                num_speakers=int(self.num_speakers) if self.num_speakers else None,
                translation=self._translation(),
                glossary=parse_glossary(self.glossary),
                description=self.about.strip() or None,
                style=Style(
                    max_chars_per_line=int(self.max_chars),
                    max_lines=int(self.max_lines),
                    dual=self.dual,
                    speaker_labels=self.speaker_labels,
                ),
            )
        except ValidationError as exc:
            raise SubtideError("bad_input", validation_problems(exc)[0]) from None

    def _translation(self) -> TranslationConfig | None:
        fields = {
            "base_url": self.llm_url.strip() or None,
            "model": self.llm_model.strip() or None,
            "api_key": self.llm_key.strip() or None,
        }
        # Nothing given: the server's own LLM settings apply unchanged.
        return TranslationConfig(**fields) if any(fields.values()) else None


def track_choices(result: ResultEvent) -> list[tuple[str, str]]:
    """Where a result's text can come from: Whisper, or each caption track the video has."""
    tracks = [(_track_label(track), track.id) for track in result.caption_tracks]
    return [("Transcribe the audio (Whisper)", ASR_TRACK), *tracks]


def _track_label(track: CaptionTrack) -> str:
    name = track.name or language_name(track.lang)
    return f"{name} captions ({'automatic' if track.automatic else 'by people'})"


SOURCE_NOTES = {
    "captions-manual": "text from the video's captions",
    "captions-auto": "text from the video's automatic captions",
    "asr": "transcribed",
}


def media_kind(path: str) -> MediaKind:
    """How an uploaded file can be previewed: a video player, an audio player, or not at all."""
    if Path(path).suffix.lower() in SUBTITLE_SUFFIXES:
        return "subtitles"
    guessed, _ = mimetypes.guess_type(path)
    return "audio" if guessed and guessed.startswith("audio/") else "video"
