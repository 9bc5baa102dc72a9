"""Model resolution: bundled models, local folders, hub names and the offline fallback."""

import os
from pathlib import Path

import pytest

from engine.asr import SIZE_NAMES, resolve_model
from engine.protocol import SubtideError


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


def test_bundled_base_is_assembled_once_and_reused(models_dir):
    choice = resolve_model("bundled", models_dir)
    model_bin = Path(choice.path) / "model.bin"
    assert choice.name == "bundled:base" and choice.notice is None
    assert model_bin.stat().st_size == 145_217_532
    assert {p.name for p in Path(choice.path).iterdir()} == {
        "model.bin",
        "config.json",
        "tokenizer.json",
        "vocabulary.txt",
    }
    stamp = model_bin.stat().st_mtime_ns
    assert resolve_model("bundled:base", models_dir) == choice
    assert model_bin.stat().st_mtime_ns == stamp, "the model was assembled a second time"


def test_bundled_tiny_en_comes_straight_from_its_package(models_dir):
    choice = resolve_model("bundled:tiny.en", models_dir)
    assert choice.name == "bundled:tiny.en"
    assert (Path(choice.path) / "model.bin").is_file()


def test_a_local_model_folder_is_used_as_it_is(models_dir):
    folder = resolve_model("bundled:tiny.en", models_dir).path
    assert resolve_model(folder, models_dir).path == folder


def test_a_hub_name_falls_back_to_the_bundled_model_when_offline(models_dir):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    choice = resolve_model("small", models_dir)
    assert choice.name == "bundled:base"
    assert "small" in choice.notice and "bundled" in choice.notice


def test_offline_the_configured_bundled_model_is_the_fallback(models_dir):
    """A server configured with bundled:tiny.en never falls back to the larger base model."""
    choice = resolve_model("small", models_dir, fallback="bundled:tiny.en")
    assert choice.name == "bundled:tiny.en" and "bundled:tiny.en" in choice.notice
    # A configured model that is itself from the hub falls back to the default bundled one.
    assert resolve_model("small", models_dir, fallback="large-v3").name == "bundled:base"


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("giant", "Unknown Whisper model"),
        ("bundled:huge", "no bundled model"),
        ("./no/such/folder", "No model folder"),
    ],
)
def test_bad_model_specs_say_what_is_wrong(models_dir, spec, words):
    with pytest.raises(SubtideError) as caught:
        resolve_model(spec, models_dir)
    assert caught.value.code == "model_unavailable"
    assert words.lower() in caught.value.message.lower()


def test_a_folder_without_a_model_is_refused(models_dir, tmp_path):
    with pytest.raises(SubtideError, match="not a faster-whisper model"):
        resolve_model(str(tmp_path), models_dir)


def test_the_size_names_the_command_line_checks_are_faster_whispers_own():
    from faster_whisper.utils import available_models

    assert list(SIZE_NAMES) == available_models()
