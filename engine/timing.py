"""Word times refined against voice activity.

Whisper's word timestamps drift into the silence around speech, most at the start of a segment
(often by 0.3-0.9 s). Silero VAD, run with a short minimum silence, finds speech edges to within
a few tens of milliseconds, so a word edge that falls in silence is moved to the nearest speech
edge — no further than `max_shift`, so a VAD miss can't move a word far. A word stretched over a
whole pause (Whisper does this to the first word after one) is moved to one side of it.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from typing import TYPE_CHECKING

from engine.protocol import Word

if TYPE_CHECKING:
    import numpy as np

Region = tuple[float, float]
_SENTENCE_END = (".", "?", "!", "…", "。", "？", "！")
# A pause inside one word longer than this is a misplaced word, not a slow syllable.
_MIN_PAUSE = 0.3


def speech_regions(audio: np.ndarray, sample_rate: int = 16000) -> list[Region]:
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(min_silence_duration_ms=160, speech_pad_ms=30)
    stamps = get_speech_timestamps(audio, options, sampling_rate=sample_rate)
    return [(s["start"] / sample_rate, s["end"] / sample_rate) for s in stamps]


class SpeechSnapper:
    def __init__(self, regions: Sequence[Region], max_shift: float = 1.0) -> None:
        self._regions = list(regions)
        self._starts = [start for start, _ in self._regions]
        self.max_shift = max_shift

    def extend(self, regions: Sequence[Region]) -> None:
        """Takes regions that come after those it has."""
        self._regions.extend(regions)
        self._starts.extend(start for start, _ in regions)

    def snap(self, words: Sequence[Word]) -> list[Word]:
        if not self._regions:
            return list(words)
        snapped = []
        for k, word in enumerate(words):
            opens_sentence = k == 0 or words[k - 1].text.rstrip().endswith(_SENTENCE_END)
            snapped.append(self._snap_word(word, opens_sentence))
        return snapped

    def _snap_word(self, word: Word, opens_sentence: bool) -> Word:
        start, end = word.start, word.end
        pause = self._pause_inside(start, end)
        if pause:
            closes_sentence = word.text.rstrip().endswith(_SENTENCE_END)
            later_part_longer = end - pause[1] > pause[0] - start
            if opens_sentence or (later_part_longer and not closes_sentence):
                start = pause[1]
            else:
                end = pause[0]
        if not self._in_speech(start):
            onset = self._next_onset(start)
            if onset is not None and onset - start <= self.max_shift:
                start = onset
        if not self._in_speech(end):
            offset = self._previous_offset(end)
            if offset is not None and offset > start and end - offset <= self.max_shift:
                end = offset
        if end <= start:
            # The whole word sat in silence and moved to the next speech: keep its length there.
            end = start + max(word.end - word.start, 0.02)
        if (start, end) == (word.start, word.end):
            return word
        return word.model_copy(update={"start": round(start, 3), "end": round(end, 3)})

    def _pause_inside(self, start: float, end: float) -> Region | None:
        i = self._index(start)
        if i < 0 or i + 1 >= len(self._regions):
            return None
        pause = (self._regions[i][1], self._regions[i + 1][0])
        inside = start < pause[0] and pause[1] < end
        return pause if inside and pause[1] - pause[0] >= _MIN_PAUSE else None

    def _index(self, t: float) -> int:
        """Index of the last region starting at or before t, or -1."""
        return bisect_right(self._starts, t) - 1

    def _in_speech(self, t: float) -> bool:
        i = self._index(t)
        return i >= 0 and t <= self._regions[i][1]

    def _next_onset(self, t: float) -> float | None:
        i = self._index(t) + 1
        return self._regions[i][0] if i < len(self._regions) else None

    def _previous_offset(self, t: float) -> float | None:
        i = self._index(t)
        return self._regions[i][1] if i >= 0 else None
