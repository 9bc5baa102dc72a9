"""One set of speakers for a source cut into parts: each part's worker labels its own speakers
(SPEAKER_1 of part 2 is nobody in particular in part 1) and sends each label's voice embedding;
here labels whose voices match are linked into one speaker for the whole source.

Pure Python: the client installs no numpy-heavy stack, and a few dozen labels are quick.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# Average cosine similarity above which two labels are one voice. The built-in encoder puts
# different voices of the test dialogues 0.66-0.72 apart and halves of one voice at 0.83-0.95,
# as `engine.diarize_builtin` does when it decides a cluster split one voice in two.
SAME_VOICE = 0.8


@dataclass(frozen=True)
class Label:
    """A speaker label of one part, with the voice its worker heard."""

    part: int
    name: str
    voice: tuple[float, ...]


def link(
    labels: Sequence[Label],
    *,
    num_speakers: int | None = None,
    max_speakers: int | None = None,
    threshold: float = SAME_VOICE,
) -> list[list[Label]]:
    """The labels grouped by speaker: average-linkage agglomerative clustering on cosine
    similarity, merging while two groups sound alike, or while there are more groups than the
    job allows, and never below `num_speakers`. Two labels of one part are never merged: that
    part's diarizer already told them apart."""
    groups = [[label] for label in labels]
    high = num_speakers or max_speakers or len(groups)
    low = num_speakers or 1
    while len(groups) > low:
        pair = _closest(groups)
        if pair is None:
            break
        similarity, a, b = pair
        if similarity < threshold and len(groups) <= high:
            break
        groups[a] += groups.pop(b)
    return groups


def voice_of(group: Sequence[Label]) -> list[float]:
    """The group's voice: the unit mean of its labels' voices (empty when none has one)."""
    heard = [label.voice for label in group if label.voice]
    return _unit([sum(values) for values in zip(*heard, strict=True)])


def _closest(groups: list[list[Label]]) -> tuple[float, int, int] | None:
    best: tuple[float, int, int] | None = None
    for a in range(len(groups)):
        for b in range(a + 1, len(groups)):
            if {x.part for x in groups[a]} & {y.part for y in groups[b]}:
                continue
            similarity = _average_similarity(groups[a], groups[b])
            if best is None or similarity > best[0]:
                best = (similarity, a, b)
    return best


def _average_similarity(first: Sequence[Label], second: Sequence[Label]) -> float:
    pairs = [_cosine(x.voice, y.voice) for x in first for y in second]
    return sum(pairs) / len(pairs)


def _cosine(x: Sequence[float], y: Sequence[float]) -> float:
    if len(x) != len(y):
        return 0.0  # a label without a voice (or another encoder's) is like no one
    norms = math.hypot(*x) * math.hypot(*y)
    return sum(a * b for a, b in zip(x, y, strict=True)) / norms if norms else 0.0


def _unit(vector: list[float]) -> list[float]:
    norm = math.hypot(*vector)
    return [x / norm for x in vector] if norm else vector
