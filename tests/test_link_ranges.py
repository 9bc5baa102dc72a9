"""Time ranges of a link: what a Source accepts, and how much audio a range decodes."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from engine import media
from engine.protocol import Source
from tests.support.synth import Clip


def test_a_range_is_for_links_only_and_starts_before_it_ends():
    assert Source(url="https://example.com/v", start=30.0, end=60.0).ranged
    assert Source(url="https://example.com/v", end=60.0).ranged
    assert not Source(url="https://example.com/v").ranged
    for bad in (
        {"path": "talk.mp4", "start": 1.0},
        {"url": "https://example.com/v", "start": 60.0, "end": 30.0},
        {"url": "https://example.com/v", "start": -1.0},
    ):
        with pytest.raises(ValidationError):
            Source(**bad)


def test_only_the_range_is_decoded(clips):
    short: Clip = clips.short
    whole = media.decode_audio(short.wav)
    part = media.decode_audio(short.wav, start=1.0, end=2.5)
    assert len(part) == pytest.approx(1.5 * 16000, abs=160)
    # Seeking in the file lands on the same samples as cutting the whole decode.
    assert abs(part[:8000] - whole[16000:24000]).max() < 1e-3
    tail = media.decode_audio(short.wav, start=1.0)
    assert len(tail) == pytest.approx(len(whole) - 16000, abs=160)
