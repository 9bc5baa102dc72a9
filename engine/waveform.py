"""The loudness outline of a media file's audio: peaks to draw its waveform from."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from engine.media import decode_audio

# Enough for the outline's shape at any zoom a page draws: peaks, not speech.
_SAMPLE_RATE = 4000
# Bars in all, so an hour's outline stays small enough to send with every edit.
_MAX_PEAKS = 6000
_MAX_PER_SECOND = 20.0


class Peaks(NamedTuple):
    per_second: float  # peaks per second of audio
    values: tuple[float, ...]  # each 0-1, the loudest sample of its slice, the loudest 1


def peaks(path: Path) -> Peaks:
    """The loudest sample of each slice of `path`'s audio, scaled so the loudest is 1; a
    SubtideError when it has no audio to read."""
    import numpy

    samples = numpy.abs(decode_audio(path, _SAMPLE_RATE))
    duration = len(samples) / _SAMPLE_RATE
    per_second = min(_MAX_PER_SECOND, _MAX_PEAKS / max(duration, 1.0))
    size = max(1, round(_SAMPLE_RATE / per_second))
    count = -(-len(samples) // size)
    slices = numpy.zeros(count * size, dtype=numpy.float32)
    slices[: len(samples)] = samples
    loudest = slices.reshape(count, size).max(axis=1)
    loudest /= max(float(loudest.max()), 1e-4)
    return Peaks(_SAMPLE_RATE / size, tuple(round(float(v), 3) for v in loudest))
