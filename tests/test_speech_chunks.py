"""The chunks Whisper decodes (issue 18): every bit of speech in exactly one, none longer than
a window, the first short, none reaching into a long pause or into its neighbour."""

import random
from itertools import pairwise

from engine.speech_chunks import (
    FIRST_S,
    MAX_GAP_S,
    PAD_S,
    WINDOW_S,
    Chunk,
    plan,
    unheard,
    with_head,
)


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


def test_a_later_part_of_a_file_is_planned_from_where_the_first_chunk_ended():
    chunks = plan([(10.05, 12.0), (12.5, 20.0)], 30.0, WINDOW_S, since=10.0)
    assert chunks[0].start == 10.0  # its padding stops at the chunk before it
    assert len(chunks) == 1


def test_the_first_chunk_is_preceded_by_its_head_and_the_chunks_after_stay_as_planned():
    # 75 s of speech in short sentences: whole windows, then the first few seconds of the
    # first of them alone, for an early cue.
    sentences = [(k * 3.0, k * 3.0 + 2.5) for k in range(25)]
    windows = plan(sentences, 76.0, WINDOW_S - 2 * PAD_S)
    head, first, *rest = with_head(windows, sentences, 76.0)
    assert rest == windows[1:]
    assert (first.start, first.end) == (windows[0].start, windows[0].end)
    assert head.start == first.start and head.end - head.start <= FIRST_S + 2 * PAD_S
    # The first chunk's own words begin where the head ends, in the pause after its speech.
    assert first.since == head.end and 5.5 < head.end < 6.0
    assert head.seek < first.seek < rest[0].seek
    assert head.head and not first.head and not any(chunk.head for chunk in rest)
    # A first chunk no longer than a head is left alone; so is one whose first region is
    # longer than a head.
    short = plan([(1.0, 3.0), (3.5, 5.0)], 6.0)
    assert with_head(short, [(1.0, 3.0), (3.5, 5.0)], 6.0) == short
    reading = [(0.2, 14.1), (14.6, 24.0)]
    assert with_head(plan(reading, 25.0, WINDOW_S), reading, 25.0) == plan(reading, 25.0, WINDOW_S)
    assert with_head([], [], 6.0) == []


def test_speech_in_the_head_is_not_unheard_by_the_chunk_decoded_again_after_it():
    chunk = Chunk(0.0, 20.0, since=6.0)
    regions = [(0.5, 5.5), (6.5, 12.0)]
    assert unheard(chunk, [(6.6, 11.9)], regions) == []


def test_speech_no_word_covers_is_decoded_again_with_what_its_words_follow():
    chunk = Chunk(0.0, 20.0)
    regions = [(0.5, 4.0), (5.0, 7.5), (8.0, 12.0), (12.4, 12.9)]
    # A sentence passed over (5.0-7.5), and half a second after the last word (12.4-12.9).
    words = [(0.6, 1.5), (1.5, 3.9), (8.1, 10.0), (10.0, 12.0)]
    [(skipped, new_from), (tail, tail_from)] = unheard(chunk, words, regions)
    assert (skipped.start, skipped.end) == (5.0 - PAD_S, 7.5 + PAD_S) and new_from == skipped.start
    # Half a second heard alone is decoded with the seconds before it; its words are new
    # from the last word's end.
    assert tail.start < 12.0 - 2.0 and tail.end == 20.0 and tail_from == 12.0


def test_heard_speech_a_short_slip_or_a_silent_chunk_are_not_decoded_again():
    chunk = Chunk(0.0, 10.0)
    regions = [(0.5, 4.0), (4.6, 5.2), (6.0, 9.0)]
    # The word said at 4.6-5.2 was aligned short of it, at 4.0-4.5: less than a second unheard.
    words = [(0.6, 3.9), (4.0, 4.5), (6.1, 9.05)]
    assert unheard(chunk, words, regions) == []
    assert unheard(chunk, [], regions) == [], "no words at all: music or noise"
    assert unheard(chunk, [(0.6, 8.9)], regions) == [], "0.1 s after the last word"
