"""The process a Whisper model runs in (`python -m engine.asr_worker REQUESTS REPLIES`).

A CTranslate2 call cannot be interrupted and one takes seconds on a CPU, so a job that must
stop now is stopped by killing this process (`engine.asr.Transcriber` does that). It loads one
model, then transcribes one request at a time. The two file descriptors are the ends of pipes
that `multiprocessing.connection.Connection` reads and writes; the parent going away closes the
request pipe (this process then exits) or the reply pipe (its next send fails, and it exits).

Requests: a `Load` first, then per job a `Job` followed by the audio's 16-bit samples.
Replies: `("ready",)` or `("error", message)` to the load; per job `("info", language,
probability, duration, regions)`, then `("segment", RawSegment)` for each, with
`("speech", regions)` where the VAD found more speech further on and `("quiet", seconds)` once
no word to come starts before then, and last `("end",)`, or `("failed", message)`.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, NamedTuple

from engine import speech_chunks

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("subtide.asr_worker")
SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Load:
    path: str
    device: str
    compute_type: str
    cpu_threads: int
    batch_size: int


@dataclass(frozen=True)
class Job:
    language: str | None
    initial_prompt: str | None
    beam_size: int
    vad: bool
    resume_seek: int = 0  # the window to decode from, in 10 ms frames (see Segment.seek)


class RawWord(NamedTuple):
    start: float
    end: float
    text: str
    probability: float


class RawSegment(NamedTuple):
    """faster-whisper's segment, reduced to plain values that pickle small."""

    start: float
    end: float
    text: str
    words: tuple[RawWord, ...]
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    seek: int


class Samples:
    """A job's audio as the parent sends it: 16-bit samples, half the memory of float32 (an
    hour is 115 MB), made float32 a stretch at a time, the same values decode_audio gives."""

    def __init__(self, data: bytes) -> None:
        import numpy as np

        self._samples = np.frombuffer(data, dtype=np.int16)

    @property
    def duration(self) -> float:
        return len(self._samples) / SAMPLE_RATE

    def between(self, start: float, end: float | None = None) -> np.ndarray:
        last = None if end is None else int(end * SAMPLE_RATE)
        piece = self._samples[int(start * SAMPLE_RATE) : last].astype("float32")
        piece /= 32768.0
        return piece


def main(requests: Connection, replies: Connection) -> None:
    load: Load = requests.recv()
    try:
        model = _model(load)
    except (RuntimeError, ValueError, OSError) as exc:
        replies.send(("error", _first_line(exc)))
        return
    replies.send(("ready",))
    # EOFError, BrokenPipeError: the parent closed its end or went away; nobody waits.
    with contextlib.suppress(EOFError, BrokenPipeError):
        while True:
            job: Job = requests.recv()
            _transcribe(model, load, job, requests.recv_bytes(), replies)


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else repr(exc)


_OUT_OF_MEMORY = (
    "the device ran out of memory; a smaller model, or closing other programs, would leave it room"
)


def _model(load: Load) -> Any:
    import ctranslate2
    import numpy as np
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    class Model(WhisperModel):
        """Whisper that encodes no more of the head's window than it needs, and keeps the
        encoding it detected the language from for the decoding of the same chunk: on a CPU
        an encoding is most of a short chunk's time."""

        kept: tuple[np.ndarray, Any] | None = None
        joined: np.ndarray | None = None
        fits: int | None = None  # the most chunks at once, once a batch had no room
        # How many of a window's frames are encoded: fewer than the window's 3000 for the
        # head, as the encoder's time goes with how many (see _encoded_frames).
        frames = _WINDOW_FRAMES

        def detect(self, features: np.ndarray) -> tuple[str, float]:
            encoded = super().encode(features[..., : self.frames])
            self.kept = (features, encoded)
            token, probability = self.model.detect_language(encoded)[0][0]
            return token[2:-2], probability

        def encode(self, features: np.ndarray) -> Any:
            kept, self.kept = self.kept, None
            if kept is not None and np.array_equal(kept[0], features):
                return kept[1]
            features = features[..., : self.frames]
            if self.model.device != "cpu" or len(features) == 1:
                return super().encode(features)
            # A chunk at a time: the encoder's attention scores are most of a batch's memory
            # (100 MB a chunk of base; its encoding is 3 MB), and on a CPU that is no slower
            # (8 chunks of base: 4.4 s, against 5.5 s at once).
            self.joined = np.concatenate(
                [np.asarray(super(Model, self).encode(chunk[None])) for chunk in features]
            )  # kept: the StorageView made of it shares its memory
            return ctranslate2.StorageView.from_array(self.joined)

    model = Model(
        load.path,
        device=load.device,
        compute_type=load.compute_type,
        cpu_threads=load.cpu_threads,
        local_files_only=True,
    )
    return BatchedInferencePipeline(model)


