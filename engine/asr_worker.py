"""The process a Whisper model runs in (`python -m engine.asr_worker REQUESTS REPLIES`).

A CTranslate2 call cannot be interrupted and one takes seconds on a CPU, so a job that must
stop now is stopped by killing this process (`engine.asr.Transcriber` does that). It loads one
model, then transcribes one request at a time. The two file descriptors are the ends of pipes
that `multiprocessing.connection.Connection` reads and writes; the parent going away closes the
request pipe (this process then exits) or the reply pipe (its next send fails, and it exits).

Requests: a `Load` first, then per job a `Job` followed by the audio's float32 bytes.
Replies: `("ready",)` or `("error", message)` to the load; per job `("info", language,
probability, duration, regions)`, then `("segment", RawSegment)` for each, then `("end",)`, or
`("failed", message)`.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

import numpy as np

from engine import speech_chunks

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


def main(requests: Connection, replies: Connection) -> None:
    load: Load = requests.recv()
    try:
        model = _model(load)
    except (RuntimeError, ValueError, OSError) as exc:
        replies.send(("error", str(exc).splitlines()[0][:200] if str(exc) else repr(exc)))
        return
    replies.send(("ready",))
    # EOFError, BrokenPipeError: the parent closed its end or went away; nobody waits.
    with contextlib.suppress(EOFError, BrokenPipeError):
        while True:
            job: Job = requests.recv()
            _transcribe(model, load, job, requests.recv_bytes(), replies)


def _model(load: Load) -> Any:
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    model = WhisperModel(
        load.path,
        device=load.device,
        compute_type=load.compute_type,
        cpu_threads=load.cpu_threads,
        local_files_only=True,
    )
    return BatchedInferencePipeline(model)


def _transcribe(pipeline: Any, load: Load, job: Job, data: bytes, replies: Connection) -> None:
    """Decodes the speech chunks (engine.speech_chunks) from `job.resume_seek` on: the first
    alone, so its cues come early, then `load.batch_size` at a time, which is faster on a CPU
    too. Segments come in order, each batch's as it is decoded."""
    audio = np.frombuffer(data, dtype=np.float32)
    duration = len(audio) / SAMPLE_RATE
    regions = _speech(audio) if job.vad else _windows(duration)
    chunks = [c for c in speech_chunks.plan(regions, duration) if c.seek >= job.resume_seek]
    try:
        if not chunks:
            language, probability = _language(pipeline, audio, job)
            replies.send(("info", language, probability, duration, regions))
        language = job.language
        for n, batch in enumerate(_batches(chunks, load.batch_size)):
            decoded, info = _decode(pipeline, audio, job, language, batch, regions)
            if n == 0:
                language = info.language
                replies.send(("info", language, info.language_probability, duration, regions))
            for segment in decoded:
                for sentence in _sentences(segment):
                    replies.send(("segment", sentence))
    except (RuntimeError, ValueError) as exc:
        log.exception("transcription failed")
        replies.send(("failed", str(exc).splitlines()[0][:200] if str(exc) else repr(exc)))
        return
    replies.send(("end",))


def _decode(
    pipeline: Any,
    audio: np.ndarray,
    job: Job,
    language: str | None,
    batch: list[speech_chunks.Chunk],
    regions: list[tuple[float, float]],
) -> tuple[list[RawSegment], Any]:
    """The batch's segments in order, and faster-whisper's info. Whisper sometimes ends a
    chunk early: it writes its end of text after a pause, and batched decoding has no
    timestamp to go on from, as sequential decoding has. Speech the VAD found after a chunk's
    last word is decoded again, once, as a chunk of its own."""
    segments, info = pipeline.transcribe(audio, **_options(job, language, batch))
    found: dict[int, list[RawSegment]] = {chunk.seek: [] for chunk in batch}
    for segment in segments:
        raw = _raw(segment, batch)
        found[raw.seek].append(raw)
    tails = {c.seek: t for c in batch if (t := _missed(c, found[c.seek], regions))}
    if tails:
        parent = {tail.seek: seek for seek, tail in tails.items()}
        again, _ = pipeline.transcribe(audio, **_options(job, info.language, [*tails.values()]))
        for segment in again:
            raw = _raw(segment, [*tails.values()])
            found[parent[raw.seek]].append(raw._replace(seek=parent[raw.seek]))
    return [segment for chunk in batch for segment in found[chunk.seek]], info


