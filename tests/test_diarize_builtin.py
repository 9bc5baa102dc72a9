"""The built-in diarizer: resemblyzer's voice encoder run in numpy, scored on synthesised speech
whose speaker per sentence is known."""

import importlib.util
import os
import pickle
import subprocess
import sys
import wave
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from engine.diarize import Turn
from engine.diarize_builtin import BuiltinDiarizer, load_weights
from engine.protocol import SubtideError
from engine.timing import speech_regions
from tests.support.speakers import best_mapping, frame_accuracy, sentence_speakers
from tests.support.synth import DIALOGUE_EN, SAMPLE_RATE, Clip, fixture_dir, synthesize

# Three voices the encoder tells apart (mean embeddings 0.65-0.72 alike), in no fixed order.
THREE_VOICES = [
    ("en+m3", "Good morning, everyone. Shall we start the meeting?"),
    ("en+f3", "Yes, I have the numbers from last month ready."),
    ("en+grandma", "Before we begin, has anybody seen my glasses?"),
    ("en+f3", "They are on the shelf, right next to the plant."),
    ("en+m3", "Thank you. Now, the first item is the new office."),
    ("en+grandma", "I still think the old one was perfectly fine, to be honest."),
    ("en+m3", "It was too small for the whole team, though."),
    ("en+f3", "And the heating broke twice during the winter."),
    ("en+grandma", "Well, then I suppose we should move after all."),
    ("en+m3", "Good. Let us look at the floor plans together."),
]
HINT = "pip install --no-deps resemblyzer==0.1.4"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def diarizer() -> BuiltinDiarizer:
    # CI installs the weights: a missing model must fail here, not skip.
    return BuiltinDiarizer()


@pytest.fixture(scope="module")
def three_voices() -> Clip:
    gaps = [0.6, 0.8, 0.5, 0.7, 0.9, 0.6, 0.5, 0.8, 0.7]
    return synthesize(THREE_VOICES, fixture_dir(), "three_voices", gap=gaps)


@pytest.fixture(scope="module")
def one_voice() -> Clip:
    lines = [("en+m3", text) for _, text in DIALOGUE_EN[:6]]
    return synthesize(lines, fixture_dir(), "one_voice", gap=0.7)


_AUDIO: dict[Path, tuple[np.ndarray, list[tuple[float, float]]]] = {}


def audio_and_speech(clip: Clip) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """The clip's samples and VAD regions, read once per session."""
    if clip.wav not in _AUDIO:
        with wave.open(str(clip.wav), "rb") as reader:
            pcm = np.frombuffer(reader.readframes(reader.getnframes()), dtype=np.int16)
        audio = pcm.astype(np.float32) / 32768
        _AUDIO[clip.wav] = (audio, speech_regions(audio))
    return _AUDIO[clip.wav]


def diarize(diarizer: BuiltinDiarizer, clip: Clip, **options) -> list[Turn]:
    audio, speech = audio_and_speech(clip)
    return diarizer.diarize(audio, speech=speech, **options)


def speakers(turns: list[Turn]) -> set[str]:
    return {turn.speaker for turn in turns}


def assert_well_formed(turns: list[Turn], clip: Clip) -> None:
    assert turns, "speech but no turns"
    for turn in turns:
        assert 0 <= turn.start < turn.end <= clip.duration
    for before, after in pairwise(turns):
        assert before.end <= after.start, "turns must be sorted and must not overlap"
    first_seen = list(dict.fromkeys(turn.speaker for turn in turns))
    assert first_seen == [f"SPEAKER_{n}" for n in range(1, len(first_seen) + 1)]


def assert_every_sentence_right(turns: list[Turn], clip: Clip) -> None:
    mapping = best_mapping(turns, clip)
    majority = sentence_speakers(turns, clip)
    for label, sentence in zip(majority, clip.sentences, strict=True):
        assert mapping.get(label) == sentence.voice, f"wrong speaker for {sentence.text!r}"


# --- the weights ------------------------------------------------------------------------------


def test_the_weights_load_without_torch_or_the_resemblyzer_module(diarizer):
    package = importlib.util.find_spec("resemblyzer")
    weights = load_weights(Path(package.submodule_search_locations[0]) / "pretrained.pt")
    assert weights["lstm.weight_ih_l0"].shape == (1024, 40)
    for layer in (1, 2):
        assert weights[f"lstm.weight_ih_l{layer}"].shape == (1024, 256)
    for layer in (0, 1, 2):
        assert weights[f"lstm.weight_hh_l{layer}"].shape == (1024, 256)
        assert weights[f"lstm.bias_ih_l{layer}"].shape == (1024,)
        assert weights[f"lstm.bias_hh_l{layer}"].shape == (1024,)
    assert weights["linear.weight"].shape == (256, 256)
    assert weights["linear.bias"].shape == (256,)
    assert all(array.dtype == np.float32 and np.isfinite(array).all() for array in weights.values())


