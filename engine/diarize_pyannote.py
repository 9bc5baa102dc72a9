"""Speaker turns from a pyannote.audio pipeline: community-1 from the hub, or a local folder.

The hub's pipeline is gated (a token whose account accepted its terms); a local folder shaped like
`speaker-diarization-community-1` (config.yaml beside segmentation/, embedding/ and plda/) works
offline. Every way loading can fail becomes a `model_unavailable` error the user can act on.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import sys
import types
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.diarize import Turn
from engine.protocol import SubtideError
from engine.stop import Stop, never, stopped_if

if TYPE_CHECKING:
    import numpy as np
    import torch
    from pyannote.audio import Pipeline
    from pyannote.core import Annotation

DEFAULT_PIPELINE = "pyannote/speaker-diarization-community-1"

NEEDS_EXTRA = "Speaker labelling with pyannote needs the pyannote extra."
NEEDS_EXTRA_HINT = (
    "pip install 'subtide[pyannote]', or use the built-in backend (--diarize builtin)"
)
UNREACHABLE_HINT = (
    "Connect to the internet once, or set DIARIZATION_PIPELINE to a local pipeline folder, "
    "or use --diarize builtin."
)
FOLDER_HINT = (
    "Point DIARIZATION_PIPELINE at a copy of a whole pyannote pipeline (config.yaml with its "
    "segmentation/, embedding/ and plda/ folders), or use --diarize builtin."
)

# "owner/name": what a hub id looks like. A path that exists locally wins over this shape.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def needs_token_message(model_id: str) -> str:
    return f"pyannote's model {model_id} needs a Hugging Face token."


def needs_token_hint(model_id: str) -> str:
    return (
        f"Accept the model's terms at https://huggingface.co/{model_id}, create a read token, "
        "set HF_TOKEN — or use --diarize builtin (no token needed)."
    )


def refused_message(model_id: str) -> str:
    return f"Hugging Face refused access to {model_id}."


def refused_hint(model_id: str) -> str:
    return (
        f"Accept the terms at https://huggingface.co/{model_id} with the account that owns the "
        "token, and check that HF_TOKEN (and the model id) are right."
    )


def unreachable_message(model_id: str) -> str:
    return f"Could not download {model_id}: the Hugging Face hub is unreachable."


def no_pipeline_message(folder: Path) -> str:
    return f"No pyannote pipeline at {folder.name}."


def not_a_pipeline_message(folder: Path) -> str:
    return f"{folder.name} is not a pyannote pipeline folder (config.yaml missing or invalid)."


def broken_pipeline_message(folder: Path) -> str:
    return f"The models of the pyannote pipeline in {folder.name} could not be loaded."


class PyannoteDiarizer:
    """A pyannote.audio speaker diarization pipeline, loaded once.

    torch's thread count is left to the caller, who sets it for every model in the process. On
    a 2-core CPU, community-1's embedding model (a ResNet) ran 1.8x faster with two threads than
    with one, whereas small LSTMs run far faster with one.
    """

    def __init__(
        self, pipeline: str = DEFAULT_PIPELINE, *, token: str | None = None, device: str = "auto"
    ) -> None:
        """`pipeline`: a hub id or a local pipeline folder. `device`: "auto" takes CUDA when
        there is one, else the CPU; or any torch device name ("cpu", "cuda:1")."""
        pipeline_class = import_pyannote()
        folder = _local_folder(pipeline)
        if folder is None:
            self._pipeline = _load_from_hub(pipeline_class, pipeline, token)
        else:
            self._pipeline = _load_from_folder(pipeline_class, folder, token)
        self._pipeline.to(_torch_device(device))

    def diarize(
        self,
        audio: np.ndarray,
        *,
        sample_rate: int = 16000,
        num_speakers: int | None = None,
        min_speakers: int | None = None,
        max_speakers: int | None = None,
        stop: Stop = never,
    ) -> list[Turn]:
        """Turns of float32 mono `audio`, sorted by start, speakers named SPEAKER_1, SPEAKER_2,
        ... in order of first appearance. The speaker counts are passed to the pipeline.
        `stop` is asked after each of its batches (a `cancelled` SubtideError then)."""
        import torch

        # Audio goes in memory: pyannote's own file decoding (torchcodec) is not needed.
        waveform = torch.tensor(audio, dtype=torch.float32).unsqueeze(0)
        output = self._pipeline(
            {"waveform": waveform, "sample_rate": sample_rate},
            num_speakers=num_speakers,
            min_speakers=min_speakers,
            max_speakers=max_speakers,
            # pyannote calls its hook after each step and batch: the place to stop it.
            hook=lambda *_, **__: stopped_if(stop),
        )
        return _turns(_annotation(output), duration=len(audio) / sample_rate)


def import_pyannote() -> type[Pipeline]:
    """pyannote.audio's `Pipeline` class, or the `model_unavailable` error naming the extra."""
    # pyannote 4 sends usage metrics unless told not to; a user's own setting is kept.
    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")
    try:
        _import_torchaudio()
        with warnings.catch_warnings():
            # Audio is passed in memory, so a torchcodec that cannot load is no concern here.
            warnings.filterwarnings("ignore", message=r"\s*torchcodec is not installed correctly")
            from pyannote.audio import Pipeline
    except (ImportError, OSError) as exc:  # OSError: a native library that does not load
        raise SubtideError("model_unavailable", NEEDS_EXTRA, hint=NEEDS_EXTRA_HINT) from exc
    return Pipeline


