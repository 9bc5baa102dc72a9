"""A speaker diarizer that needs no token, no network and no torch.

resemblyzer's pretrained voice encoder (a 3-layer LSTM over 40 mel bands, 256-d embeddings) runs
here in numpy; only its weights file is used, read by a restricted unpickler, because importing
the `resemblyzer` module pulls in torch and webrtcvad. Windows of 1.6 s inside the speech regions
are embedded, clustered (cosine distance, average linkage) and every speech frame takes the
speaker whose centroid the windows covering it resemble most.
"""

from __future__ import annotations

import importlib.util
import pickle
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import IO, Any

import numpy as np

from engine.diarize import Diarization, Turn
from engine.protocol import SubtideError
from engine.stop import Stop, never, stopped_if

SAMPLE_RATE = 16000
_HINT = "pip install --no-deps resemblyzer==0.1.4"

# The encoder's features (resemblyzer's hparams): 25 ms frames every 10 ms, 40 mel bands, 1.6 s
# windows, audio brought up to -30 dBFS.
_N_FFT = 400
_HOP = 160
_N_MELS = 40
_FRAMES_PER_SECOND = SAMPLE_RATE // _HOP
_WINDOW_FRAMES = 160
_WINDOW_S = _WINDOW_FRAMES / _FRAMES_PER_SECOND
_TARGET_DBFS = -30.0
_HIDDEN = 256
_LAYERS = 3

# Window placement and turn shaping.
_WINDOW_HOP_S = 0.5
# A region this short (a word or two) says too little about a voice to shape the clusters: its
# embedding strays from its speaker's, and an hour of them adds up to phantom speakers. It is only
# labelled, by the nearest speaker.
_MIN_CLUSTER_REGION_S = 1.0
_MIN_FLIP_S = 0.5
_BATCH = 128

# Clustering. Two clusters whose mean embeddings are this similar (cosine) are one voice split in
# two: in the test dialogues (espeak-ng voices, tests/test_diarize_builtin.py) different voices
# were 0.66-0.72 alike, halves of one voice 0.83-0.95.
_SAME_SPEAKER_SIMILARITY = 0.8
# A cluster needs this share of the windows (and at least two) to count as a speaker.
_MIN_CLUSTER_SHARE = 0.01
_MAX_CLUSTERED = 2000
_MAX_CUTS = 64
_AUTO_MAX_SPEAKERS = 8
# Same-speaker turns closer than this are one turn.
_MAX_BRIDGE_S = 0.5

Region = tuple[float, float]


