"""Who speaks when: the diarization backends behind one call, and speakers for words and cues."""

from __future__ import annotations

import threading
from bisect import bisect_right
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from engine.cues import build_cues
from engine.protocol import Cue, Style, Word
from engine.stop import Stop

if TYPE_CHECKING:
    import numpy as np

# A different speaker for less than this inside a cue is a diarization flicker, not a reply.
SHORT_FLIP_S = 1.0
# A word outside every turn still takes the nearest speaker within this distance.
NEAREST_TURN_S = 1.0
# Decimals of a voice embedding in a result: 256 of them stay about 2 KB per speaker, and a
# cosine similarity moves by far less than the gap between two voices.
VOICE_DECIMALS = 4


@dataclass(frozen=True)
class Turn:
    """One stretch of one speaker's voice, in seconds."""

    start: float
    end: float
    speaker: str


@dataclass(frozen=True)
class Diarization:
    """The turns, and per speaker label a unit voice embedding: a client that cut a long source
    into parts links the labels of different parts by these (empty when the diarizer has none)."""

    turns: list[Turn]
    voices: dict[str, list[float]]


DiarizeRun = Callable[[Stop], "Diarization | list[Turn]"]


class Diarizer(Protocol):
    def diarize(
        self,
        audio: np.ndarray,
        *,
        num_speakers: int | None = None,
        min_speakers: int | None = None,
        max_speakers: int | None = None,
        stop: Stop = ...,
    ) -> list[Turn]: ...


@runtime_checkable
class VoiceDiarizer(Protocol):
    """A diarizer that also says what each speaker sounds like."""

    def diarize_voices(
        self,
        audio: np.ndarray,
        *,
        num_speakers: int | None = None,
        min_speakers: int | None = None,
        max_speakers: int | None = None,
        stop: Stop = ...,
    ) -> Diarization: ...


class SpeakerTrack:
    """Diarization running in its own thread beside transcription, then labelling cues. `run`
    is given a stop to ask between its steps; `close` (the job ended) says stop."""

    def __init__(self, run: DiarizeRun, names: dict[str, str], style: Style) -> None:
        self._names, self._style = names, style
        self._result: Future[Diarization] = Future()
        self._closed = threading.Event()
        thread = threading.Thread(target=self._work, args=(run,), name="diarize", daemon=True)
        thread.start()

    def close(self) -> None:
        self._closed.set()

    def _work(self, run: DiarizeRun) -> None:
        try:
            found = run(self._closed.is_set)
            # A diarizer without voice embeddings gives turns alone.
            self._result.set_result(
                found if isinstance(found, Diarization) else Diarization(found, {})
            )
        except BaseException as exc:
            self._result.set_exception(exc)

    @property
    def ready(self) -> bool:
        return self._result.done()

    def wait(self, timeout: float) -> bool:
        try:
            self._result.exception(timeout=timeout)
        except TimeoutError:
            return False
        return True

    def turns(self) -> list[Turn]:
        """The turns; raises what the diarizer raised. Only call once `ready`."""
        return self._result.result().turns

    def voices(self) -> dict[str, list[float]]:
        """Each speaker's voice embedding, under the name its cues carry. Only once `ready`."""
        voices = self._result.result().voices
        return {
            self._names.get(label, label): [round(x, VOICE_DECIMALS) for x in vector]
            for label, vector in voices.items()
        }

    def label(self, cues: Sequence[Cue], language: str | None) -> list[Cue]:
        """Each cue with its speaker; a cue in which the speaker changes is split there."""
        turns = Turns(self.turns())
        labelled: list[Cue] = []
        for cue in cues:
            labelled.extend(self._split(cue, turns, language))
        return labelled

    def _split(self, cue: Cue, turns: Turns, language: str | None) -> list[Cue]:
        words = cue.words or []
        speakers = smooth([turns.speaker_at(w) for w in words], words)
        runs = _runs(speakers)
        if len(runs) <= 1:
            speaker = runs[0][2] if runs else turns.speaker_at_span(cue.start, cue.end)
            return [cue.model_copy(update={"speaker": self._name(speaker)})]
        pieces: list[Cue] = []
        for first, last, speaker in runs:
            built = build_cues(words[first : last + 1], self._style, language)
            pieces.extend(c.model_copy(update={"speaker": self._name(speaker)}) for c in built)
        return _without_overlap(pieces, self._style.min_gap)

    def _name(self, speaker: str | None) -> str | None:
        return self._names.get(speaker, speaker) if speaker else None


class Turns:
    """Turns indexed by start time, for speaker look-ups by overlap."""

    def __init__(self, turns: Sequence[Turn]) -> None:
        self._turns = sorted(turns, key=lambda t: t.start)
        self._starts = [t.start for t in self._turns]

    def speaker_at(self, word: Word) -> str | None:
        return self.speaker_at_span(word.start, word.end)

    def speaker_at_span(self, start: float, end: float) -> str | None:
        """The speaker overlapping the span most; else the nearest one close enough."""
        i = bisect_right(self._starts, end)
        overlap: dict[str, float] = {}
        for turn in self._turns[max(i - 8, 0) : i]:
            shared = min(end, turn.end) - max(start, turn.start)
            if shared > 0:
                overlap[turn.speaker] = overlap.get(turn.speaker, 0.0) + shared
        if overlap:
            return max(overlap, key=overlap.__getitem__)
        nearby = self._turns[max(i - 1, 0) : i + 1]
        distances = [(max(t.start - end, start - t.end), t.speaker) for t in nearby]
        close = [d for d in distances if d[0] <= NEAREST_TURN_S]
        return min(close)[1] if close else None


def smooth(speakers: list[str | None], words: Sequence[Word]) -> list[str | None]:
    """Words outside every turn, and a short run of another speaker at a cue's edge or between
    two runs of one speaker, take their neighbour's speaker."""
    result = list(speakers)
    runs = _runs(speakers)
    for k, (first, last, speaker) in enumerate(runs):
        before = runs[k - 1][2] if k else None
        after = runs[k + 1][2] if k + 1 < len(runs) else None
        short = words[last].end - words[first].start < SHORT_FLIP_S
        one_neighbour = before is None or after is None or before == after
        if speaker is None or (short and one_neighbour):
            replacement = before or after
            if replacement:
                result[first : last + 1] = [replacement] * (last - first + 1)
    return result


def _runs(speakers: Sequence[str | None]) -> list[tuple[int, int, str | None]]:
    """(first index, last index, speaker) of each stretch of one speaker."""
    runs: list[tuple[int, int, str | None]] = []
    for i, speaker in enumerate(speakers):
        if runs and runs[-1][2] == speaker:
            runs[-1] = (runs[-1][0], i, speaker)
        else:
            runs.append((i, i, speaker))
    return runs


def _without_overlap(cues: list[Cue], gap: float) -> list[Cue]:
    fixed = list(cues)
    for k in range(len(fixed) - 1):
        limit = fixed[k + 1].start - gap
        if fixed[k].end > limit > fixed[k].start:
            fixed[k] = fixed[k].model_copy(update={"end": limit})
    return fixed
