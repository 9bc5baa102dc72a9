"""Word times refined against voice activity.

Whisper's word timestamps drift into the silence around speech, most at the start of a segment
(often by 0.3-0.9 s). Silero VAD, run with a short minimum silence, finds speech edges to within
a few tens of milliseconds, so a word edge that falls in silence is moved to the nearest speech
edge — no further than `max_shift` unless the edge is inside the word's own span, so a VAD
miss can't move a word far. A word stretched over a whole pause (Whisper does this to the first
word after one) is moved after it, but for a word that ends a sentence or clause: before it.
So is a sentence's first word that Whisper ran on from the sentence before, with the pause
between it and the rest of its sentence. A pause is one the VAD heard or, inside a long word, a
fifth of a second of quiet by energy (under music or noise the VAD hears none between two
utterances).

A pause between two sentences can be far shorter than the VAD's minimum silence (a reader's
tenth of a second), and then Whisper may start the new sentence's first word inside the last
word of the one before, or late, after part of it is spoken. With the audio at hand, the first
word of a sentence or clause is put where the voice resumes after a pause found by energy in
10 ms frames, between the previous word and its own end (see `SpeechSnapper._to_onset`).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from engine.cues import ends_sentence
from engine.protocol import Word

if TYPE_CHECKING:
    import numpy as np

Region = tuple[float, float]
_SENTENCE_END = (".", "?", "!", "…", "。", "？", "！")
# A pause inside one word longer than this is a misplaced word, not a slow syllable (a stop's
# closure is under 0.15 s). The VAD's pauses are its minimum silence less its padding, 0.1 s
# at least: base stretched "five" over 0.26 s of one, a reader's 0.2 s between sentences.
_MIN_PAUSE = 0.2


def speech_regions(audio: np.ndarray, sample_rate: int = 16000) -> list[Region]:
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(min_silence_duration_ms=160, speech_pad_ms=30)
    stamps = get_speech_timestamps(audio, options, sampling_rate=sample_rate)
    return [(s["start"] / sample_rate, s["end"] / sample_rate) for s in stamps]


class SpeechSnapper:
    """Snaps the words of segments that come in order. `audio` (16 kHz float samples), when
    given, places the first word of each sentence at the voice's onset."""

    def __init__(
        self,
        regions: Sequence[Region],
        max_shift: float = 1.0,
        audio: np.ndarray | None = None,
        previous: Word | None = None,
    ) -> None:
        self._regions = list(regions)
        self._starts = [start for start, _ in self._regions]
        self.max_shift = max_shift
        self._audio = audio
        # The last word snapped, of this or an earlier segment (or of an earlier run).
        self._previous = previous

    def extend(self, regions: Sequence[Region]) -> None:
        """Takes regions that come after those it has."""
        self._regions.extend(regions)
        self._starts.extend(start for start, _ in regions)

    def snap(self, words: Sequence[Word]) -> list[Word]:
        snapped, words = [], list(words)
        for k, aligned in enumerate(words):
            opens_sentence = k == 0 or words[k - 1].text.rstrip().endswith(_SENTENCE_END)
            if opens_sentence and k + 1 < len(words) and self._regions:
                aligned, words[k + 1] = self._cut_off(aligned, words[k + 1])
            following = words[k + 1] if k + 1 < len(words) else None
            word = self._snap_word(aligned, opens_sentence, following) if self._regions else aligned
            if (onset := self._unclaimed_onset(word)) is not None:
                # Voice no word claims, after a pause the VAD heard: Whisper began the word
                # late, or dropped a word spoken there ("five five" written "5").
                word = word.model_copy(update={"start": round(onset, 3)})
            elif self._audio is not None and self._after_a_break():
                word = self._to_onset(word, self._audio, aligned.end)
            snapped.append(word)
            self._previous = word
        return snapped

    def _cut_off(self, word: Word, following: Word) -> tuple[Word, Word]:
        """A sentence's first word that Whisper ran on from the sentence before, with a pause
        the VAD heard between it and the rest of its sentence, moved to where the voice
        resumes after that pause, taking the start of the word after: a reader pauses before
        a sentence, not after its first word, unless a comma says so."""
        previous = self._previous
        # The word after may be stretched over the pause too, and then belongs after it, as
        # _snap_word has it, unless it closes a sentence or clause.
        voiced_at = following.start if _closes(following) else following.end - _VOICED_AFTER_S
        i = self._index(voiced_at)
        if (
            previous is None
            or abs(word.start - previous.end) > _VAD_SLACK_S
            or _closes(word)
            or not 0 <= self._index(word.start) < i
        ):
            return word, following
        onset = self._regions[i][0]
        if onset - self._regions[i - 1][1] < _MIN_PAUSE or following.end <= onset:
            return word, following
        end = round(onset + min(word.end - word.start, (following.end - onset) / 2), 3)
        moved = word.model_copy(update={"start": round(onset, 3), "end": end})
        return moved, following.model_copy(update={"start": max(following.start, end)})

    def _after_a_break(self) -> bool:
        """Whether the next word follows the end of a sentence or clause (where a reader
        pauses), by the words that came before it."""
        previous = self._previous
        return (
            previous is None
            or ends_sentence(previous)
            or previous.text.rstrip().endswith(_CLAUSE_END)
        )

    def _to_onset(self, word: Word, audio: np.ndarray, aligned_end: float) -> Word:
        """The word started where the voice resumes after a pause (by energy) between the
        middle of the word before (or half a second before its own start) and its end. A pause
        whose end the VAD calls silence is music or noise, not one. Where Whisper stretched the
        word over pauses, the voice is after the last of them, but for a word that ends a
        sentence or clause: the last is the pause its punctuation says follows it. Else the
        voice is after the last pause that begins before Whisper's start: a pause after it
        lies in the word's own voice, or after it (a reader pauses inside sentences too), and
        one before a silence the VAD heard ahead of the word ends in the voice of the word
        before. A word is stretched over pauses before Whisper's own end for it (`aligned_end`)
        only: one moved wholly out of silence keeps its length, but no pause in that made-up
        span is its own. A word is moved a pause's length or more before Whisper's start only
        over voice."""
        previous = self._previous
        earliest = (previous.start + previous.end) / 2 if previous else word.start - _LOOK_BACK_S
        heard = self._index(word.start)
        found = [
            (quiet, resumes)
            for quiet, resumes in pauses(audio, max(earliest, 0.0), word.end - _SHORTEST_WORD_S)
            if self._near_speech(resumes) and self._index(_late(resumes)) >= heard
        ]
        voiced_until = min(word.end, aligned_end) - _VOICED_AFTER_S
        stretched = [r for q, r in found if q > word.start and r <= voiced_until]
        if _closes(word):
            stretched = stretched[:-1]
        before = [resumes for quiet, resumes in found if quiet <= word.start]
        candidates = stretched or before
        if not candidates:
            return word
        onset = candidates[-1]
        if onset <= word.start - _MIN_PAUSE and voiced_share(audio, onset, word.start) < 0.5:
            # The voice there stops again before Whisper's start: it is the end of the word
            # before, the pause found a dip inside it, and music or noise fills the real one.
            return word
        return word.model_copy(update={"start": round(onset, 3)})

    def _unclaimed_onset(self, word: Word) -> float | None:
        """Where the VAD's speech that holds the word's start begins, when that is after the
        word before ended and well before Whisper's start: voice no word claims."""
        previous = self._previous
        i = self._index(word.start)
        if previous is None or i < 0 or not self._in_speech(word.start):
            return None
        onset = self._regions[i][0]
        return onset if previous.end - _VAD_SLACK_S <= onset <= word.start - _UNCLAIMED_S else None

    def _snap_word(self, word: Word, opens_sentence: bool, following: Word | None) -> Word:
        start, end = word.start, word.end
        pause = self._pause_inside(start, end) or self._quiet_inside(start, end)
        if pause:
            if self._after_pause(word, pause, opens_sentence, following):
                start = pause[1]
            else:
                end = pause[0]
                if opens_sentence:  # begun in voice of its own: it begins where that voice does
                    start = self._regions[self._index(start)][0]
        start, end = self._after_speech(start, end, opens_sentence)
        if not self._in_speech(start):
            onset = self._next_onset(start)
            # However far, an onset inside the word's own span is where its voice begins.
            if onset is not None and (
                onset - start <= self.max_shift or onset <= end - _SHORTEST_WORD_S
            ):
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

    def _after_pause(
        self, word: Word, pause: Region, opens_sentence: bool, following: Word | None
    ) -> bool:
        """Whether a word Whisper stretched over `pause` is spoken after it. Whisper stretches
        the word after a pause back over it, whatever the part of the word on either side: a
        sentence's first word is after it, unless next to none of it is and Whisper began it
        in voice of its own (tiny.en began "four" 0.2 s into it, after "clubs." had ended,
        and stretched it over the pause to "queen"). Another word is after it when some of it
        is, unless it ends a sentence or clause (`_spoken_after`)."""
        voiced_after = word.end - pause[1] >= _VOICED_AFTER_S
        if opens_sentence:
            return voiced_after or not self._own_voice_at(word.start)
        return voiced_after and _spoken_after(word, pause, following)

    def _own_voice_at(self, t: float) -> bool:
        """Whether `t` is in speech the VAD heard begin after the word before ended."""
        previous, i = self._previous, self._index(t)
        return previous is not None and self._in_speech(t) and self._regions[i][0] >= previous.end

    def _after_speech(self, start: float, end: float, opens_sentence: bool) -> tuple[float, float]:
        """A word that goes on a sentence, wholly in the silence just after the speech its
        word before ended in, and nearer to it than to the speech that follows, moved back to
        end where that speech ends: Whisper aligned it late."""
        i, previous = self._index(start), self._previous
        if opens_sentence or previous is None or i < 0 or self._index(end) != i:
            return start, end
        offset, onset = self._regions[i][1], self._next_onset(start)
        late = start - offset
        in_silence = late > 0 and not self._in_speech(end)
        if not in_silence or self._index(previous.end) != i or late > self.max_shift:
            return start, end
        if onset is not None and late >= onset - end:
            return start, end
        return start - (end - offset), offset

    def _pause_inside(self, start: float, end: float) -> Region | None:
        i = self._index(start)
        if i < 0 or i + 1 >= len(self._regions):
            return None
        pause = (self._regions[i][1], self._regions[i + 1][0])
        inside = start < pause[0] and pause[1] < end
        return pause if inside and pause[1] - pause[0] >= _MIN_PAUSE else None

    def _quiet_inside(self, start: float, end: float) -> Region | None:
        """The first pause by energy at least `_MIN_PAUSE` long inside a word long enough to
        hold one, with voice on both sides of it: under music or noise the VAD hears none
        between two utterances, and Whisper stretches a word over it all the same (the
        first: a later one may be the word's own comma, "5," stretched on to the next "5")."""
        if self._audio is None or end - start < 2 * _MIN_PAUSE:
            return None
        inside = [
            (quiet, resumes)
            for quiet, resumes in pauses(self._audio, start, end)
            if quiet > start + _SHORTEST_WORD_S
            and resumes - quiet >= _MIN_PAUSE
            and self._near_speech(resumes)
        ]
        return inside[0] if inside else None

    def _index(self, t: float) -> int:
        """Index of the last region starting at or before t, or -1."""
        return bisect_right(self._starts, t) - 1

    def _near_speech(self, t: float) -> bool:
        """In speech by the VAD, or just before it (`_VAD_LATE_S`); anywhere when there is
        no VAD."""
        return not self._regions or self._in_speech(t) or self._in_speech(_late(t))

    def _in_speech(self, t: float) -> bool:
        i = self._index(t)
        return i >= 0 and t <= self._regions[i][1]

    def _next_onset(self, t: float) -> float | None:
        i = self._index(t) + 1
        return self._regions[i][0] if i < len(self._regions) else None

    def _previous_offset(self, t: float) -> float | None:
        i = self._index(t)
        return self._regions[i][1] if i >= 0 else None