def test_diarizing_imports_neither_torch_nor_the_resemblyzer_module():
    # In a fresh process: other tests in this session may have imported torch (pyannote).
    script = (
        "import sys, numpy as np\n"
        "from engine.diarize_builtin import BuiltinDiarizer\n"
        "BuiltinDiarizer().diarize(np.zeros(16000, dtype=np.float32))\n"
        "print(sorted(m for m in ('torch', 'resemblyzer') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert done.stdout.strip() == "[]"


class _Payload:
    """Unpickles into a call of os.system: what a booby-trapped model file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _legacy_file(path: Path, checkpoint: object) -> Path:
    # torch's legacy layout: magic number, protocol version, system info, the checkpoint, keys.
    parts = [0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}, checkpoint, []]
    path.write_bytes(b"".join(pickle.dumps(part, protocol=2) for part in parts))
    return path


def test_the_loader_refuses_a_pickle_that_names_any_other_global(tmp_path):
    marker = tmp_path / "pwned"
    trap = _legacy_file(tmp_path / "trap.pt", {"model_state": {"x": _Payload(marker)}})
    with pytest.raises(pickle.UnpicklingError, match="refused global"):
        load_weights(trap)
    assert not marker.exists()

    with pytest.raises(SubtideError) as caught:
        BuiltinDiarizer(weights=trap).diarize(np.zeros(SAMPLE_RATE, np.float32), speech=[(0, 1)])
    assert caught.value.code == "model_unavailable"
    assert not marker.exists()


def test_missing_weights_say_how_to_install_them(tmp_path):
    with pytest.raises(SubtideError) as caught:
        BuiltinDiarizer(weights=tmp_path / "nope.pt")
    assert caught.value.code == "model_unavailable"
    assert caught.value.hint == HINT


# --- diarization ------------------------------------------------------------------------------


def test_a_two_voice_dialogue_is_labelled_sentence_by_sentence(diarizer, clips):
    audio, _ = audio_and_speech(clips.dialogue)
    diarizer.diarize(audio[: 2 * SAMPLE_RATE], speech=[(0.5, 2.0)])  # loads the weights
    turns = diarizer.diarize(audio)  # finds the speech itself

    assert_well_formed(turns, clips.dialogue)
    assert speakers(turns) == {"SPEAKER_1", "SPEAKER_2"}
    assert frame_accuracy(turns, clips.dialogue) >= 0.90
    assert_every_sentence_right(turns, clips.dialogue)
    # Its real-time factor is measured by bench/diarize.py.


def test_a_given_speaker_count_gives_exactly_that_many_labels(diarizer, clips):
    turns = diarize(diarizer, clips.dialogue, num_speakers=2)
    assert speakers(turns) == {"SPEAKER_1", "SPEAKER_2"}
    assert_every_sentence_right(turns, clips.dialogue)


@pytest.mark.parametrize("options", [{}, {"num_speakers": 3}], ids=["automatic", "given"])
def test_three_voices_are_told_apart(diarizer, three_voices, options):
    turns = diarize(diarizer, three_voices, **options)
    assert_well_formed(turns, three_voices)
    assert len(speakers(turns)) == 3
    assert frame_accuracy(turns, three_voices) >= 0.85
    assert_every_sentence_right(turns, three_voices)


def test_one_voice_is_one_speaker(diarizer, one_voice):
    turns = diarize(diarizer, one_voice)
    assert_well_formed(turns, one_voice)
    assert speakers(turns) == {"SPEAKER_1"}
    assert frame_accuracy(turns, one_voice) >= 0.95


def test_speaker_bounds_are_respected(diarizer, one_voice, three_voices):
    assert len(speakers(diarize(diarizer, one_voice, min_speakers=2))) == 2
    assert len(speakers(diarize(diarizer, three_voices, max_speakers=2))) == 2
    with pytest.raises(ValueError):
        diarizer.diarize(np.zeros(SAMPLE_RATE, np.float32), min_speakers=3, max_speakers=2)


def test_labels_are_numbered_in_order_of_first_appearance(diarizer, three_voices):
    turns = diarize(diarizer, three_voices)
    voice_of: dict[str, str] = {}
    majority = sentence_speakers(turns, three_voices)
    for label, sentence in zip(majority, three_voices.sentences, strict=True):
        voice_of.setdefault(label, sentence.voice)
    assert list(voice_of) == ["SPEAKER_1", "SPEAKER_2", "SPEAKER_3"]
    assert list(voice_of.values()) == ["en+m3", "en+f3", "en+grandma"]


def test_audio_at_another_sample_rate_is_resampled(diarizer, clips):
    from scipy.signal import resample_poly

    audio, speech = audio_and_speech(clips.short)
    turns = diarizer.diarize(resample_poly(audio, 441, 160), sample_rate=44100, speech=speech)
    assert len(speakers(turns)) == 2
    assert frame_accuracy(turns, clips.short) >= 0.9


def test_silence_has_no_turns(diarizer):
    silence = np.zeros(5 * SAMPLE_RATE, dtype=np.float32)
    assert diarizer.diarize(silence) == []
    assert diarizer.diarize(silence, speech=[]) == []


def test_a_stop_ends_it_before_its_next_batch_of_windows(diarizer, three_voices):
    """Issue 16: a job that is cancelled stops its diarization too."""
    with pytest.raises(SubtideError) as stopped:
        diarize(diarizer, three_voices, stop=lambda: True)
    assert stopped.value.code == "cancelled"
