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
from typing import TYPE_CHECKING, Any, NamedTuple

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
    # Batched decoding pays off on a GPU; on a CPU it returns ~30 s segments, which would
    # delay the first cue, so plain sequential decoding streams better there.
    return BatchedInferencePipeline(model) if load.device == "cuda" else model


def _transcribe(model: Any, load: Load, job: Job, data: bytes, replies: Connection) -> None:
    import numpy as np

    from engine.timing import speech_regions

    audio = np.frombuffer(data, dtype=np.float32)
    kwargs: dict[str, Any] = {
        "language": job.language,
        "beam_size": job.beam_size,
        "vad_filter": job.vad,
        "word_timestamps": True,
        "initial_prompt": job.initial_prompt,
        # Conditioning on earlier text is the main cause of Whisper's repetition loops.
        "condition_on_previous_text": False,
    }
    if load.device == "cuda":
        kwargs["batch_size"] = load.batch_size
    try:
        regions = speech_regions(audio) if job.vad else []
        if job.resume_seek:
            segments, info = _resumed(model, audio, job, kwargs)
        else:
            segments, info = model.transcribe(audio, **kwargs)
        duration = len(audio) / SAMPLE_RATE
        replies.send(("info", info.language, info.language_probability, duration, regions))
        for segment in segments:
            replies.send(("segment", _raw(segment)))
    except (RuntimeError, ValueError) as exc:
        log.exception("transcription failed")
        replies.send(("failed", str(exc).splitlines()[0][:200] if str(exc) else repr(exc)))
        return
    replies.send(("end",))


def _resumed(model: Any, audio: np.ndarray, job: Job, kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """Decodes from window `job.resume_seek` on, window for window as a whole run does.

    faster-whisper ignores `clip_timestamps` when its VAD is on, so its VAD steps are taken
    here: the same speech chunks, joined the same way, decoded from the seek, and the times
    put back on the source's clock. The initial prompt primes a run's first window only
    (condition_on_previous_text is off), so a later window is decoded without it."""
    import numpy as np
    from faster_whisper.transcribe import restore_speech_timestamps
    from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps

    kwargs = {**kwargs, "initial_prompt": None, "clip_timestamps": [job.resume_seek / 100]}
    if not job.vad:
        return model.transcribe(audio, **kwargs)
    chunks = get_speech_timestamps(audio, VadOptions())
    speech = np.concatenate(collect_chunks(audio, chunks)[0], axis=0)
    segments, info = model.transcribe(speech, **{**kwargs, "vad_filter": False})
    return restore_speech_timestamps(segments, chunks, SAMPLE_RATE), info


def _raw(segment: Any) -> RawSegment:
    words = tuple(RawWord(w.start, w.end, w.word, w.probability) for w in segment.words or ())
    return RawSegment(
        segment.start,
        segment.end,
        segment.text,
        words,
        segment.avg_logprob,
        segment.no_speech_prob,
        segment.compression_ratio,
        segment.seek,
    )


def run(argv: list[str]) -> None:
    logging.basicConfig(level=logging.WARNING, format="asr_worker: %(levelname)s %(message)s")
    main(Connection(int(argv[1]), writable=False), Connection(int(argv[2]), readable=False))


if __name__ == "__main__":
    # Through the module's own name, so what it pickles names engine.asr_worker, not __main__.
    from engine import asr_worker

    asr_worker.run(sys.argv)