_CLAUSE_END = (",", ";", ":", "、", "，", "；", "：")
# How far before a file's first word its onset is looked for.
_LOOK_BACK_S = 0.5
# What is left of a word whose start is moved later, at least (more than the release of a
# final stop consonant after its closure).
_SHORTEST_WORD_S = 0.05
_VAD_SLACK_S = 0.05
# The VAD hears a voice begin up to this long after its energy rises: its windows are 32 ms,
# and under music or noise its probability climbs slower (seen: 0.05-0.11 s).
_VAD_LATE_S = 0.1
# Voice this long that the VAD heard begin after the word before, and before Whisper's start,
# is this word's: Whisper aligned it late.
_UNCLAIMED_S = 0.12
# A word stretched over a pause still has this much voice after it (a word whose end Whisper
# put just after a pause it is followed by, "Tea, please", has less: the next word's start).
_VOICED_AFTER_S = 0.08
# Energy frames; a pause is a run of quiet frames this long at least (a stop consonant's
# closure inside a word is mostly shorter).
_FRAME_S = 0.01
_MIN_QUIET_S = 0.08
# The levels of quiet and of voice are read on the span with this much around it; the two
# must be this far apart for a pause to be told from speech (loud music under it: no).
_CONTEXT_S = 1.0
_MIN_CONTRAST_DB = 12.0
# Below this a frame is digital silence; 16-bit audio's own noise floor is near -100 dB.
_DIGITAL_SILENCE_DB = -80.0
# Quiet: within this fraction of the way from the quiet level to the voice's.
_QUIET_FRACTION = 0.3


