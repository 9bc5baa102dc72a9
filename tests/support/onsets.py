"""When each sentence of a known script is shown: cues matched to the script by their words.

A sentence's words are found among the cues' words by a least-edit alignment (so a misheard
word, or a sentence Whisper punctuated differently, still lands where it belongs). A sentence
starts to be shown with the cue holding its first recognised word, when that word opens the
cue; a sentence that begins inside a cue (short utterances Whisper wrote as one sentence) is
timed by that word's own start, which is what the cue's layout follows. It is shown until the
end of the cue holding its last recognised word.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine.protocol import Cue, Word
from tests.support.synth import Sentence
from tests.support.wer import align, words


@dataclass(frozen=True)
class Shown:
    sentence: Sentence
    first: Cue  # the cue holding its first recognised word
    first_word: Word
    last: Cue  # the cue holding its last recognised word
    last_word: Word

    @property
    def opens_cue(self) -> bool:
        return bool(self.first.words) and self.first.words[0] is self.first_word

    @property
    def closes_cue(self) -> bool:
        return bool(self.last.words) and self.last.words[-1] is self.last_word

    @property
    def onset(self) -> float:
        return self.first.start if self.opens_cue else self.first_word.start

    @property
    def onset_error(self) -> float:
        """Seconds the sentence is shown after (+) or before (-) it is spoken."""
        return self.onset - self.sentence.start


def shown(sentences: Sequence[Sentence], cues: Sequence[Cue]) -> list[Shown]:
    """Each sentence of which a word was recognised, with the cues that show it. The cues
    must carry their words."""
    reference, owner = [], []
    for k, sentence in enumerate(sentences):
        found = words(sentence.text)
        reference += found
        owner += [k] * len(found)
    hypothesis, holder = [], []
    for cue in cues:
        for word in cue.words or ():
            found = words(word.text)
            hypothesis += found
            holder += [(cue, word)] * len(found)
    spans: dict[int, list[tuple[Cue, Word]]] = {}
    for r, h in align(reference, hypothesis):
        if r is not None and h is not None:
            spans.setdefault(owner[r], []).append(holder[h])
    return [Shown(sentences[k], *held[0], *held[-1]) for k, held in sorted(spans.items())]
