"""The chunks Whisper decodes (issue 18): every bit of speech in exactly one, none longer than
a window, the first short, none reaching into a long pause or into its neighbour."""

import random
from itertools import pairwise

from engine.speech_chunks import FIRST_S, MAX_GAP_S, PAD_S, WINDOW_S, plan


def _regions(seed: int, count: int = 200) -> list[tuple[float, float]]:
    rng, t, regions = random.Random(seed), 0.0, []
    for _ in range(count):
        t += rng.choice([0.2, 0.5, 1.0, 3.0, 8.0]) * rng.random()
        length = rng.uniform(0.3, 12.0)
        regions.append((t, t + length))
        t += length
    return regions


def test_every_region_lies_in_one_chunk_and_chunks_keep_their_limits():
    for seed in range(20):
        regions = _regions(seed)
        duration = regions[-1][1] + 1.0
        chunks = plan(regions, duration)
        for start, end in regions:
            holding = [c for c in chunks if c.start <= start and end <= c.end]
            assert len(holding) == 1, (start, end)
        for before, after in pairwise(chunks):
            assert before.end <= after.start  # no word is decoded twice
        assert all(c.end - c.start <= WINDOW_S for c in chunks)
        # The first is decoded alone, for an early cue: short unless one region is longer.
        first_start, first_end = regions[0]
        longest_first = max(FIRST_S, first_end - first_start) + 2 * PAD_S
        assert chunks[0].end - chunks[0].start <= longest_first


def test_a_long_pause_ends_a_chunk():
    chunks = plan([(1.0, 3.0), (3.0 + MAX_GAP_S + 0.5, 8.0), (8.5, 9.0)], 20.0)
    assert len(chunks) == 2
    assert chunks[0].end < 3.0 + MAX_GAP_S + 0.5 <= chunks[1].start + PAD_S


def test_seek_names_the_chunk_in_frames():
    [chunk] = plan([(12.345, 14.0)], 20.0)
    assert chunk.seek == round((12.345 - PAD_S) * 100)


def test_no_speech_no_chunks():
    assert plan([], 10.0) == []
