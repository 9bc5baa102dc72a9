"""What one job may ask of a server that serves others (`subtide serve`, the serverless worker).

The server pays for each job with its LLM key and its GPU time, and its files are its own, so a
job is refused up front when it asks for more than the server's settings allow: a Whisper model
the server does not offer, too many target languages (each one is a pass over the whole video
through the LLM), codes that are no language, or a glossary or description sent with every
LLM request that is larger than the limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.languages import check_target
from engine.protocol import JobSpec, SubtideError

if TYPE_CHECKING:
    from app.config import Settings


class JobTooLarge(SubtideError):
    """A part of the job is larger than the server takes (HTTP 413, where there is HTTP)."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__("bad_input", message, hint)


@dataclass(frozen=True)
class JobLimits:
    models: tuple[str, ...]
    max_targets: int
    max_glossary_chars: int
    max_description_chars: int

    @classmethod
    def from_settings(cls, settings: Settings) -> JobLimits:
        return cls(
            models=tuple(settings.offered_models()),
            max_targets=settings.max_target_langs,
            max_glossary_chars=settings.max_glossary_chars,
            max_description_chars=settings.max_description_chars,
        )

    def check(self, spec: JobSpec) -> None:
        """A SubtideError (JobTooLarge for sizes) naming the first limit `spec` passes."""
        self._check_model(spec.whisper_model)
        self._check_targets(spec.target_langs)
        glossary = sum(len(term) + len(meaning) for term, meaning in spec.glossary.items())
        if glossary > self.max_glossary_chars:
            raise JobTooLarge(
                f"The glossary has {glossary:,} characters; this server takes at most "
                f"{self.max_glossary_chars:,}.",
                "Keep the names and terms the video uses; the LLM gets the glossary with "
                "every batch of lines.",
            )
        description = len(spec.description or "")
        if description > self.max_description_chars:
            raise JobTooLarge(
                f"The description has {description:,} characters; this server takes at most "
                f"{self.max_description_chars:,}.",
                "One or two sentences on the topic, the names and the tone are enough.",
            )

    def _check_model(self, asked: str | None) -> None:
        # Never echo or judge the value itself: an answer that differs by what exists on the
        # server's disk (or on the hub) would tell a stranger about it.
        if asked is None or asked.strip() in self.models:
            return
        raise SubtideError(
            "bad_input",
            "This server does not offer the Whisper model the job asks for.",
            f"Ask for one of: {', '.join(self.models)}, or leave whisper_model out to use "
            f"{self.models[0]}.",
        )

    def _check_targets(self, targets: list[str]) -> None:
        languages = list(dict.fromkeys(check_target(code) for code in targets))
        if len(languages) > self.max_targets:
            raise SubtideError(
                "bad_input",
                f"The job asks for {len(languages)} target languages; this server translates "
                f"into at most {self.max_targets} per job.",
                "Split the languages over several jobs: the transcript is cached, so only "
                "the translation runs again.",
            )
