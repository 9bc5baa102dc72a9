"""A local pyannote pipeline folder shaped like `speaker-diarization-community-1`, random weights.

The real weights are gated on the hub, so tests build the same layout from pyannote's own model
classes: config.yaml naming `$model/segmentation`, `$model/embedding` and `$model/plda`, a PyanNet
segmentation model (powerset: 3 speakers, at most 2 at once, 10 s windows), a WeSpeaker ResNet34
embedding model and a PLDA, each saved where `Pipeline.from_pretrained(folder)` looks for it.
Its output means nothing; it exercises the real loading and inference code in about a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import yaml

from engine.diarize_pyannote import import_pyannote

if TYPE_CHECKING:
    from pyannote.audio import Model

# community-1's own settings, so the pipeline runs as it would with the real weights.
_CONFIG = {
    "pipeline": {
        "name": "pyannote.audio.pipelines.SpeakerDiarization",
        "params": {
            "clustering": "VBxClustering",
            "segmentation": "$model/segmentation",
            "segmentation_batch_size": 32,
            "embedding": "$model/embedding",
            "embedding_batch_size": 32,
            "embedding_exclude_overlap": True,
            "plda": "$model/plda",
        },
    },
    "params": {
        "clustering": {"threshold": 0.6, "Fa": 0.07, "Fb": 0.8},
        "segmentation": {"min_duration_off": 0.0},
    },
}
_WINDOW_S = 10.0
_EMBEDDING_DIM = 256  # WeSpeaker ResNet34's
_LDA_DIM = 128  # what pyannote's PLDA keeps
_SEED = 0


def build_random_pipeline(folder: Path) -> Path:
    """Write the pipeline into `folder` (created if needed) and return it."""
    import torch

    import_pyannote()  # torchaudio must be importable before pyannote's model modules are
    folder.mkdir(parents=True, exist_ok=True)
    # A private generator state: the weights are the same every run, other tests' RNG untouched.
    with torch.random.fork_rng():
        torch.manual_seed(_SEED)
        _save(_segmentation_model(), folder / "segmentation")
        _save(_embedding_model(), folder / "embedding")
    _save_plda(folder / "plda", np.random.default_rng(_SEED))
    (folder / "config.yaml").write_text(yaml.safe_dump(_CONFIG), encoding="utf-8")
    return folder


def _segmentation_model() -> Model:
    import torch
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.segmentation import PyanNet

    # Smaller recurrent layers than community-1's: the weights are random anyway.
    model = PyanNet(
        lstm={"hidden_size": 32, "num_layers": 1}, linear={"hidden_size": 32, "num_layers": 1}
    )
    model.specifications = Specifications(
        problem=Problem.MONO_LABEL_CLASSIFICATION,
        resolution=Resolution.FRAME,
        duration=_WINDOW_S,
        classes=["speaker#1", "speaker#2", "speaker#3"],
        powerset_max_classes=2,
        permutation_invariant=True,
    )
    model.build()  # the classifier for those 7 powerset classes
    with torch.no_grad():
        # Powerset class 0 is "nobody speaks": ruled out, so every clip has turns to check.
        model.classifier.bias[0] = -100.0
    return model


def _embedding_model() -> Model:
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.embedding import WeSpeakerResNet34

    model = WeSpeakerResNet34()
    model.specifications = Specifications(
        problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK, duration=_WINDOW_S
    )
    return model


def _save(model: Model, folder: Path) -> None:
    """A Lightning checkpoint as pyannote writes them, at `folder/pytorch_model.bin`."""
    import lightning
    import torch

    checkpoint = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": lightning.__version__,
    }
    model.on_save_checkpoint(checkpoint)  # pyannote's part: versions, class, specifications
    folder.mkdir(exist_ok=True)
    torch.save(checkpoint, folder / "pytorch_model.bin")


def _save_plda(folder: Path, rng: np.random.Generator) -> None:
    """x-vector transform and PLDA for VBx: any orthogonal PLDA transform and positive
    between-class variances keep its matrices invertible."""
    folder.mkdir(exist_ok=True)
    np.savez(
        folder / "xvec_transform.npz",
        mean1=np.zeros(_EMBEDDING_DIM),
        mean2=np.zeros(_LDA_DIM),
        lda=rng.standard_normal((_EMBEDDING_DIM, _LDA_DIM)),
    )
    transform, _ = np.linalg.qr(rng.standard_normal((_LDA_DIM, _LDA_DIM)))
    np.savez(
        folder / "plda.npz",
        mu=np.zeros(_LDA_DIM),
        tr=transform,
        psi=np.linspace(2.0, 0.1, _LDA_DIM),
    )
