"""pyannote.audio diarization, for real on the CPU: a community-1-shaped pipeline folder with random
weights (tests/support/pyannote_pipeline.py), since the real weights are gated on the hub. Its
answers mean nothing, so only what holds for any weights is checked; the hub's refusals come from
a stand-in hub on 127.0.0.1."""

import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import AbstractContextManager
from http.server import BaseHTTPRequestHandler
from itertools import pairwise
from pathlib import Path

import pytest
import yaml

if os.environ.get("SUBTIDE_SKIP_PYANNOTE") == "1":
    pytest.skip("SUBTIDE_SKIP_PYANNOTE=1: pyannote tests skipped", allow_module_level=True)

from engine.diarize import Turn
from engine.diarize_pyannote import DEFAULT_PIPELINE, PyannoteDiarizer
from engine.media import decode_audio
from engine.protocol import SubtideError
from tests.support.http_server import serve
from tests.support.pyannote_pipeline import build_random_pipeline
from tests.support.synth import DIALOGUE_EN, fixture_dir, synthesize
from tests.support.timing import HANG_GUARD_S

# pyannote's torch models run (slow). Random segmentation can give a speaker a single frame,
# whose spread torch warns about.
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings(r"ignore:std\(\)")]

REPO = Path(__file__).resolve().parents[1]
FOLDER_HINT = (
    "Point DIARIZATION_PIPELINE at a copy of a whole pyannote pipeline (config.yaml with its "
    "segmentation/, embedding/ and plda/ folders), or use --diarize builtin."
)


@pytest.fixture(scope="session")
def pipeline_folder(tmp_path_factory) -> Path:
    return build_random_pipeline(tmp_path_factory.mktemp("pyannote") / "community-1-random")


@pytest.fixture(scope="module")
def diarizer(pipeline_folder) -> PyannoteDiarizer:
    return PyannoteDiarizer(str(pipeline_folder))


@pytest.fixture(scope="module")
def clip():
    clip = synthesize([DIALOGUE_EN[0], DIALOGUE_EN[5]], fixture_dir(), "pyannote_short", gap=0.7)
    assert clip.duration <= 10
    return clip, decode_audio(clip.wav)


def test_turns_are_sorted_inside_the_clip_and_named_in_order(diarizer, clip):
    spoken, audio = clip
    turns = diarizer.diarize(audio)
    assert_well_formed(turns, spoken.duration)
    # The exclusive diarization: turns follow one another, never overlap.
    assert all(a.end <= b.start + 1e-6 for a, b in pairwise(turns))


def test_a_pipeline_that_returns_a_bare_annotation(pipeline_folder, tmp_path, clip):
    """`legacy: true` makes pyannote 4 return the Annotation itself, as pyannote 3 did."""
    folder = shutil.copytree(pipeline_folder, tmp_path / "legacy")
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["pipeline"]["params"]["legacy"] = True
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    spoken, audio = clip
    assert_well_formed(PyannoteDiarizer(str(folder)).diarize(audio), spoken.duration)


def assert_well_formed(turns: list[Turn], duration: float) -> None:
    assert turns and all(isinstance(t, Turn) for t in turns)
    assert all(0 <= t.start < t.end <= duration for t in turns)
    assert [t.start for t in turns] == sorted(t.start for t in turns)
    first_seen = list(dict.fromkeys(t.speaker for t in turns))
    assert first_seen == [f"SPEAKER_{n}" for n in range(1, len(first_seen) + 1)]


@pytest.mark.parametrize(
    "counts", [{"num_speakers": 1}, {"min_speakers": 1, "max_speakers": 1}], ids=["num", "max"]
)
def test_speaker_counts_reach_the_pipeline(diarizer, clip, counts):
    _, audio = clip
    turns = diarizer.diarize(audio, **counts)
    assert turns and {t.speaker for t in turns} == {"SPEAKER_1"}


def test_a_hub_id_without_a_token_is_refused_before_any_download():
    with pytest.raises(SubtideError) as caught:
        PyannoteDiarizer(DEFAULT_PIPELINE, token=None)
    error = caught.value
    assert error.code == "model_unavailable"
    assert error.message == (
        "pyannote's model pyannote/speaker-diarization-community-1 needs a Hugging Face token."
    )
    assert error.hint == (
        "Accept the model's terms at https://huggingface.co/pyannote/speaker-diarization-"
        "community-1, create a read token, set HF_TOKEN — or use --diarize builtin (no token "
        "needed)."
    )


