"""The pieces of audio Whisper decodes: spans of speech found by the VAD, each at most one
30 s window; the first few seconds of speech also alone, before the rest, so the first cue
comes early; and, once decoded, the speech in them that no word covers, to decode again.
Batched decoding takes them several at a time; a resumed job starts at one (its `seek`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# Whisper's window: a chunk longer would be cut.
WINDOW_S = 30.0
# The head of the first chunk is decoded alone before any batch, and its cues shown: short,
# so they come soon; long enough for the language to be detected from it.
FIRST_S = 6.0
# A pause this long ends a chunk: Whisper invents text in long silences it is given.
MAX_GAP_S = 2.0
# Speech keeps some of the quiet around it: a word's soft start and end, and the lead-in
# Whisper hears best with (faster-whisper's VAD pads by as much).
PAD_S = 0.4


@dataclass(frozen=True)
class Chunk:
    start: float
    end: float
    # Where its own words begin, when the words before are another chunk's: the first chunk
    # is decoded whole after its head, so that the speech after the head is heard with what
    # comes before it.
    since: float | None = None
    # The first chunk's head, decoded alone for an early cue (see with_head).
    head: bool = False

    @property
    def own_from(self) -> float:
        return self.start if self.since is None else self.since

    @property
    def seek(self) -> int:
        """Where its own words begin, in 10 ms frames, as `Segment.seek` names the piece a
        segment came from."""
        return round(self.own_from * 100)


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


def with_head(
    chunks: Sequence[Chunk], regions: Sequence[tuple[float, float]], duration: float
) -> list[Chunk]:
    """`chunks`, the first preceded by its head: its speech up to FIRST_S long. The head is
    decoded alone, for an early cue, and the first chunk then whole, its words after the
    head kept: heard alone, the head's speech loses what the speech after it tells Whisper,
    and its words are only the head's to show early. Where the first chunk's speech allows
    no head that short (a region longer), it has none: decoding one twice would cost more
    than the head saves."""
    if not chunks:
        return []
    first = chunks[0]
    inside = [region for region in regions if first.start <= region[0] < first.end]
    head = plan(inside, duration, FIRST_S, since=first.start)[0]
    if head.end >= first.end or head.end - head.start > FIRST_S + 2 * PAD_S:
        return list(chunks)
    early = Chunk(head.start, head.end, head=True)
    return [early, Chunk(first.start, first.end, since=head.end), *chunks[1:]]


def _padded(spans: list[list[float]], k: int, duration: float, since: float) -> Chunk:
    """Span k with some of the quiet around it, never reaching into its neighbours."""
    start, end = spans[k]
    before = (start - spans[k - 1][1]) / 2 if k else start - since
    after = (spans[k + 1][0] - end) / 2 if k + 1 < len(spans) else duration - end
    return Chunk(start - min(PAD_S, max(before, 0.0)), end + min(PAD_S, after))


def unheard(
    chunk: Chunk, words: Sequence[tuple[float, float]], regions: Sequence[tuple[float, float]]
) -> list[tuple[Chunk, float]]:
    """The stretches of `chunk` that hold speech the VAD found (`regions`) but no decoded word
    covers (`words`: start, end, in order), to decode again, each with the time from which
    its words are new. Whisper passes over speech at times: it writes its end of text after
    a pause, or jumps its timestamps past a sentence. Between words, the stretch runs from
    the word before to the word after. After the last word, a short stretch takes a few
    seconds before it along: Whisper invents text for half a second of speech heard alone.
    A chunk with no words at all is judged silent (music, noise) and not tried again."""
    if not words:
        return []
    gaps: list[tuple[float, float, float]] = []  # start, end, seconds of speech
    last = max(w_end for _, w_end in words)
    for start, end in regions:
        if not chunk.own_from <= start < chunk.end or start >= last:
            continue
        if any(w_start < end and start < w_end for w_start, w_end in words):
            continue
        before = max((w_end for _, w_end in words if w_end <= start), default=chunk.own_from)
        after = min((w_start for w_start, _ in words if w_start >= end), default=chunk.end)
        gap = (max(start - PAD_S, before), min(end + PAD_S, after))
        speech = end - start
        if gaps and gaps[-1][1] >= gap[0]:  # unheard regions with no word between them
            gap, speech = (gaps[-1][0], gap[1]), speech + gaps.pop()[2]
        gaps.append((*gap, speech))
    again = [(Chunk(a, b), a) for a, b, speech in gaps if speech >= _MISSED_SPEECH_S]
    # After the last word, the voice that goes on in its region counts too.
    beyond = [(max(start, last), min(end, chunk.end)) for start, end in regions if end > last]
    tail = sum(max(end - start, 0.0) for start, end in beyond)
    if tail >= _MISSED_SPEECH_S:
        again.append((Chunk(max(beyond[0][0] - PAD_S, last), chunk.end), last))
    elif tail >= _MISSED_TAIL_S:
        since = max(chunk.start, last - _TAIL_CONTEXT_S, *(gap.end for gap, _ in again))
        again.append((Chunk(since, chunk.end), last))
    return again


# Speech no word covers that is decoded again: after the chunk's last word, this much; between
# words, more, as a word Whisper did write can be aligned short of where it was said. Speech
# after the last word shorter than _MISSED_SPEECH_S is decoded with what came before it.
_MISSED_TAIL_S = 0.3
_MISSED_SPEECH_S = 1.0
_TAIL_CONTEXT_S = 3.0
