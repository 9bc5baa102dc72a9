"""The cues of one job and their translations into each target, kept current while the
translation jobs (one per target language) run beside transcription."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from engine.cues import wrap_text
from engine.protocol import Cue, Style
from engine.translate import LineResult, TranslationJob, Translator


class Translations:
    def __init__(
        self,
        translator: Translator | None,
        targets: Sequence[str],
        source_lang: str | None,
        style: Style,
    ) -> None:
        self.targets = list(targets) if translator else []
        self._jobs: dict[str, TranslationJob] = {}
        if translator:
            self._jobs = {t: translator.start(t, source_lang) for t in self.targets}
        self._style = style
        self._cues: dict[int, Cue] = {}
        self._finished_lines = 0

    def add(self, cues: Sequence[Cue]) -> None:
        self._cues.update((c.id, c) for c in cues)
        for job in self._jobs.values():
            job.add(cues)

    def updates(self) -> list[Cue]:
        """Cues whose translations arrived since the last call (never blocks)."""
        return self._apply((target, job.poll()) for target, job in self._jobs.items())

    def drain(self, poll_s: float = 0.25) -> Iterator[list[Cue]]:
        """Submits what is left and yields updated cues until every translation is in."""
        for job in self._jobs.values():
            job.finish()
        while not all(job.done for job in self._jobs.values()):
            updated = self._apply(
                (target, job.wait(timeout=poll_s)) for target, job in self._jobs.items()
            )
            yield updated
        last = self.updates()
        if last:
            yield last

    def cancel(self) -> None:
        for job in self._jobs.values():
            job.cancel()

    @property
    def fraction_done(self) -> float:
        expected = len(self._cues) * len(self._jobs)
        return self._finished_lines / expected if expected else 1.0

    def cues(self) -> list[Cue]:
        return [self._cues[i] for i in sorted(self._cues)]

    def untranslated(self) -> dict[str, int]:
        counts = {t: sum(t in c.untranslated for c in self._cues.values()) for t in self.targets}
        return {t: n for t, n in counts.items() if n}

    def _apply(self, results: Iterable[tuple[str, list[LineResult]]]) -> list[Cue]:
        changed: dict[int, Cue] = {}
        for target, lines in results:
            for line in lines:
                cue = self._cues[line.cue_id]
                if line.text is None:
                    update = {"untranslated": [*cue.untranslated, target]}
                else:
                    text = wrap_text(line.text, self._style, target)
                    update = {"translations": {**cue.translations, target: text}}
                self._cues[cue.id] = changed[cue.id] = cue.model_copy(update=update)
                self._finished_lines += 1
        return [changed[i] for i in sorted(changed)]
