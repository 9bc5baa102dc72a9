"""The Events of a long synthetic job, shaped like the engine's: cues with words streamed as
they are transcribed, the same cues again with their translations, then the result with every
cue and its rendered files. About 350 bytes of result per second of speech, as a real URL job."""

from __future__ import annotations

import random

from engine.formats import render_files
from engine.protocol import Cue, CuesEvent, Event, ProgressEvent, ResultEvent, TargetReport, Word

WORDS = "the weather today is warm and sunny many people went to beach water cold"


def long_job(
    minutes: float = 60, targets: tuple[str, ...] = ("de",), batch_s: float = 30, seed: int = 0
) -> list[Event]:
    """The job's Events in order; its last one is the full result."""
    pick = random.Random(seed)
    duration = minutes * 60
    cues = _cues(duration, pick)
    events: list[Event] = []
    for batch in _batches(cues, batch_s):
        percent = round(100 * batch[-1].end / duration, 2)
        events.append(ProgressEvent(stage="transcribe", percent=min(percent, 99.0)))
        events.append(CuesEvent(cues=batch))
    translated = [_translated(cue, targets) for cue in cues]
    for batch in _batches(translated, batch_s):
        events.append(ProgressEvent(stage="translate", percent=99.0))
        events.append(CuesEvent(cues=batch))
    files = render_files(
        translated, ["srt", "vtt"], stem="talk", language="en", target_langs=targets
    )
    events.append(
        ResultEvent(
            cues=translated,
            language="en",
            duration=duration,
            title="A long talk",
            timings={"transcribe": duration / 20, "translate": 30.0},
            files=files,
            targets={t: TargetReport(translated=len(cues), total=len(cues)) for t in targets},
        )
    )
    return events


def _cues(duration: float, pick: random.Random) -> list[Cue]:
    vocabulary, cues, start = WORDS.split(), [], 0.0
    while start + 3 < duration:
        words = []
        at = start
        for _ in range(pick.randint(8, 12)):
            length = round(pick.uniform(0.15, 0.45), 3)
            text = " " + pick.choice(vocabulary)
            prob = round(pick.uniform(0.5, 1.0), 4)
            words.append(
                Word(start=round(at, 3), end=round(at + length, 3), text=text, probability=prob)
            )
            at += length + 0.05
        text = "".join(w.text for w in words).strip().capitalize() + "."
        cues.append(
            Cue(id=len(cues) + 1, start=round(start, 3), end=round(at, 3), text=text, words=words)
        )
        start = at + pick.uniform(0.2, 1.0)
    return cues


def _translated(cue: Cue, targets: tuple[str, ...]) -> Cue:
    return cue.model_copy(update={"translations": {t: f"[{t}] {cue.text}" for t in targets}})


def _batches(cues: list[Cue], batch_s: float) -> list[list[Cue]]:
    batches: dict[int, list[Cue]] = {}
    for cue in cues:
        batches.setdefault(int(cue.start // batch_s), []).append(cue)
    return list(batches.values())
