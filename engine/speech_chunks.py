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
FIRST_S = 10.0
# A pause this long ends a chunk: Whisper invents text in long silences it is given.
MAX_GAP_S = 2.0
# Speech keeps a little of the quiet around it: a word's soft start and end.
PAD_S = 0.2


@dataclass(frozen=True)
class Chunk:
    start: float
    end: float

    @property
    def seek(self) -> int:
        """Its start in 10 ms frames, as `Segment.seek` names the piece a segment came from."""
        return round(self.start * 100)


def plan(regions: Sequence[tuple[float, float]], duration: float) -> list[Chunk]:
    """Chunks covering the speech `regions` (seconds, sorted, none longer than a window)."""
    spans: list[list[float]] = []
    for region_start, region_end in regions:
        limit = FIRST_S if len(spans) <= 1 else WINDOW_S - 2 * PAD_S
        last = spans[-1] if spans else None
        if last and region_start - last[1] <= MAX_GAP_S and region_end - last[0] <= limit:
            last[1] = region_end
        else:
            spans.append([region_start, region_end])
    return [_padded(spans, k, duration) for k in range(len(spans))]


def _padded(spans: list[list[float]], k: int, duration: float) -> Chunk:
    """Span k with some of the quiet around it, never reaching into its neighbours."""
    start, end = spans[k]
    before = (start - spans[k - 1][1]) / 2 if k else start
    after = (spans[k + 1][0] - end) / 2 if k + 1 < len(spans) else duration - end
    return Chunk(start - min(PAD_S, before), end + min(PAD_S, after))
