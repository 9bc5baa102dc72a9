"""A job's Events cut to fit one RunPod stream chunk, and put back together by clients.

RunPod splits a streamed output over 1 MB into several chunks, while every reader of the stream
(our client, anyone's) takes one chunk as one Event. `bounded` keeps each Event within a byte
budget: a big `cues` event becomes several, and a big result travels slim: its cues were
streamed already, so it names them by id (`ResultEvent.streamed_cue_ids`) instead of repeating
them. `Reassembler` gives a client the full result back.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from engine.protocol import Cue, CuesEvent, Event, ResultEvent

# Half of RunPod's 1 MB per chunk: the SDK sends `json.dumps` text, which puts a space after
# every separator (about a tenth more than the compact JSON measured here).
MAX_CHUNK_BYTES = 512_000


class MissingCues(ValueError):
    """A slim result names cues that never arrived (stream chunks were lost)."""


def size_of(event: Event | Cue) -> int:
    """Bytes of the compact UTF-8 JSON text of `event`."""
    return len(event.model_dump_json().encode())


_CUES_ENVELOPE = size_of(CuesEvent(cues=[]))


class Bounder:
    """Events made to fit `max_bytes` of JSON each, one at a time, for a stream that comes in
    pieces (a worker's batches): big `cues` events split, a big result made slim. It keeps
    every cue streamed so far, at its last version, which a slim result relies on."""

    def __init__(self, max_bytes: int = MAX_CHUNK_BYTES) -> None:
        self._max = max_bytes
        self._latest: dict[int, Cue] = {}

    def feed(self, event: Event) -> Iterator[Event]:
        """`event` as one or more events that fit. Raises ValueError for a single cue over the
        limit, which no split can carry."""
        if isinstance(event, CuesEvent):
            self._latest.update((cue.id, cue) for cue in event.cues)
            yield from split_cues(event.cues, self._max)
        elif isinstance(event, ResultEvent):
            yield from _fitted_result(event, self._latest, self._max)
        else:
            yield event  # progress and errors: a few short strings


def bounded(events: Iterable[Event], max_bytes: int = MAX_CHUNK_BYTES) -> Iterator[Event]:
    """`events` with each one at most `max_bytes` of JSON (see Bounder). A result that fits
    stays whole, so a reader of only the result (a `/runsync` caller) still gets everything for
    all but long jobs."""
    bounder = Bounder(max_bytes)
    for event in events:
        yield from bounder.feed(event)


def split_cues(cues: Sequence[Cue], max_bytes: int = MAX_CHUNK_BYTES) -> Iterator[CuesEvent]:
    """`cues` as `cues` events of at most `max_bytes` each, in order."""
    whole = CuesEvent(cues=list(cues))
    if size_of(whole) <= max_bytes:  # the usual case, measured with one dump
        yield whole
        return
    batch: list[Cue] = []
    used = _CUES_ENVELOPE
    for cue in cues:
        size = size_of(cue) + 1  # and the comma before the next one
        if _CUES_ENVELOPE + size > max_bytes:
            raise ValueError(f"cue {cue.id} alone is {size} bytes, over {max_bytes}")
        if batch and used + size > max_bytes:
            yield CuesEvent(cues=batch)
            batch, used = [], _CUES_ENVELOPE
        batch.append(cue)
        used += size
    if batch:
        yield CuesEvent(cues=batch)


def _fitted_result(
    result: ResultEvent, latest: dict[int, Cue], max_bytes: int
) -> Iterator[CuesEvent | ResultEvent]:
    if size_of(result) <= max_bytes:
        yield result
        return
    # Cues the stream lacks, or carried in another version, go first: the slim result's ids
    # must then name exactly the result's cues.
    unsent = [cue for cue in result.cues if latest.get(cue.id) != cue]
    if unsent:
        latest.update((cue.id, cue) for cue in unsent)
        yield from split_cues(unsent, max_bytes)
    slim = result.model_copy(update={"cues": [], "streamed_cue_ids": [c.id for c in result.cues]})
    if size_of(slim) > max_bytes:
        # Rendered files are made from the cues, and clients render a result without files
        # themselves: the files of a long job are what gives way.
        slim = slim.model_copy(update={"files": []})
    yield slim


class Reassembler:
    """The client's side of `bounded`: feed it one job's Events in order; each comes back as
    it is, except a slim result, which comes back whole (its cues at their last streamed
    version, in the result's order)."""

    def __init__(self) -> None:
        self._latest: dict[int, Cue] = {}

    def feed(self, event: Event) -> Event:
        """`event`, or the full result for a slim one; MissingCues when the stream lost some
        of its cues (the aggregated output at `/status` still has them)."""
        if isinstance(event, CuesEvent):
            self._latest.update((cue.id, cue) for cue in event.cues)
        elif isinstance(event, ResultEvent) and event.streamed_cue_ids is not None:
            return self._whole(event)
        return event

    def _whole(self, slim: ResultEvent) -> ResultEvent:
        ids = slim.streamed_cue_ids or []
        missing = sum(1 for cue_id in ids if cue_id not in self._latest)
        if missing:
            raise MissingCues(f"{missing} of the result's {len(ids)} cues never arrived")
        cues = [self._latest[cue_id] for cue_id in ids]
        return slim.model_copy(update={"cues": cues, "streamed_cue_ids": None})


def reassembled(events: Iterable[Event]) -> Iterator[Event]:
    """`events` fed through one `Reassembler`."""
    reassembler = Reassembler()
    for event in events:
        yield reassembler.feed(event)
