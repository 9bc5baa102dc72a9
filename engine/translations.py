"""The cues of one job and their translations into each target, kept current while the
translation jobs (one per target language) run beside transcription."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence

from engine.cues import fits, wrap_text
from engine.protocol import Cue, Style, TargetReport, TranslationProblem
from engine.translate import LineResult, TranslationJob, Translator


class Translations:
    """Without a translator (no LLM configured) every line of every target fails at once,
    with the reason "no_model", so such a target ends like one the service failed on."""

    def __init__(
        self,
        translator: Translator | None,
        targets: Sequence[str],
        source_lang: str | None,
        style: Style,
    ) -> None:
        self.targets = list(targets)
        self._jobs: dict[str, TranslationJob] = {}
        if translator:
            self._jobs = {t: translator.start(t, source_lang) for t in self.targets}
        self._style = style
        self._cues: dict[int, Cue] = {}
        self._unasked: list[Cue] = []  # cues no translator will ever see, not yet failed
        self._finished_lines = 0
        self._started = time.monotonic()
        self._problems: dict[str, Counter[TranslationProblem]] = {t: Counter() for t in targets}

    def add(self, cues: Sequence[Cue]) -> None:
        self._cues.update((c.id, c) for c in cues)
        for job in self._jobs.values():
            job.add(cues)
        if not self._jobs:
            self._unasked.extend(cues)

    def updates(self) -> list[Cue]:
        """Cues whose translations arrived since the last call (never blocks)."""
        return self._apply(self._results(TranslationJob.poll))

    def drain(self, poll_s: float = 0.25) -> Iterator[list[Cue]]:
        """Submits what is left and yields updated cues until every translation is in."""
        for job in self._jobs.values():
            job.finish()
        while not all(job.done for job in self._jobs.values()):
            yield self._apply(self._results(lambda job: job.wait(timeout=poll_s)))
        last = self.updates()
        if last:
            yield last

    def cancel(self) -> None:
        for job in self._jobs.values():
            job.cancel()

    @property
    def expected_lines(self) -> int:
        return len(self._cues) * len(self.targets)

    @property
    def finished_lines(self) -> int:
        return self._finished_lines

    @property
    def fraction_done(self) -> float:
        expected = self.expected_lines
        return self._finished_lines / expected if expected else 1.0

    def eta_s(self) -> float | None:
        """Seconds left at the rate lines have finished so far; None before any has, and once
        none is left."""
        left = self.expected_lines - self._finished_lines
        if not self._finished_lines or left <= 0:
            return None
        rate = self._finished_lines / max(time.monotonic() - self._started, 1e-6)
        return round(left / rate, 1)

    def cues(self) -> list[Cue]:
        return [self._cues[i] for i in sorted(self._cues)]

    def report(self) -> dict[str, TargetReport]:
        """Per target: lines translated, the commonest reason others were kept, and the share
        of translated cues whose final text is within the style's limits."""
        return {target: self._report(target) for target in self.targets}

    def _report(self, target: str) -> TargetReport:
        done = [c for c in self._cues.values() if target in c.translations]
        within = [fits(c.translations[target], self._style, target, c.end - c.start) for c in done]
        problems = self._problems[target].most_common(1)
        return TargetReport(
            translated=len(done),
            total=len(self._cues),
            reason=problems[0][0] if problems else None,
            within_limits=sum(within) / len(within) if within else None,
        )

    def _results(
        self, get: Callable[[TranslationJob], list[LineResult]]
    ) -> Iterator[tuple[str, list[LineResult], TranslationProblem]]:
        """Each target's new results, and the reason to give a failed line that has none."""
        unasked, self._unasked = self._unasked, []
        for target in self.targets:
            job = self._jobs.get(target)
            if job:
                yield target, get(job), "unavailable"
            else:
                yield target, [LineResult(c.id, None) for c in unasked], "no_model"

    def _apply(
        self, results: Iterable[tuple[str, list[LineResult], TranslationProblem]]
    ) -> list[Cue]:
        changed: dict[int, Cue] = {}
        for target, lines, unknown in results:
            for line in lines:
                cue = self._cues[line.cue_id]
                if line.text is None:
                    update = {"untranslated": [*cue.untranslated, target]}
                    self._problems[target][line.problem or unknown] += 1
                else:
                    text = wrap_text(line.text, self._style, target)
                    update = {"translations": {**cue.translations, target: text}}
                self._cues[cue.id] = changed[cue.id] = cue.model_copy(update=update)
                self._finished_lines += 1
        return [changed[i] for i in sorted(changed)]