def _transcribe(pipeline: Any, load: Load, job: Job, data: bytes, replies: Connection) -> None:
    """Decodes the speech chunks (engine.speech_chunks) from `job.resume_seek` on: the first
    chunk's head alone, so its cues come early, then `load.batch_size` at a time, which is
    faster on a CPU too. Segments come in order, each batch's as it is decoded. On a long file
    the VAD looks at its start first, and at the rest once the first chunk is decoded."""
    audio = Samples(data)
    duration = audio.duration
    try:
        regions, chunks, rest_from = _start(audio, job, duration)
        language, probability = _language(pipeline, audio, job, chunks[0] if chunks else None)
        replies.send(("info", language, probability, duration, regions))
        if rest_from is not None:
            _decode_batches(pipeline, audio, job, language, [chunks], regions, replies, None)
            more = _speech_after(audio, rest_from, replies)
            replies.send(("speech", more))
            regions = [*regions, *more]
            chunks = speech_chunks.plan(more, duration, _LONGEST_S, since=rest_from)
            batches = _batches(chunks, load.batch_size, first_alone=False)
        else:
            batches = _batches(chunks, load.batch_size, first_alone=True)
        _decode_batches(pipeline, audio, job, language, batches, regions, replies, duration)
    except (RuntimeError, ValueError, MemoryError) as exc:
        log.exception("transcription failed")
        replies.send(("failed", _OUT_OF_MEMORY if _out_of_memory(exc) else _first_line(exc)))
        return
    replies.send(("end",))


def _start(
    audio: Samples, job: Job, duration: float
) -> tuple[list[tuple[float, float]], list[speech_chunks.Chunk], float | None]:
    """The speech regions and chunks to begin with, and where the VAD is still to look (None:
    it has looked at all). On a long file only its start is looked at before the first
    chunk is decoded: an hour's VAD takes a while, and the first cue would wait for it."""
    if not job.vad:
        regions = _windows(duration)
    elif duration > _HEAD_S:
        head = _speech(audio, 0.0, _HEAD_S)
        if head:
            first = speech_chunks.plan(head, duration)[0]
            return [r for r in head if r[1] <= first.end], [first], first.end
        regions = _speech(audio, 0.0)  # nothing said at the start: look at all of it
    else:
        regions = _speech(audio, 0.0)
    chunks = speech_chunks.plan(regions, duration, _LONGEST_S)
    return regions, speech_chunks.with_head(chunks, regions, duration), None


# Audio longer than this is looked at by the VAD in two goes (see _start).
_HEAD_S = 120.0
_LONGEST_S = speech_chunks.WINDOW_S - 2 * speech_chunks.PAD_S


def _decode_batches(
    pipeline: Any,
    audio: Samples,
    job: Job,
    language: str,
    batches: list[list[speech_chunks.Chunk]],
    regions: list[tuple[float, float]],
    replies: Connection,
    then: float | None,
) -> None:
    """Sends the segments of each batch's chunks that are not done yet (`job.resume_seek`),
    one per sentence, and after each batch that no word to come starts before the next
    batch (or `then`, when known, after the last)."""
    for k, batch in enumerate(batches):
        todo = [chunk for chunk in batch if chunk.seek >= job.resume_seek]
        for segment in _decode(pipeline, audio, job, language, todo, regions) if todo else []:
            for sentence in _sentences(segment):
                replies.send(("segment", sentence))
        following = batches[k + 1][0].own_from if k + 1 < len(batches) else then
        if following is not None:
            replies.send(("quiet", following))
        _trim()


