"""Removes what Whisper invents: repeated phrases, loops of identical segments, impossible speed,
and words Whisper itself does not believe, written where it doubts anyone speaks.

The filter streams: it looks only at the segment in hand and the few kept before it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

from engine.asr import Lull, Segment
from engine.protocol import Word

_NON_WORD = re.compile(r"[^\w']+")


@dataclass(frozen=True)
class FilterRules:
    # A phrase of n words repeated back to back more often than this is a decoding loop; single
    # words get more room ("no, no, no" is speech).
    max_word_repeats: int = 3
    max_phrase_repeats: int = 2
    longest_phrase: int = 8
    # A phrase written again right after itself with most of its words given less time than
    # this is a loop too, even once: Whisper wrote it where the audio holds no voice for it.
    timeless_word_s: float = 0.05
    # The same segment text again right after itself is a loop once it is this long...
    min_words_for_loop: int = 4
    # ...and always on its third appearance in a row.
    max_identical_in_a_row: int = 2
    # Faster than anyone speaks, counted on segments long enough for the rate to mean something.
    max_cps: float = 40.0
    min_chars_for_cps: int = 15
    # Noise, or a tenth of a second of a word, makes Whisper write a stock phrase ("You", "Thank
    # you.") in a window it thinks may hold no speech. It barely believes the phrase's opening
    # word (a few percent) and then goes on as a language model ("Thank" 0.004, "you." 0.95).
    # Real speech, even a lone mumbled "No." in such a window, opens with 0.15 and more; a long
    # real segment that opens with an unlikely name keeps a high geometric mean.
    doubtful_no_speech: float = 0.3
    unbelieved_word: float = 0.1
    believed_segment: float = 0.5


def _norm(text: str) -> str:
    return _NON_WORD.sub(" ", text.lower()).strip()


class HallucinationFilter:
    def __init__(self, rules: FilterRules | None = None) -> None:
        self.rules = rules or FilterRules()
        self._recent: list[str] = []

    def __call__(self, segments: Iterable[Segment | Lull]) -> Iterator[Segment | Lull]:
        """The segments kept; a Lull passes through."""
        for segment in segments:
            if isinstance(segment, Lull):
                yield segment
            elif (kept := self.check(segment)) is not None:
                yield kept

    def check(self, segment: Segment) -> Segment | None:
        """The segment as it should be kept, or None when it is a hallucination."""
        segment = self._collapse_repeats(segment)
        text = _norm(segment.text)
        if not text or self._unbelieved(segment) or self._too_fast(segment) or self._is_loop(text):
            return None
        self._recent = [*self._recent[-(self.rules.max_identical_in_a_row - 1) :], text]
        return segment

    def _unbelieved(self, segment: Segment) -> bool:
        """Whisper doubts that anyone speaks, its opening word, and the segment as a whole."""
        if segment.no_speech_prob < self.rules.doubtful_no_speech:
            return False
        # Punctuation is no word; a word without a probability (no word timings) can't be judged.
        scores = [w.probability for w in segment.words if _norm(w.text)]
        known = [p for p in scores if p is not None]
        if not known or len(known) < len(scores) or known[0] >= self.rules.unbelieved_word:
            return False
        return _geometric_mean(known) < self.rules.believed_segment

    def _too_fast(self, segment: Segment) -> bool:
        chars = len(segment.text)
        if chars < self.rules.min_chars_for_cps:
            return False
        duration = segment.end - segment.start
        return duration <= 0 or chars / duration > self.rules.max_cps

    def _is_loop(self, text: str) -> bool:
        if not self._recent or self._recent[-1] != text:
            return False
        long_enough = len(text.split()) >= self.rules.min_words_for_loop
        in_a_row = sum(1 for t in self._recent if t == text) + 1
        return long_enough or in_a_row > self.rules.max_identical_in_a_row

    def _collapse_repeats(self, segment: Segment) -> Segment:
        words = list(segment.words)
        keys = [_norm(w.text) for w in words]
        timeless = _timeless_copies(words, keys, self.rules)
        keep = [k and not t for k, t in zip(_keep_mask(keys, self.rules), timeless, strict=True)]
        if all(keep):
            return segment
        kept = tuple(w for w, k in zip(words, keep, strict=True) if k)
        text = "".join(w.text for w in kept).strip()
        start, end = (kept[0].start, kept[-1].end) if kept else (segment.start, segment.start)
        return replace(segment, words=kept, text=text, start=start, end=end)


def _geometric_mean(values: list[float]) -> float:
    return math.exp(sum(math.log(max(v, 1e-9)) for v in values) / len(values))


def _keep_mask(keys: list[str], rules: FilterRules) -> list[bool]:
    """Marks the words of back-to-back repeats beyond the allowed count for removal."""
    keep = [True] * len(keys)
    i = 0
    while i < len(keys):
        advanced = False
        for n in range(1, rules.longest_phrase + 1):
            reps = _repeats_at(keys, i, n)
            allowed = rules.max_word_repeats if n == 1 else rules.max_phrase_repeats
            if reps > allowed:
                # Keep one copy: a loop says nothing more the second time.
                for j in range(i + n, i + n * reps):
                    keep[j] = False
                i += n * reps
                advanced = True
                break
        if not advanced:
            i += 1
    return keep


def _timeless_copies(words: list[Word], keys: list[str], rules: FilterRules) -> list[bool]:
    """Marks a phrase's copy right after (or before) itself most of whose words Whisper gave
    no time, where the other copy has time: tiny.en wrote "10 of clubs 4 queen of clubs 4
    queen of clubs" for "ten of clubs four queen of clubs", three of the last four words 0 s
    long. Copies are looked for from the end, where a decoder loops, and none overlaps one
    marked ("clubs 4 queen of" is there twice too)."""
    timeless = [False] * len(words)
    for i in range(len(words) - 2, 1, -1):
        for n in range(2, min(rules.longest_phrase, i, len(words) - i) + 1):
            before, after = slice(i - n, i), slice(i, i + n)
            if keys[before] != keys[after] or not all(keys[after]) or any(timeless[i - n : i + n]):
                continue
            first, second = (_mostly_timeless(words[k], rules) for k in (before, after))
            if first != second:
                timeless[after if second else before] = [True] * n
                break
    return timeless


def _mostly_timeless(words: list[Word], rules: FilterRules) -> bool:
    return 2 * sum(w.end - w.start < rules.timeless_word_s for w in words) > len(words)


def _repeats_at(keys: list[str], i: int, n: int) -> int:
    phrase = keys[i : i + n]
    if len(phrase) < n or not all(phrase):
        return 0
    reps = 1
    while keys[i + reps * n : i + (reps + 1) * n] == phrase:
        reps += 1
    return reps
