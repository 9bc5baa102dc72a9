"""Speaker labels through the whole engine: builtin accuracy per cue, auto fallback, errors."""

from collections import Counter

import pytest

from engine.diarize_pyannote import DEFAULT_PIPELINE
from engine.formats import read_json
from engine.pipeline import Engine, EngineOptions
from engine.protocol import CuesEvent, ErrorEvent, JobSpec, ResultEvent, Source, Style

pytestmark = pytest.mark.slow


def run(engine: Engine, clip, **fields) -> list:
    return list(engine.run(JobSpec(source=Source(path=str(clip)), **fields)))


def result_of(events: list) -> ResultEvent:
    assert isinstance(events[-1], ResultEvent), events[-1]
    return events[-1]


def true_voice(clip, start: float, end: float) -> str:
    middle = (start + end) / 2
    return min(clip.sentences, key=lambda s: max(s.start - middle, middle - s.end, 0)).voice


@pytest.fixture(scope="module")
def labelled(engine, clips) -> list:
    return run(
        engine,
        clips.dialogue.wav,
        diarize="builtin",
        formats=["srt", "vtt", "json"],
        style=Style(speaker_labels=True),
    )


def test_every_cue_gets_the_right_speaker(labelled, clips):
    cues = result_of(labelled).cues
    pairs = Counter((c.speaker, true_voice(clips.dialogue, c.start, c.end)) for c in cues)
    mapping = {}
    for (speaker, voice), _ in pairs.most_common():
        mapping.setdefault(speaker, voice)
    assert len(set(mapping.values())) == 2, pairs
    wrong = [c for c in cues if mapping[c.speaker] != true_voice(clips.dialogue, c.start, c.end)]
    assert not wrong, wrong
    assert {c.speaker for c in cues} == {"SPEAKER_1", "SPEAKER_2"}
    assert cues[0].speaker == "SPEAKER_1"


def test_speakers_reach_every_format(labelled):
    result = result_of(labelled)
    files = {f.format: f.content for f in result.files}
    assert "[SPEAKER_2]" in files["srt"]
    assert "<v SPEAKER_1>" in files["vtt"]
    assert [c.speaker for c in read_json(files["json"])] == [c.speaker for c in result.cues]


def test_cue_ids_stay_in_order_and_every_cue_streams_labelled(labelled):
    streamed = [c for e in labelled if isinstance(e, CuesEvent) for c in e.cues]
    assert all(c.speaker for c in streamed)
    assert [c.id for c in streamed] == list(range(1, len(streamed) + 1))


def test_names_replace_the_labels(engine, clips):
    result = result_of(
        run(
            engine,
            clips.short.wav,
            diarize="builtin",
            num_speakers=2,
            speaker_names={"SPEAKER_1": "Anna", "SPEAKER_2": "Ben"},
        )
    )
    assert {c.speaker for c in result.cues} == {"Anna", "Ben"}


def test_auto_without_a_token_uses_the_builtin_model(engine, clips):
    events = run(engine, clips.short.wav, diarize="auto")
    assert all(c.speaker for c in result_of(events).cues)
    assert not any("pyannote" in getattr(e, "message", "") for e in events)


def test_auto_with_an_unreachable_hub_says_so_and_falls_back(cache_root, clips):
    engine = Engine(EngineOptions(cache_dir=cache_root, use_cache=False, hf_token="hf_fake"))
    events = run(engine, clips.short.wav, diarize="auto")
    notes = [
        e.message for e in events if "built-in speaker model instead" in getattr(e, "message", "")
    ]
    assert notes == [
        f"Could not download {DEFAULT_PIPELINE}: the Hugging Face hub is unreachable. "
        "Using the built-in speaker model instead."
    ]
    assert all(c.speaker for c in result_of(events).cues)


def test_pyannote_without_a_token_is_a_clear_error_before_any_work(cache_root, clips):
    engine = Engine(EngineOptions(cache_dir=cache_root, use_cache=False))
    events = run(engine, clips.short.wav, diarize="pyannote")
    last = events[-1]
    assert isinstance(last, ErrorEvent) and last.code == "model_unavailable"
    assert last.message == f"pyannote's model {DEFAULT_PIPELINE} needs a Hugging Face token."
    assert "HF_TOKEN" in last.hint and "--diarize builtin" in last.hint
    assert not any(isinstance(e, CuesEvent) for e in events)


def test_a_server_can_turn_diarization_off(cache_root, clips):
    engine = Engine(EngineOptions(cache_dir=cache_root, diarization_enabled=False))
    [*_, last] = run(engine, clips.short.wav, diarize="auto")
    assert isinstance(last, ErrorEvent) and last.code == "bad_input"
    assert "ENABLE_DIARIZATION" in last.hint