class BuiltinDiarizer:
    """Who speaks when, from resemblyzer's voice encoder run in numpy."""

    def __init__(self, weights: Path | None = None) -> None:
        self._path = weights if weights is not None else _default_weights()
        if self._path is None or not self._path.is_file():
            raise SubtideError(
                "model_unavailable", "The built-in speaker model is not installed.", hint=_HINT
            )
        self._encoder: _Encoder | None = None
        self._lock = threading.Lock()

    def diarize(
        self,
        audio: np.ndarray,
        *,
        sample_rate: int = SAMPLE_RATE,
        num_speakers: int | None = None,
        min_speakers: int | None = None,
        max_speakers: int | None = None,
        speech: list[Region] | None = None,
        stop: Stop = never,
    ) -> list[Turn]:
        """Speaker turns in `audio` (float32 mono), sorted, non-overlapping, inside speech."""
        return self.diarize_voices(
            audio,
            sample_rate=sample_rate,
            num_speakers=num_speakers,
            min_speakers=min_speakers,
            max_speakers=max_speakers,
            speech=speech,
            stop=stop,
        ).turns

    def diarize_voices(
        self,
        audio: np.ndarray,
        *,
        sample_rate: int = SAMPLE_RATE,
        num_speakers: int | None = None,
        min_speakers: int | None = None,
        max_speakers: int | None = None,
        speech: list[Region] | None = None,
        stop: Stop = never,
    ) -> Diarization:
        """The turns, and each speaker's voice: the centroid of the windows clustered as it.
        `stop` is asked between batches of windows (a `cancelled` SubtideError then)."""
        low, high = _speaker_bounds(num_speakers, min_speakers, max_speakers)
        audio = _to_model_rate(np.asarray(audio, dtype=np.float32), sample_rate)
        if speech is None:
            from engine.timing import speech_regions

            speech = speech_regions(audio, SAMPLE_RATE)
        regions = _clean_regions(speech, len(audio) / SAMPLE_RATE)
        windows = _windows(regions)
        if not windows:
            return Diarization([], {})
        embeddings = self._embed(audio, windows, stop)
        centroids = _cluster(embeddings, windows, low, high)
        turns, names = _turns(regions, windows, embeddings @ centroids.T)
        voices = {name: centroids[k].astype(float).tolist() for k, name in names.items()}
        return Diarization(turns, voices)

    def _embed(self, audio: np.ndarray, windows: list[_Window], stop: Stop) -> np.ndarray:
        encoder = self._load()
        # Features are made batch by batch, so an hour of audio never holds all of them at once.
        embedded = []
        for k in range(0, len(windows), _BATCH):
            stopped_if(stop)
            batch = windows[k : k + _BATCH]
            embedded.append(encoder.embed(np.stack([_window_mel(audio, w) for w in batch])))
        return np.concatenate(embedded)

    def _load(self) -> _Encoder:
        with self._lock:
            if self._encoder is None:
                try:
                    self._encoder = _Encoder(load_weights(self._path))
                except Exception as error:  # a damaged file fails however the parser lets it
                    raise SubtideError(
                        "model_unavailable",
                        f"The built-in speaker model could not be read ({error}).",
                        hint=_HINT,
                    ) from error
            return self._encoder


def _default_weights() -> Path | None:
    # find_spec locates the package without running its __init__ (which imports torch).
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"


def _speaker_bounds(
    num_speakers: int | None, min_speakers: int | None, max_speakers: int | None
) -> tuple[int, int]:
    if num_speakers is not None:
        low = high = num_speakers
    else:
        low = min_speakers or 1
        high = max_speakers or max(_AUTO_MAX_SPEAKERS, low)
    if not 1 <= low <= high:
        raise ValueError(f"impossible speaker count bounds: {low}..{high}")
    return low, high


