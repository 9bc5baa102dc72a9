"""Model resolution: bundled models, local folders, hub names and the offline fallback."""

import os
from pathlib import Path

import pytest

from engine.asr import (
    SIZE_NAMES,
    decoding_setup,
    default_batch_size,
    free_gpu_memory_mb,
    free_memory_mb,
    resolve_model,
)
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


@pytest.mark.parametrize(
    ("device", "model", "free_mb", "batch"),
    [
        ("cpu", "bundled:base", 20_000, 4),  # the measured best on a CPU
        ("cpu", "bundled:base", 900, 2),  # 900 - 175 for the model - 512 kept back: 80 a chunk
        ("cpu", "bundled:base", 300, 1),  # never none: one chunk is the least that decodes
        ("cpu", "large-v3", 5_000, 3),  # 1.8 GB for the model, 810 MB a chunk
        ("cpu", "/models/faster-whisper-large-v3-turbo", 2_500, 4),  # turbo: a small decoder
        ("cpu", "/models/my-finetune", 5_000, 3),  # a name that says no size: the largest
        ("cpu", "bundled:tiny.en", None, 4),  # memory that can't be read: the usual size
        ("cuda", "large-v3", 24_000, 16),  # the most on a GPU
        ("cuda", "large-v3", 8_000, 7),  # 8000 - 3100 for the weights - 1024 kept: 530 a chunk
        ("cuda", "large-v3", 4_500, 1),
        ("cuda", "bundled:base", 4_000, 16),
        ("cuda", "large-v3", None, 16),  # a GPU whose memory can't be read
    ],
)
def test_a_batch_is_no_larger_than_the_free_memory_holds(device, model, free_mb, batch):
    assert default_batch_size(device, model, free_mb) == batch


def test_the_free_memory_is_read_from_this_machine():
    free = free_memory_mb()
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    assert free is not None and 0 < free <= total


def test_a_gpus_free_memory_is_asked_of_its_driver(tmp_path, monkeypatch):
    """nvidia-smi (the driver's tool; a stand-in here that answers as it does) is asked for
    the GPU CUDA shows first, and the GPU batch fits what it says is free."""
    asked = tmp_path / "asked"
    smi = tmp_path / "nvidia-smi"
    smi.write_text(f'#!/bin/sh\necho "$@" > {asked}\necho 8000\n')
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")

    assert free_gpu_memory_mb() == 8000
    assert asked.read_text().split() == [
        "--query-gpu=memory.free",
        "--format=csv,noheader,nounits",
        "-i",
        "2",
    ]
    assert decoding_setup("cuda", model="large-v3").batch_size == 7


def test_a_gpu_whose_memory_cant_be_read_gets_the_usual_batch(tmp_path, monkeypatch):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'No devices were found'\nexit 6\n")  # as the driver says
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert free_gpu_memory_mb() is None
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert free_gpu_memory_mb() is None
    assert decoding_setup("cuda", model="large-v3").batch_size == 16


def test_a_batch_size_asked_for_is_the_one_used():
    assert decoding_setup("cpu", batch_size=7, model="large-v3").batch_size == 7
    assert decoding_setup("cpu", model="bundled:base").describe().endswith("batches of 4")