def test_an_offline_hub_is_reported_as_unreachable_quickly(monkeypatch, tmp_path):
    import huggingface_hub.constants

    assert huggingface_hub.constants.HF_HUB_OFFLINE  # conftest sets HF_HUB_OFFLINE=1
    # An empty cache, so a copy of the real pipeline on this machine cannot answer instead.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    started = time.monotonic()
    with pytest.raises(SubtideError) as caught:
        PyannoteDiarizer(DEFAULT_PIPELINE, token="hf_fake")
    # Hang guard: no retries against a hub that cannot answer (idle, well under a second).
    assert time.monotonic() - started < HANG_GUARD_S
    error = caught.value
    assert error.code == "model_unavailable"
    assert error.message == (
        "Could not download pyannote/speaker-diarization-community-1: "
        "the Hugging Face hub is unreachable."
    )
    assert error.hint == (
        "Connect to the internet once, or set DIARIZATION_PIPELINE to a local pipeline folder, "
        "or use --diarize builtin."
    )
    assert "hf_fake" not in f"{error.message} {error.hint}"


def test_a_hub_that_refuses_the_token_says_so(tmp_path):
    """401 and 403 (gated) from a stand-in hub, in a fresh interpreter: huggingface_hub reads
    HF_ENDPOINT and HF_HUB_OFFLINE once, when it is imported."""
    script = (
        "import json\n"
        "from engine.diarize_pyannote import PyannoteDiarizer\n"
        "from engine.protocol import SubtideError\n"
        "for repo in ('acme/gated', 'acme/private'):\n"
        "    try:\n"
        "        PyannoteDiarizer(repo, token='hf_secret123')\n"
        "    except SubtideError as e:\n"
        "        print(json.dumps([e.code, e.message, e.hint]))\n"
    )
    with refusing_hub() as endpoint:
        env = {
            **os.environ,
            "HF_ENDPOINT": endpoint,
            "HF_HUB_OFFLINE": "0",
            "HF_HUB_CACHE": str(tmp_path),
            "PYTHONPATH": str(REPO),
        }
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
        )
    assert done.returncode == 0, done.stderr
    answers = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("[")]
    assert [message for _, message, _ in answers] == [
        "Hugging Face refused access to acme/gated.",
        "Hugging Face refused access to acme/private.",
    ]
    for code, message, hint in answers:
        assert code == "model_unavailable"
        assert "account that owns the token" in hint and "HF_TOKEN" in hint
        assert "hf_secret123" not in f"{message} {hint}"


def test_a_missing_folder(tmp_path):
    with pytest.raises(SubtideError) as caught:
        PyannoteDiarizer(str(tmp_path / "nowhere"))
    assert caught.value.code == "model_unavailable"
    assert caught.value.message == "No pyannote pipeline at nowhere."
    assert caught.value.hint == FOLDER_HINT


@pytest.mark.parametrize("config", [None, "", "pipeline: [unclosed", "name: not-a-pipeline\n"])
def test_a_folder_without_a_valid_config(tmp_path, config):
    folder = tmp_path / "models"
    folder.mkdir()
    if config is not None:
        (folder / "config.yaml").write_text(config)
    with pytest.raises(SubtideError) as caught:
        PyannoteDiarizer(str(folder))
    assert caught.value.code == "model_unavailable"
    assert caught.value.message == (
        "models is not a pyannote pipeline folder (config.yaml missing or invalid)."
    )
    assert caught.value.hint == FOLDER_HINT


def test_a_folder_with_a_missing_model(pipeline_folder, tmp_path):
    folder = shutil.copytree(pipeline_folder, tmp_path / "partial")
    (folder / "embedding" / "pytorch_model.bin").unlink()
    with pytest.raises(SubtideError) as caught:
        PyannoteDiarizer(str(folder))
    assert caught.value.code == "model_unavailable"
    assert caught.value.message == (
        "The models of the pyannote pipeline in partial could not be loaded."
    )


def test_without_pyannote_installed_the_extra_is_named(monkeypatch, pipeline_folder):
    # None in sys.modules makes the import fail as if the package were not installed.
    monkeypatch.setitem(sys.modules, "pyannote.audio", None)
    with pytest.raises(SubtideError) as caught:
        PyannoteDiarizer(str(pipeline_folder))
    assert caught.value.code == "model_unavailable"
    assert caught.value.message == "Speaker labelling with pyannote needs the pyannote extra."
    assert caught.value.hint == (
        "pip install 'subtide[pyannote]', or use the built-in backend (--diarize builtin)"
    )


def refusing_hub() -> AbstractContextManager[str]:
    """A hub on 127.0.0.1 that answers like huggingface.co to a token without access:
    403 GatedRepo for acme/gated, 401 RepoNotFound for anything else."""
    return serve(_Refusal)


class _Refusal(BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:
        gated = self.path.startswith("/acme/gated/")
        self.send_response(403 if gated else 401)
        self.send_header("X-Error-Code", "GatedRepo" if gated else "RepoNotFound")
        self.send_header("X-Error-Message", "Access to this model is restricted.")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_stop_ends_the_pipeline_between_its_batches(diarizer, clip):
    """Issue 16: a job that is cancelled stops its diarization too."""
    _, audio = clip
    asked = []

    def stop() -> bool:
        asked.append(True)
        return len(asked) > 1  # after its first step

    with pytest.raises(SubtideError) as stopped:
        diarizer.diarize(audio, stop=stop)
    assert stopped.value.code == "cancelled" and len(asked) == 2