def _to_model_rate(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    if sample_rate == SAMPLE_RATE:
        return audio
    from math import gcd

    from scipy.signal import resample_poly

    common = gcd(SAMPLE_RATE, sample_rate)
    resampled = resample_poly(audio, SAMPLE_RATE // common, sample_rate // common)
    return resampled.astype(np.float32)


def _clean_regions(speech: list[Region], duration: float) -> list[Region]:
    """Sorted, merged where they overlap, clipped to the audio."""
    merged: list[Region] = []
    for start, end in sorted(speech):
        start, end = max(0.0, start), min(duration, end)
        if end - start < 1 / _FRAMES_PER_SECOND:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


# --- windows and features --------------------------------------------------------------------


@dataclass(frozen=True)
class _Window:
    """Up to 1.6 s of one speech region, to embed."""

    start: float
    end: float
    region_length: float

    @property
    def clusterable(self) -> bool:
        return self.region_length >= _MIN_CLUSTER_REGION_S


def _windows(regions: list[Region]) -> list[_Window]:
    windows = []
    for start, end in regions:
        length = end - start
        if length <= _WINDOW_S:
            windows.append(_Window(start, end, length))
            continue
        # Evenly spread so the first window starts at the region's start and the last ends at its
        # end, no further apart than the hop.
        count = int(np.ceil((length - _WINDOW_S) / _WINDOW_HOP_S)) + 1
        for offset in np.linspace(0.0, length - _WINDOW_S, count):
            windows.append(_Window(start + offset, start + offset + _WINDOW_S, length))
    return windows


def _window_mel(audio: np.ndarray, window: _Window) -> np.ndarray:
    """(160, 40) mel power frames of the window's audio at -30 dBFS or louder."""
    samples = audio[round(window.start * SAMPLE_RATE) : round(window.end * SAMPLE_RATE)]
    # A short region is repeated to fill the window: padding it with silence instead makes the
    # encoder describe the silence, and such windows stray far from their speaker.
    filled = np.resize(samples, _WINDOW_FRAMES * _HOP)
    return _mel_power(filled * _volume_gain(samples))[:_WINDOW_FRAMES]


def _volume_gain(samples: np.ndarray) -> float:
    """The gain that brings quiet audio up to -30 dBFS (never down), as the encoder was trained."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    if rms == 0.0:
        return 1.0
    return max(1.0, 10 ** ((_TARGET_DBFS - 20 * np.log10(rms)) / 20))


def _mel_power(samples: np.ndarray) -> np.ndarray:
    """librosa.feature.melspectrogram's defaults: centred zero-padded frames, Hann, power 2."""
    padded = np.pad(samples, _N_FFT // 2)
    count = 1 + len(samples) // _HOP
    frames = np.lib.stride_tricks.sliding_window_view(padded, _N_FFT)[::_HOP][:count]
    spectrum = np.fft.rfft(frames * _HANN, axis=1)
    power = spectrum.real**2 + spectrum.imag**2
    return (power @ _MEL_FILTERS.T).astype(np.float32)


def _mel_filters() -> np.ndarray:
    """librosa.filters.mel(sr=16000, n_fft=400, n_mels=40): Slaney mel scale and area norm."""
    bins = np.linspace(0, SAMPLE_RATE / 2, _N_FFT // 2 + 1)
    edges = _mel_to_hz(np.linspace(0, _hz_to_mel(SAMPLE_RATE / 2), _N_MELS + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - bins[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(rising, falling))
    # Slaney norm: each triangle has the same area.
    return weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]


# Slaney's scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above.
_F_SP = 200.0 / 3
_LOG_HZ = 1000.0
_LOG_MEL = _LOG_HZ / _F_SP
_LOG_STEP = np.log(6.4) / 27.0


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    log_part = _LOG_MEL + np.log(np.maximum(hz, _LOG_HZ) / _LOG_HZ) / _LOG_STEP
    return np.where(hz >= _LOG_HZ, log_part, hz / _F_SP)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    log_part = _LOG_HZ * np.exp(_LOG_STEP * (np.maximum(mel, _LOG_MEL) - _LOG_MEL))
    return np.where(mel >= _LOG_MEL, log_part, mel * _F_SP)


# Periodic Hann, as scipy.signal.get_window("hann", n) (fftbins=True) gives librosa.
_HANN = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(_N_FFT) / _N_FFT)
_MEL_FILTERS = _mel_filters()


# --- the encoder -----------------------------------------------------------------------------


class _Encoder:
    """resemblyzer's VoiceEncoder forward pass: LSTM x3 -> last hidden -> linear -> ReLU -> L2."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        self._layers = [self._layer(weights, k) for k in range(_LAYERS)]
        self._linear_w = np.ascontiguousarray(weights["linear.weight"].T)
        self._linear_b = weights["linear.bias"]

    @staticmethod
    def _layer(weights: dict[str, np.ndarray], k: int) -> tuple[np.ndarray, ...]:
        # PyTorch stacks the gates i, f, g, o. Reordered to i, f, o, g and with the sigmoid gates
        # pre-scaled by 1/2, one tanh over all gates gives sigmoid(x) = (tanh(x/2) + 1) / 2 for
        # the first three and tanh for the last: one pass instead of four.
        i, f, g, o = np.split(np.arange(4 * _HIDDEN), 4)
        order = np.concatenate([i, f, o, g])
        scale = np.ones(4 * _HIDDEN, dtype=np.float32)
        scale[: 3 * _HIDDEN] = 0.5
        w_ih = weights[f"lstm.weight_ih_l{k}"][order].T * scale
        w_hh = weights[f"lstm.weight_hh_l{k}"][order].T * scale
        bias = (weights[f"lstm.bias_ih_l{k}"] + weights[f"lstm.bias_hh_l{k}"])[order] * scale
        return (
            np.ascontiguousarray(w_ih, dtype=np.float32),
            np.ascontiguousarray(w_hh, dtype=np.float32),
            bias.astype(np.float32),
        )

    def embed(self, mels: np.ndarray) -> np.ndarray:
        """(n, 160, 40) mel frames -> (n, 256) unit embeddings; all n windows step together."""
        batch = len(mels)
        hidden = [np.zeros((batch, _HIDDEN), np.float32) for _ in range(_LAYERS)]
        cell = [np.zeros((batch, _HIDDEN), np.float32) for _ in range(_LAYERS)]
        for step in range(mels.shape[1]):
            x = mels[:, step]
            for k, (w_ih, w_hh, bias) in enumerate(self._layers):
                gates = x @ w_ih
                gates += hidden[k] @ w_hh
                gates += bias
                np.tanh(gates, out=gates)
                sig = gates[:, : 3 * _HIDDEN]
                sig += 1.0
                sig *= 0.5
                in_gate, forget, out_gate = np.split(sig, 3, axis=1)
                cell[k] *= forget
                cell[k] += in_gate * gates[:, 3 * _HIDDEN :]
                hidden[k] = out_gate * np.tanh(cell[k])
                x = hidden[k]
        raw = np.maximum(hidden[-1] @ self._linear_w + self._linear_b, 0.0)
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        return raw / np.maximum(norms, 1e-12)


# --- clustering and turns --------------------------------------------------------------------


def _cluster(embeddings: np.ndarray, windows: list[_Window], low: int, high: int) -> np.ndarray:
    """Unit centroids (k, 256) of the speakers found among the windows."""
    pool = np.array([k for k, window in enumerate(windows) if window.clusterable])
    if len(pool) == 0:
        # Only short regions: their windows are all there is to go by.
        pool = np.arange(len(windows))
    if len(pool) > _MAX_CLUSTERED:
        # Average linkage is O(n²) in memory and time: cluster an even sample through the audio;
        # every window is still scored against the centroids it yields.
        pool = pool[np.linspace(0, len(pool) - 1, _MAX_CLUSTERED).round().astype(int)]
    points = embeddings[pool]
    if len(points) == 1:
        return points
    from scipy.cluster.hierarchy import fcluster, linkage

    tree = linkage(points.astype(np.float64), method="average", metric="cosine")
    min_size = max(2, int(np.ceil(_MIN_CLUSTER_SHARE * len(points))))
    chosen = None
    # Cut the tree into ever more clusters. Stray windows (a cough, a laugh, a clipped word) split
    # off first as tiny clusters and are left to the nearest speaker. Stop once the clusters large
    # enough to be a speaker include two that sound alike: a voice has begun to split in two.
    for cut in range(1, min(len(points), _MAX_CUTS) + 1):
        labels = fcluster(tree, cut, criterion="maxclust")
        centroids = _centroids(points, labels, min_size)
        if len(centroids) > high:
            break
        separated = _separated(centroids)
        if len(centroids) >= low and (separated or chosen is None):
            chosen = centroids
        if chosen is not None and not separated:
            break
    if chosen is None:
        # Too few windows for `low` speakers of any size: every cluster counts.
        labels = fcluster(tree, min(low, len(points)), criterion="maxclust")
        chosen = _centroids(points, labels, 1)
    return chosen


def _centroids(points: np.ndarray, labels: np.ndarray, min_size: int) -> np.ndarray:
    """Unit mean embeddings of the clusters with at least min_size members, largest first."""
    found, sizes = np.unique(labels, return_counts=True)
    kept = found[sizes >= min_size][np.argsort(-sizes[sizes >= min_size], kind="stable")]
    if len(kept) == 0:
        return np.empty((0, points.shape[1]), dtype=points.dtype)
    means = np.stack([points[labels == label].mean(axis=0) for label in kept])
    return means / np.linalg.norm(means, axis=1, keepdims=True)


def _separated(centroids: np.ndarray) -> bool:
    if len(centroids) < 2:
        return True
    similarity = centroids @ centroids.T
    np.fill_diagonal(similarity, -1.0)
    return float(similarity.max()) < _SAME_SPEAKER_SIMILARITY


def _turns(
    regions: list[Region], windows: list[_Window], similarity: np.ndarray
) -> tuple[list[Turn], dict[int, str]]:
    """Each speech frame goes to the speaker its covering windows resemble most; with the name
    of each centroid (by index) that got any."""
    scores = np.zeros((_frame(regions[-1][1]) + 1, similarity.shape[1]))
    for window, row in zip(windows, similarity, strict=True):
        scores[_frame(window.start) : _frame(window.end)] += row
    turns: list[list] = []
    for start, end in regions:
        first, last = _frame(start), _frame(end)
        if last <= first:
            continue
        for run_start, run_end, speaker in _smooth(_runs(scores[first:last].argmax(axis=1))):
            turn_start = max(start, (first + run_start) / _FRAMES_PER_SECOND)
            turn_end = min(end, (first + run_end) / _FRAMES_PER_SECOND)
            if turns and turns[-1][2] == speaker and turn_start - turns[-1][1] < _MAX_BRIDGE_S:
                # A short pause inside one speaker's turn (a comma, a breath) stays in the turn.
                turns[-1][1] = turn_end
            else:
                turns.append([turn_start, turn_end, speaker])
    return _named(turns)


def _frame(t: float) -> int:
    return round(t * _FRAMES_PER_SECOND)


def _runs(labels: np.ndarray) -> list[list[int]]:
    """[start, end, label] for each stretch of equal labels."""
    cuts = np.flatnonzero(np.diff(labels)) + 1
    bounds = [0, *cuts.tolist(), len(labels)]
    return [[a, b, int(labels[a])] for a, b in pairwise(bounds)]


def _smooth(runs: list[list[int]]) -> list[list[int]]:
    """Stretches shorter than _MIN_FLIP_S inside a region join their longer neighbour."""
    min_frames = _MIN_FLIP_S * _FRAMES_PER_SECOND
    while len(runs) > 1:
        k = min(range(len(runs)), key=lambda i: runs[i][1] - runs[i][0])
        if runs[k][1] - runs[k][0] >= min_frames:
            break
        neighbours = [i for i in (k - 1, k + 1) if 0 <= i < len(runs)]
        into = max(neighbours, key=lambda i: runs[i][1] - runs[i][0])
        runs[into] = [min(runs[into][0], runs[k][0]), max(runs[into][1], runs[k][1]), runs[into][2]]
        del runs[k]
        runs = _merge_equal(runs)
    return runs


def _merge_equal(runs: list[list[int]]) -> list[list[int]]:
    merged = [runs[0]]
    for run in runs[1:]:
        if run[2] == merged[-1][2]:
            merged[-1] = [merged[-1][0], run[1], run[2]]
        else:
            merged.append(run)
    return merged


def _named(turns: list[list]) -> tuple[list[Turn], dict[int, str]]:
    """SPEAKER_1, SPEAKER_2, ... in order of first appearance; and the name of each index."""
    names: dict[int, str] = {}
    named = []
    for start, end, speaker in turns:
        name = names.setdefault(speaker, f"SPEAKER_{len(names) + 1}")
        named.append(Turn(round(start, 3), round(end, 3), name))
    return named, names


# --- the weights file ------------------------------------------------------------------------

# torch's legacy (pre-zip) serialization: pickles of a magic number, a protocol version and
# system info, then the checkpoint (tensors refer to storages by key), the storage keys in file
# order, and each storage's raw bytes after an 8-byte little-endian element count.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

_EXPECTED_SHAPES: dict[str, tuple[int, ...]] = {
    **{
        name: shape
        for k in range(_LAYERS)
        for name, shape in (
            (f"lstm.weight_ih_l{k}", (4 * _HIDDEN, _N_MELS if k == 0 else _HIDDEN)),
            (f"lstm.weight_hh_l{k}", (4 * _HIDDEN, _HIDDEN)),
            (f"lstm.bias_ih_l{k}", (4 * _HIDDEN,)),
            (f"lstm.bias_hh_l{k}", (4 * _HIDDEN,)),
        )
    },
    "linear.weight": (_HIDDEN, _HIDDEN),
    "linear.bias": (_HIDDEN,),
}


@dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype


class _Storage:
    def __init__(self, dtype: np.dtype, size: int) -> None:
        self.dtype = dtype
        self.size = size
        self.data: np.ndarray | None = None


@dataclass(frozen=True)
class _TensorRef:
    """A tensor as the pickle describes it; its storage's bytes come later in the file."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def to_numpy(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise ValueError("a tensor's storage is missing from the file")
        last = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride, strict=True))
        if self.offset < 0 or min(self.stride, default=0) < 0 or last >= len(data):
            raise ValueError("a tensor reaches outside its storage")
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :],
            shape=self.shape,
            strides=[s * data.itemsize for s in self.stride],
        )
        return np.array(view)


