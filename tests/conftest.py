"""Test-wide settings (no network, no analytics, one thread per native library) and the
fixtures many tests share: synthesised clips and one engine on the bundled model."""

import os

os.environ.update(
    {
        "HF_HUB_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "PYANNOTE_METRICS_ENABLED": "false",
        "OMP_NUM_THREADS": "1",
    }
)

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.synth import DIALOGUE_EN, SPANISH, Clip, fixture_dir, synthesize, to_mp4


@dataclass(frozen=True)
class Clips:
    dialogue: Clip
    dialogue_mp4: Path
    spanish: Clip
    short: Clip
    short_mp4: Path


@pytest.fixture(scope="session")
def clips() -> Clips:
    folder = fixture_dir()
    dialogue = synthesize(DIALOGUE_EN, folder, "dialogue_en", gap=0.7)
    short = synthesize([DIALOGUE_EN[i] for i in (0, 5, 2)], folder, "short_en", gap=0.7)
    return Clips(
        dialogue=dialogue,
        dialogue_mp4=_mp4(dialogue.wav),
        spanish=synthesize(SPANISH, folder, "spanish", gap=0.7),
        short=short,
        short_mp4=_mp4(short.wav),
    )


def _mp4(wav: Path) -> Path:
    out = wav.with_suffix(".mp4")
    fresh = out.is_file() and out.stat().st_mtime >= wav.stat().st_mtime
    return out if fresh else to_mp4(wav, out)


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory) -> Path:
    """One cache root per session, so the bundled model is assembled once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def engine(cache_root):
    """An engine on the bundled model that always transcribes (no transcript cache)."""
    from engine.pipeline import Engine, EngineOptions

    return Engine(EngineOptions(cache_dir=cache_root, use_cache=False, allow_private_urls=True))
