"""The pieces of audio Whisper decodes: spans of speech found by the VAD, each at most one
30 s window, the first kept short so the first cue comes early; and, once decoded, the speech
in them that no word covers, to decode again. Batched decoding takes them several at a time;
a resumed job starts at one (its `seek`)."""

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
# Speech keeps some of the quiet around it: a word's soft start and end, and the lead-in
# Whisper hears best with (faster-whisper's VAD pads by as much).
PAD_S = 0.4
# A short first chunk can leave the speech after it a window more to decode than the file
# needs (a tenth of a minute's job), and it is heard with less around it: on a short file the
# first chunk is the shortest of these that costs no window more.
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
        if not chunk.start <= start < chunk.end or start >= last:
            continue
        if any(w_start < end and start < w_end for w_start, w_end in words):
            continue
        before = max((w_end for _, w_end in words if w_end <= start), default=chunk.start)
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