def _rebuild_tensor(
    storage: _Storage, offset: int, shape: tuple, stride: tuple, *_grad_hooks_metadata: Any
) -> _TensorRef:
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("a tensor without a storage")
    return _TensorRef(storage, int(offset), tuple(shape), tuple(stride))


class _WeightsUnpickler(pickle.Unpickler):
    """Knows only the few globals a state dict of float tensors needs; refuses anything else."""

    _GLOBALS: dict[tuple[str, str], Any] = {  # noqa: RUF012 (read-only table)
        ("collections", "OrderedDict"): OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch", "FloatStorage"): _StorageType(np.dtype("<f4")),
    }

    def __init__(self, file: IO[bytes], storages: dict[str, _Storage]) -> None:
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}") from None

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, size, view = pid
        if not isinstance(storage_type, _StorageType) or view is not None:
            raise pickle.UnpicklingError("unsupported storage")
        return self._storages.setdefault(str(key), _Storage(storage_type.dtype, int(size)))


def load_weights(path: Path) -> dict[str, np.ndarray]:
    """The encoder's state dict from resemblyzer's pretrained.pt, as float32 numpy arrays."""
    storages: dict[str, _Storage] = {}
    with path.open("rb") as file:

        def load() -> Any:
            return _WeightsUnpickler(file, storages).load()

        if load() != _LEGACY_MAGIC or load() != _LEGACY_PROTOCOL:
            raise pickle.UnpicklingError("not a legacy torch checkpoint")
        info = load()
        if not (isinstance(info, dict) and info.get("little_endian")):
            raise pickle.UnpicklingError("not a little-endian checkpoint")
        checkpoint = load()
        for key in load():
            if str(key) not in storages:
                raise ValueError(f"storage {key} belongs to no tensor")
            _read_storage(file, storages[str(key)])
    state = checkpoint.get("model_state") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ValueError("the checkpoint has no model_state")
    return {name: _expected_tensor(state, name, shape) for name, shape in _EXPECTED_SHAPES.items()}


def _read_storage(file: IO[bytes], storage: _Storage) -> None:
    header = file.read(8)
    if len(header) != 8 or struct.unpack("<q", header)[0] != storage.size:
        raise ValueError("a storage's size does not match its header")
    raw = file.read(storage.size * storage.dtype.itemsize)
    if len(raw) != storage.size * storage.dtype.itemsize:
        raise ValueError("the checkpoint is truncated")
    storage.data = np.frombuffer(raw, dtype=storage.dtype)


def _expected_tensor(state: dict, name: str, shape: tuple[int, ...]) -> np.ndarray:
    tensor = state.get(name)
    if not isinstance(tensor, _TensorRef):
        raise ValueError(f"the checkpoint lacks {name}")
    array = tensor.to_numpy().astype(np.float32)
    if array.shape != shape:
        raise ValueError(f"{name} has shape {array.shape}, expected {shape}")
    return array