def _missed(
    chunk: speech_chunks.Chunk, segments: list[RawSegment], regions: list[tuple[float, float]]
) -> speech_chunks.Chunk | None:
    """The part of `chunk` after its last decoded word that holds speech, if any. A chunk
    with no words at all is judged silent (music, noise) and not tried again."""
    ends = [word.end for segment in segments for word in segment.words]
    if not ends:
        return None
    last = max(ends)
    missed = [
        start
        for start, end in regions
        if last + _MISSED_GAP_S <= start < chunk.end and end - start >= _MISSED_SPEECH_S
    ]
    if not missed:
        return None
    return speech_chunks.Chunk(max(missed[0] - speech_chunks.PAD_S, last), chunk.end)


# Speech after a chunk's last word that counts as left out: a pause, then this much of it.
_MISSED_GAP_S = 0.2
_MISSED_SPEECH_S = 0.3


def _batches(chunks: list[speech_chunks.Chunk], size: int) -> list[list[speech_chunks.Chunk]]:
    """The first chunk alone, then `size` at a time."""
    if not chunks:
        return []
    return [chunks[:1], *(chunks[k : k + size] for k in range(1, len(chunks), size))]


def _options(job: Job, language: str | None, batch: list[speech_chunks.Chunk]) -> dict[str, Any]:
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


def _speech(audio: np.ndarray) -> list[tuple[float, float]]:
    """Where speech is: one VAD pass, for the chunks and for the timing of words alike."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(
        min_silence_duration_ms=160,
        speech_pad_ms=30,
        max_speech_duration_s=speech_chunks.WINDOW_S - 2 * speech_chunks.PAD_S,
    )
    stamps = get_speech_timestamps(audio, options, sampling_rate=SAMPLE_RATE)
    return [(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in stamps]


def _windows(duration: float) -> list[tuple[float, float]]:
    """Without VAD: the whole audio, in pieces one window long."""
    step = speech_chunks.WINDOW_S - 2 * speech_chunks.PAD_S
    return [(t, min(t + step, duration)) for t in np.arange(0.0, duration, step)]


def _language(pipeline: Any, audio: np.ndarray, job: Job) -> tuple[str, float]:
    """The language of audio without speech to decode: the job's, or Whisper's guess."""
    if job.language:
        return job.language, 1.0
    language, probability, _ = pipeline.model.detect_language(audio[: 30 * SAMPLE_RATE])
    return language, probability


def _raw(segment: Any, batch: list[speech_chunks.Chunk]) -> RawSegment:
    # The chunk it came from: the last that starts at or before it.
    chunk = next((c for c in reversed(batch) if c.start <= segment.start + 0.01), batch[0])
    words = tuple(RawWord(w.start, w.end, w.word, w.probability) for w in segment.words or ())
    return RawSegment(
        segment.start,
        segment.end,
        segment.text,
        words,
        segment.avg_logprob,
        segment.no_speech_prob,
        segment.compression_ratio,
        chunk.seek,
    )


def _sentences(segment: RawSegment) -> list[RawSegment]:
    """A chunk's segment cut after each sentence's last word. Batched decoding gives one
    segment per chunk (up to 30 s); the hallucination filter judges segments, and should
    drop no more than the sentence that is bad."""
    pieces: list[list[RawWord]] = [[]]
    for word in segment.words:
        pieces[-1].append(word)
        if word.text.rstrip().endswith(_SENTENCE_END):
            pieces.append([])
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