def _import_torchaudio() -> None:
    """Import torchaudio, without its compiled extension when that cannot load.

    PyPI's torchaudio wheels are CUDA builds: beside a CPU-only torch their extension fails to
    load (libc10_cuda.so is missing) and `import torchaudio` raises OSError. pyannote only uses
    torchaudio's Python parts (kaldi fbank, resampling), and torchaudio runs without the extension
    when it was built without one, so the package is imported again as such a build.
    """
    try:
        importlib.import_module("torchaudio")
    except OSError:
        # The failed import leaves half-initialised modules behind; they must not be reused.
        for name in [n for n in sys.modules if n == "torchaudio" or n.startswith("torchaudio.")]:
            del sys.modules[name]
        sys.modules["torchaudio._extension"] = _no_extension()
        importlib.import_module("torchaudio")


def _no_extension() -> types.ModuleType:
    """`torchaudio._extension` as torchaudio defines it when built without its C++ extension."""
    module = types.ModuleType("torchaudio._extension")
    module.__dict__.update(
        _IS_TORCHAUDIO_EXT_AVAILABLE=False,
        _IS_ALIGN_AVAILABLE=False,
        fail_if_no_align=_needs_extension,
    )
    return module


def _needs_extension(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{func.__name__} needs torchaudio's compiled extension")

    return unavailable


def _local_folder(pipeline: str) -> Path | None:
    """The folder `pipeline` names, or None when it is a hub id."""
    path = Path(pipeline).expanduser()
    if path.exists() or not _HUB_ID.fullmatch(pipeline):
        return path
    return None


def _load_from_hub(pipeline_class: type[Pipeline], model_id: str, token: str | None) -> Pipeline:
    if not token:
        raise SubtideError(
            "model_unavailable", needs_token_message(model_id), hint=needs_token_hint(model_id)
        )
    try:
        return pipeline_class.from_pretrained(model_id, token=token)
    except Exception as exc:
        failure = _hub_failure(exc, model_id)
        if failure is None:
            raise
        raise failure from exc


def _hub_failure(exc: Exception, model_id: str) -> SubtideError | None:
    """What a download error means for the user; None for errors that are not the hub's."""
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    status = getattr(getattr(exc, "response", None), "status_code", None)
    # GatedRepoError is a RepositoryNotFoundError; the hub also answers 401 for a bad token.
    if isinstance(exc, RepositoryNotFoundError) or status in (401, 403):
        return SubtideError(
            "model_unavailable", refused_message(model_id), hint=refused_hint(model_id)
        )
    # With no connection (or HF_HUB_OFFLINE=1) and nothing cached, huggingface_hub raises
    # LocalEntryNotFoundError; the others are a connection lost mid-way or a hub that fails.
    lost = isinstance(exc, LocalEntryNotFoundError | OfflineModeIsEnabled | ConnectionError)
    if lost or (isinstance(exc, HfHubHTTPError) and (status or 0) >= 500):
        return SubtideError(
            "model_unavailable", unreachable_message(model_id), hint=UNREACHABLE_HINT
        )
    return None


def _load_from_folder(pipeline_class: type[Pipeline], folder: Path, token: str | None) -> Pipeline:
    if not folder.exists():
        raise SubtideError("model_unavailable", no_pipeline_message(folder), hint=FOLDER_HINT)
    if not _has_pipeline_config(folder):
        raise SubtideError("model_unavailable", not_a_pipeline_message(folder), hint=FOLDER_HINT)
    try:
        # The token only matters for a config that names sub-models on the hub.
        return pipeline_class.from_pretrained(folder, token=token)
    except Exception as exc:
        # A missing, truncated or foreign checkpoint fails anywhere from file I/O to unpickling.
        raise SubtideError(
            "model_unavailable", broken_pipeline_message(folder), hint=FOLDER_HINT
        ) from exc


def _has_pipeline_config(folder: Path) -> bool:
    import yaml

    try:
        config = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    pipeline = config.get("pipeline") if isinstance(config, dict) else None
    return isinstance(pipeline, dict) and isinstance(pipeline.get("name"), str)


def _torch_device(device: str) -> torch.device:
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def _annotation(output: Any) -> Annotation:
    """The turns a pipeline returned: pyannote 4 wraps them in an output object, older
    pipelines (and `legacy=True`) return the Annotation itself."""
    # The exclusive diarization has no overlapping turns, which suits one speaker per word.
    for name in ("exclusive_speaker_diarization", "speaker_diarization"):
        annotation = getattr(output, name, None)
        if annotation is not None:
            return annotation
    return output


def _turns(annotation: Annotation, *, duration: float) -> list[Turn]:
    """Turns clipped to the audio (the last window is padded, so a turn may run past its end)."""
    tracks = sorted(annotation.itertracks(yield_label=True), key=lambda t: (t[0].start, t[0].end))
    names: dict[str, str] = {}
    turns = []
    for segment, _, label in tracks:
        start, end = max(segment.start, 0.0), min(segment.end, duration)
        if end > start:
            speaker = names.setdefault(label, f"SPEAKER_{len(names) + 1}")
            turns.append(Turn(start, end, speaker))
    return turns