def _late(t: float) -> float:
    """Where the VAD may first hear a voice that begins at `t`: rounded, as 10 ms energy
    frames plus the lag fall a hair short of the edge they meet in floating point."""
    return round(t + _VAD_LATE_S, 6)


def _spoken_after(word: Word, pause: Region, following: Word | None) -> bool:
    """Whether a word Whisper stretched over `pause` (not a sentence's first) is spoken after
    it. One that ends a sentence or clause is the word before, unless the voice no word claims
    after the pause, up to the next word, is longer than the word's own before it: Whisper ran
    two sentences together and put a comma after the second's first word ("10 of cloves 4,
    Queen of Cloves", "four" spoken after the pause, "Queen" aligned 0.56 s after it)."""
    if not _closes(word):
        return True
    return following is not None and following.start - pause[1] > pause[0] - word.start


def _closes(word: Word) -> bool:
    """Whether the word ends a sentence or clause, by its punctuation."""
    return word.text.rstrip().endswith(_SENTENCE_END + _CLAUSE_END)


def pauses(
    audio: np.ndarray, start: float, end: float, sample_rate: int = 16000
) -> list[tuple[float, float]]:
    """The pauses from `start` to `end` (seconds) after which the voice resumes before `end`,
    as (quiet from, voice again at): runs of quiet 10 ms frames at least `_MIN_QUIET_S` long,
    quiet judged against the levels around; none where voice and quiet are too alike."""
    levels = _Levels.read(audio, start, end, sample_rate)
    if levels is None:
        return []
    quiet = levels.db < levels.quiet_db + _QUIET_FRACTION * (levels.voice_db - levels.quiet_db)
    lo = levels.frame(start)
    hi = min(levels.frame(end) + 1, len(quiet) - 1)
    found, run = [], 0
    for k in range(lo, hi):
        run = run + 1 if quiet[k] else 0
        if run * _FRAME_S >= _MIN_QUIET_S and not quiet[k + 1]:
            found.append((levels.at + (k + 1 - run) * _FRAME_S, levels.at + (k + 1) * _FRAME_S))
    return found


