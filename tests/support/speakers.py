"""Scoring speaker turns against a synthesised clip whose voice per sentence is known."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from itertools import permutations

import numpy as np

from engine.diarize import Turn
from tests.support.synth import Clip

_RATE = 100  # scoring frames per second


def frame_accuracy(turns: Sequence[Turn], clip: Clip) -> float:
    """Share of the clip's speech frames (inside sentences) labelled with the right voice, under
    the best one-to-one mapping of labels to voices; a speech frame no turn covers is wrong."""
    truth, predicted = _frames(turns, clip)
    return _hits(truth, predicted, best_mapping(turns, clip)) / max(len(truth), 1)


def best_mapping(turns: Sequence[Turn], clip: Clip) -> dict[str, str]:
    """Label -> voice, one to one, labelling the most speech frames right. A label left out of
    the mapping (more labels than voices) is wrong wherever it is used."""
    truth, predicted = _frames(turns, clip)
    labels = sorted(set(predicted.tolist()) - {""})
    options = sorted(set(truth.tolist())) + [None] * len(labels)
    candidates = (
        {label: voice for label, voice in zip(labels, choice, strict=True) if voice}
        for choice in set(permutations(options, len(labels)))
    )
    return max(candidates, key=lambda mapping: _hits(truth, predicted, mapping), default={})


def sentence_speakers(turns: Sequence[Turn], clip: Clip) -> list[str | None]:
    """The label covering most of each sentence (None where no turn covers any of it)."""
    labels = _label_frames(turns, _frame(clip.duration) + 1)
    majority = []
    for sentence in clip.sentences:
        counts = Counter(labels[_frame(sentence.start) : _frame(sentence.end)].tolist())
        counts.pop("", None)
        majority.append(counts.most_common(1)[0][0] if counts else None)
    return majority


def _frame(t: float) -> int:
    return round(t * _RATE)


def _frames(turns: Sequence[Turn], clip: Clip) -> tuple[np.ndarray, np.ndarray]:
    """(true voice, predicted label) for each speech frame of the clip."""
    truth = np.full(_frame(clip.duration) + 1, "", dtype=object)
    for sentence in clip.sentences:
        truth[_frame(sentence.start) : _frame(sentence.end)] = sentence.voice
    speech = truth != ""
    return truth[speech], _label_frames(turns, len(truth))[speech]


def _label_frames(turns: Sequence[Turn], count: int) -> np.ndarray:
    frames = np.full(count, "", dtype=object)
    for turn in turns:
        frames[_frame(turn.start) : _frame(turn.end)] = turn.speaker
    return frames


def _hits(truth: np.ndarray, predicted: np.ndarray, mapping: dict[str, str]) -> int:
    return sum(
        int(np.sum((predicted == label) & (truth == voice))) for label, voice in mapping.items()
    )