def _trim() -> None:
    """Gives the memory a batch or the VAD freed back to the system. glibc keeps it for
    reuse otherwise, 200 MB and more after a batch of 4, and the next batch's peak comes on
    top of what was kept."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _decode(
    pipeline: Any,
    audio: Samples,
    job: Job,
    language: str,
    batch: list[speech_chunks.Chunk],
    regions: list[tuple[float, float]],
) -> list[RawSegment]:
    """The batch's segments in order. Batched decoding does not go on from where Whisper
    stopped, as sequential decoding does: speech the VAD found that no decoded word covers
    (speech_chunks.unheard) is decoded again, once, as chunks of its own."""
    found: dict[int, list[RawSegment]] = {chunk.seek: [] for chunk in batch}
    heads_end = {chunk.seek: chunk.since for chunk in batch}
    for raw in _decoded_in_room(pipeline, audio, job, language, batch):
        # A chunk decoded again after its head: the head's words are the head's.
        head_end = heads_end[raw.seek]
        own = raw if head_end is None else _said_after(raw, head_end)
        if own:
            found[raw.seek].append(own)
    gaps = [
        (gap, chunk.seek, since)
        for chunk in batch
        for gap, since in speech_chunks.unheard(chunk, _word_spans(found[chunk.seek]), regions)
    ]
    parent = {gap.seek: (seek, since) for gap, seek, since in gaps}
    # No more at a time than the batch: its size is what the memory allows.
    for k in range(0, len(gaps), len(batch)):
        again = [gap for gap, _, _ in gaps[k : k + len(batch)]]
        for raw in _decoded_in_room(pipeline, audio, job, language, again):
            seek, since = parent[raw.seek]
            if new := _said_after(raw, since):
                found[seek] = _inserted(found[seek], new._replace(seek=seek))
    return [segment for chunk in batch for segment in found[chunk.seek]]


def _decoded_in_room(
    pipeline: Any, audio: Samples, job: Job, language: str, chunks: list[speech_chunks.Chunk]
) -> list[RawSegment]:
    """`_decoded`, in as many goes as the device's memory needs: the batch size is an
    estimate, and a GPU says when it has no room (a CPU's allocator, under a limit on the
    address space, too). A batch that had none is decoded in halves, and later ones (this
    job's and the next's: the model's memory stays taken) no more chunks at a time than fitted."""
    segments: list[RawSegment] = []
    while chunks:
        size = min(len(chunks), pipeline.model.fits or len(chunks))
        try:
            decoded = list(_decoded(pipeline, audio, job, language, chunks[:size]))
        except (MemoryError, RuntimeError) as exc:
            if size == 1 or not _out_of_memory(exc):
                raise
            log.warning("no room for %d chunks at once, trying %d", size, size // 2)
        else:
            segments += decoded
            chunks = chunks[size:]
            continue
        # Outside the handler: its traceback holds the failed batch's buffers.
        pipeline.model.fits = size // 2
        _trim()
    return segments


def _out_of_memory(exc: BaseException) -> bool:
    # CTranslate2 says "CUDA failed with error out of memory" on a GPU, "mkl_malloc: failed
    # to allocate memory" on a CPU; numpy raises MemoryError.
    text = str(exc)
    return isinstance(exc, MemoryError) or "out of memory" in text or "failed to allocate" in text


def _decoded(
    pipeline: Any, audio: Samples, job: Job, language: str, chunks: list[speech_chunks.Chunk]
) -> Iterator[RawSegment]:
    """faster-whisper's segments of `chunks`, decoded as one batch, on the file's clock. Only
    the stretch of audio the chunks span is made float32."""
    start = chunks[0].start
    span = audio.between(start, chunks[-1].end)
    relative = [speech_chunks.Chunk(c.start - start, c.end - start) for c in chunks]
    pipeline.model.frames = _encoded_frames(chunks)
    segments, _ = pipeline.transcribe(span, **_options(job, language, relative))
    for segment in segments:
        yield _raw(segment, chunks, start)


def _encoded_frames(chunks: list[speech_chunks.Chunk]) -> int:
    """The frames of each window to encode for `chunks`: all of a window's 3000, but for the
    head (speech_chunks.with_head). Whisper, trained on whole windows, hears worse in a cut
    one (measured, bench/quality.py over 8 shifts: tiny.en wrote "close" for "clubs" under
    noise in 3 of 8 runs of a 10 s chunk encoded 21 s long, in none encoded 30 s). The head is
    there to be fast, and the encoder's time goes with its frames: it gets three times its
    length (twice: base wrote "five five five" for "five five" under noise in 1 run of 8),
    at least _QUIET_AFTER_S of quiet after it, and _FEWEST_S in all (less, and a tenth of a
    second of a word came back as "But...")."""
    if not all(chunk.head for chunk in chunks):
        return _WINDOW_FRAMES
    longest = max(chunk.end - chunk.start for chunk in chunks)
    encoded = max(3 * longest, longest + _QUIET_AFTER_S, _FEWEST_S)
    return min(_WINDOW_FRAMES, math.ceil(encoded * 100))


_WINDOW_FRAMES = round(speech_chunks.WINDOW_S * 100)  # 10 ms each
_QUIET_AFTER_S = 4.0
_FEWEST_S = 10.0


def _batches(
    chunks: list[speech_chunks.Chunk], size: int, first_alone: bool
) -> list[list[speech_chunks.Chunk]]:
    """`size` chunks at a time, the first alone when asked."""
    head = chunks[:1] if first_alone else []
    rest = chunks[len(head) :]
    return ([head] if head else []) + [rest[k : k + size] for k in range(0, len(rest), size)]


def _options(job: Job, language: str, batch: list[speech_chunks.Chunk]) -> dict[str, Any]:
    return {
        "language": language,
        "beam_size": job.beam_size,
        "word_timestamps": True,
        # The job's own chunking (speech_chunks) takes the place of faster-whisper's VAD.
        "vad_filter": False,
        "clip_timestamps": [{"start": c.start, "end": c.end} for c in batch],
        "batch_size": len(batch),
        "initial_prompt": job.initial_prompt,
    }


def _speech(audio: Samples, start: float, end: float | None = None) -> list[tuple[float, float]]:
    """Where speech is from `start` to `end` (seconds; None: the end): one VAD pass, for the
    chunks and for the timing of words alike."""
    return [region for found, _ in _speech_pieces(audio, start, end) for region in found]


def _speech_after(audio: Samples, start: float, replies: Connection) -> list[tuple[float, float]]:
    """Where speech is from `start` on, saying as soon as it is known that no word starts
    before the first of it (its chunk, padded, starts there): the cues before may then end."""
    regions: list[tuple[float, float]] = []
    for found, end in _speech_pieces(audio, start):
        if not regions:
            first = max(found[0][0] - speech_chunks.PAD_S, start) if found else end
            replies.send(("quiet", first))
        regions.extend(found)
    return regions


def _speech_pieces(
    audio: Samples, start: float, end: float | None = None
) -> Iterator[tuple[list[tuple[float, float]], float]]:
    """The speech regions a piece of the audio at a time, with where each piece ends. The
    VAD's memory grows with its input (200 MB for ten minutes), so it is given a minute at a
    time, cut where the audio is quietest."""
    last = audio.duration if end is None else end
    while start < last:
        cut = last
        if last - start > _VAD_PIECE_S:
            cut = _quietest(audio, start + _VAD_PIECE_S - _QUIET_SEARCH_S, start + _VAD_PIECE_S)
        yield _speech_in(audio, start, cut), cut
        start = cut
    _trim()


_VAD_PIECE_S = 60.0
_QUIET_SEARCH_S = 30.0


def _quietest(audio: Samples, start: float, end: float) -> float:
    """The middle of the quietest tenth of a second from `start` to `end`."""
    import numpy as np

    frame = SAMPLE_RATE // 10
    piece = audio.between(start, end)
    frames = len(piece) // frame
    energy = np.square(piece[: frames * frame].reshape(frames, frame)).mean(axis=1)
    return start + (int(np.argmin(energy)) + 0.5) / 10


def _speech_in(audio: Samples, start: float, end: float) -> list[tuple[float, float]]:
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(
        min_silence_duration_ms=160, speech_pad_ms=30, max_speech_duration_s=_LONGEST_S
    )
    piece = audio.between(start, end)
    stamps = get_speech_timestamps(piece, options, sampling_rate=SAMPLE_RATE)
    return [(start + s["start"] / SAMPLE_RATE, start + s["end"] / SAMPLE_RATE) for s in stamps]


def _windows(duration: float) -> list[tuple[float, float]]:
    """Without VAD: the whole audio, in pieces one window long."""
    step = speech_chunks.WINDOW_S - 2 * speech_chunks.PAD_S
    starts = (k * step for k in range(int(duration // step) + 1))
    return [(t, min(t + step, duration)) for t in starts if t < duration]


def _language(
    pipeline: Any, audio: Samples, job: Job, first: speech_chunks.Chunk | None
) -> tuple[str, float]:
    """The job's language, or Whisper's guess from the first chunk (the first 30 s when
    there is no speech to decode), as the batched pipeline would guess it."""
    import numpy as np
    from faster_whisper.audio import pad_or_trim

    if job.language:
        return job.language, 1.0
    model = pipeline.model
    if not model.model.is_multilingual:
        return "en", 1.0
    start, end = (first.start, first.end) if first else (0.0, 30.0)
    model.frames = _encoded_frames([first]) if first else _WINDOW_FRAMES
    # Cut as _decoded and the pipeline cut a first chunk, so that its encoding is the one kept.
    clip = audio.between(start, end)[: int((end - start) * SAMPLE_RATE)]
    return model.detect(np.stack([pad_or_trim(model.feature_extractor(clip)[..., :-1])]))


def _raw(segment: Any, batch: list[speech_chunks.Chunk], offset: float) -> RawSegment:
    """The segment, its times moved by `offset`, named after the chunk it came from: the last
    of `batch` that starts at or before it."""
    start = segment.start + offset
    chunk = next((c for c in reversed(batch) if c.start <= start + 0.01), batch[0])
    words = tuple(
        RawWord(w.start + offset, w.end + offset, w.word, w.probability)
        for w in segment.words or ()
    )
    return RawSegment(
        start,
        segment.end + offset,
        segment.text,
        words,
        segment.avg_logprob,
        segment.no_speech_prob,
        segment.compression_ratio,
        chunk.seek,
    )


def _sentences(segment: RawSegment) -> list[RawSegment]:
    """A segment cut after each sentence's last word. Whisper's segments can hold several
    sentences; the hallucination filter judges segments, and should drop no more than the
    sentence that is bad."""
    pieces: list[list[RawWord]] = [[]]
    for word in segment.words:
        pieces[-1].append(word)
        if word.text.rstrip().endswith(_SENTENCE_END):
            pieces.append([])
    return _pieces(segment, pieces)


def _word_spans(segments: list[RawSegment]) -> list[tuple[float, float]]:
    return sorted((w.start, w.end) for segment in segments for w in segment.words)


def _said_after(segment: RawSegment, since: float) -> RawSegment | None:
    """The segment's words said after `since` (by their middle), if any, as a segment."""
    said = [w for w in segment.words if (w.start + w.end) / 2 > since]
    if not said:
        return None
    return _pieces(segment, [[w for w in segment.words if w not in said], said])[-1]


def _inserted(segments: list[RawSegment], new: RawSegment) -> list[RawSegment]:
    """`segments` with `new` among them in time order; one with words before and after it is
    cut in two there."""
    cut = [
        piece
        for segment in segments
        for piece in _pieces(
            segment,
            [
                [w for w in segment.words if w.start < new.start],
                [w for w in segment.words if w.start >= new.start],
            ],
        )
    ]
    return sorted([*cut, new], key=lambda segment: segment.start)


def _pieces(segment: RawSegment, pieces: list[list[RawWord]]) -> list[RawSegment]:
    """The segment as one segment per non-empty piece of its words."""
    pieces = [piece for piece in pieces if piece]
    if len(pieces) <= 1:
        return [segment]
    return [
        segment._replace(
            start=piece[0].start,
            end=piece[-1].end,
            text="".join(w.text for w in piece).strip(),
            words=tuple(piece),
        )
        for piece in pieces
    ]


_SENTENCE_END = (".", "?", "!", "…", "。", "？", "！")


def run(argv: list[str]) -> None:
    logging.basicConfig(level=logging.WARNING, format="asr_worker: %(levelname)s %(message)s")
    main(Connection(int(argv[1]), writable=False), Connection(int(argv[2]), readable=False))


if __name__ == "__main__":
    # Through the module's own name, so what it pickles names engine.asr_worker, not __main__.
    from engine import asr_worker

    asr_worker.run(sys.argv)
