"""Speakers for words and cues: overlap, nearest turn, flicker smoothing, split at a change."""

import pytest

from engine.diarize import SpeakerTrack, Turn, Turns, smooth
from engine.protocol import Cue, Style, SubtideError, Word

TURNS = [Turn(0.0, 4.0, "SPEAKER_1"), Turn(4.5, 9.0, "SPEAKER_2"), Turn(9.2, 9.6, "SPEAKER_1")]


def words(*spans: tuple[str, float, float]) -> list[Word]:
    return [Word(start=s, end=e, text=" " + t) for t, s, e in spans]


def track(turns=TURNS, names=None) -> SpeakerTrack:
    made = SpeakerTrack(lambda _: list(turns), names or {}, Style())
    assert made.wait(timeout=5)
    return made


def test_a_word_takes_the_speaker_it_overlaps_most_or_the_nearest():
    turns = Turns(TURNS)
    assert turns.speaker_at(Word(start=3.8, end=4.6, text="x")) == "SPEAKER_1"
    assert turns.speaker_at(Word(start=3.95, end=4.9, text="x")) == "SPEAKER_2"
    assert turns.speaker_at(Word(start=10.0, end=10.3, text="x")) == "SPEAKER_1"  # 0.4 s away
    assert turns.speaker_at(Word(start=12.0, end=12.5, text="x")) is None


def test_a_short_flicker_between_runs_of_one_speaker_is_smoothed():
    ws = words(("a", 0, 1), ("b", 1, 2), ("c", 2, 2.4), ("d", 2.4, 3), ("e", 3, 4))
    labels = ["A", "A", "B", "A", "A"]
    assert smooth(labels, ws) == ["A"] * 5
    long_run = words(("a", 0, 1), ("b", 1, 2), ("c", 2, 3.5), ("d", 3.5, 4), ("e", 4, 5))
    assert smooth(["A", "A", "B", "B", "B"], long_run) == ["A", "A", "B", "B", "B"]
    assert smooth([None, "A", None], ws[:3]) == ["A", "A", "A"]


def test_a_cue_with_a_speaker_change_is_split_there_and_loses_no_word():
    ws = words(
        ("So", 2.0, 2.3),
        ("that", 2.3, 2.6),
        ("was", 2.6, 3.0),
        ("the", 3.0, 3.3),
        ("plan,", 3.3, 3.9),
        ("but", 4.6, 4.9),
        ("then", 4.9, 5.3),
        ("it", 5.3, 5.5),
        ("rained.", 5.5, 6.2),
    )
    cue = Cue(id=1, start=2.0, end=6.2, text="So that was the plan,\nbut then it rained.", words=ws)
    pieces = track(names={"SPEAKER_2": "Ben"}).label([cue], "en")
    assert [p.speaker for p in pieces] == ["SPEAKER_1", "Ben"]
    assert [w for p in pieces for w in p.words] == ws
    assert pieces[0].text == "So that was the plan," and pieces[1].text == "but then it rained."
    assert pieces[0].end <= pieces[1].start - Style().min_gap + 1e-9


def test_a_cue_of_one_speaker_is_labelled_whole():
    ws = words(("Hello", 5.0, 5.5), ("there.", 5.5, 6.0))
    [labelled] = track().label([Cue(id=4, start=5.0, end=6.0, text="Hello there.", words=ws)], None)
    assert labelled.speaker == "SPEAKER_2" and labelled.id == 4 and labelled.words == ws


def test_a_failing_diarizer_raises_when_its_turns_are_asked_for():
    def broken(_) -> list[Turn]:
        raise SubtideError("model_unavailable", "no model")

    failing = SpeakerTrack(broken, {}, Style())
    assert failing.wait(timeout=5) and failing.ready
    with pytest.raises(SubtideError, match="no model"):
        failing.turns()
