"""The pieces of audio Whisper decodes: spans of speech found by the VAD, each at most one
30 s window, the first kept short so the first cue comes early. Batched decoding takes them
several at a time; a resumed job starts at one (its `seek`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# Whisper's window: a chunk longer would be cut.
WINDOW_S = 30.0
# The first chunk is decoded alone before any batch, and its cues shown: short, so they come
# soon; long enough for the language to be detected from it.
FIRST_S = 6.0
# A pause this long ends a chunk: Whisper invents text in long silences it is given.
MAX_GAP_S = 2.0
# Speech keeps a little of the quiet around it: a word's soft start and end.
PAD_S = 0.2
# Every chunk is encoded as a whole window, so on a short file a short first chunk can cost
# a window more than the file needs (a tenth of a minute's job): there the first chunk is
# the shortest of these that does not.
_FIRST_CHOICES_S = (FIRST_S, 8.0, 10.0, 12.0, 16.0, 20.0)


@dataclass(frozen=True)
class Chunk:
    start: float
    end: float

    @property
    def seek(self) -> int:
        """Its start in 10 ms frames, as `Segment.seek` names the piece a segment came from."""
        return round(self.start * 100)


def plan(
    regions: Sequence[tuple[float, float]],
    duration: float,
    first_s: float = FIRST_S,
    since: float = 0.0,
) -> list[Chunk]:
    """Chunks covering the speech `regions` (seconds, sorted, none longer than a window), the
    first at most `first_s` long where its regions allow; none reaches before `since`."""
    spans: list[list[float]] = []
    for region_start, region_end in regions:
        limit = first_s if len(spans) <= 1 else WINDOW_S - 2 * PAD_S
        last = spans[-1] if spans else None
        if last and region_start - last[1] <= MAX_GAP_S and region_end - last[0] <= limit:
            last[1] = region_end
        else:
            spans.append([region_start, region_end])
    return [_padded(spans, k, duration, since) for k in range(len(spans))]


def first_length(regions: Sequence[tuple[float, float]], duration: float) -> float:
    """How long the first chunk of a whole file's `regions` may be: short, unless that takes
    more chunks than the file needs."""
    fewest = len(plan(regions, duration, WINDOW_S - 2 * PAD_S))
    return next(
        (s for s in _FIRST_CHOICES_S if len(plan(regions, duration, s)) <= fewest),
        WINDOW_S - 2 * PAD_S,
    )


def _padded(spans: list[list[float]], k: int, duration: float, since: float) -> Chunk:
    """Span k with some of the quiet around it, never reaching into its neighbours."""
    start, end = spans[k]
    before = (start - spans[k - 1][1]) / 2 if k else start - since
    after = (spans[k + 1][0] - end) / 2 if k + 1 < len(spans) else duration - end
    return Chunk(start - min(PAD_S, max(before, 0.0)), end + min(PAD_S, after))