def voiced_share(audio: np.ndarray, start: float, end: float, sample_rate: int = 16000) -> float:
    """The share of the 10 ms frames from `start` to `end` nearer the voice's level than the
    quiet's (1.0 where the two are too alike to tell)."""
    levels = _Levels.read(audio, start, end, sample_rate)
    if levels is None:
        return 1.0
    frames = levels.db[levels.frame(start) : max(levels.frame(end), levels.frame(start) + 1)]
    return float((frames > (levels.quiet_db + levels.voice_db) / 2).mean())


class _Levels(NamedTuple):
    """The level of each 10 ms frame of a span and the context around it, in dB, with the
    levels of quiet and of voice read there."""

    db: np.ndarray
    at: float  # the time of db[0]
    quiet_db: float
    voice_db: float

    @classmethod
    def read(cls, audio: np.ndarray, start: float, end: float, sample_rate: int) -> _Levels | None:
        """None where voice and quiet are too alike to be told apart."""
        import numpy as np

        frame = round(_FRAME_S * sample_rate)
        first = max(int((start - _CONTEXT_S) * sample_rate), 0)
        piece = audio[first : int((end + _CONTEXT_S) * sample_rate)]
        count = len(piece) // frame
        if count < 3:
            return None
        power = np.square(piece[: count * frame].astype(np.float64).reshape(count, frame)).mean(1)
        level = 10 * np.log10(power + 1e-10)
        # A click or a single loud frame is not voice: each frame takes its neighbours' median.
        level = np.median(np.stack([level[:-2], level[1:-1], level[2:]]), axis=0)
        # Digital silence (a file's lead-in of zeros) is quiet, but not the level of the room.
        audible = level[level > _DIGITAL_SILENCE_DB]
        if len(audible) < 3:
            return None
        quiet_db, voice_db = np.percentile(audible, [5, 95])
        if voice_db - quiet_db < _MIN_CONTRAST_DB:
            return None
        # Frame k of `level` is frame k + 1 of the piece.
        return cls(level, first / sample_rate + _FRAME_S, float(quiet_db), float(voice_db))

    def frame(self, t: float) -> int:
        return max(int((t - self.at) / _FRAME_S), 0)
