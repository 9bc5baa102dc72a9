"""The hallucination filter on crafted segments: loops, repeated phrases, impossible speed."""

from engine.asr import Segment, spread_words
from engine.hallucination import HallucinationFilter


def seg(text: str, start: float, end: float) -> Segment:
    return Segment(start=start, end=end, text=text, words=spread_words(text, start, end))


def run(*segments: Segment) -> list[Segment]:
    return list(HallucinationFilter()(segments))


def test_ordinary_speech_passes_unchanged():
    segments = [
        seg("We left early in the morning.", 0.0, 2.0),
        seg("No, no, no, that was not the plan.", 2.5, 5.0),
        seg("Yes.", 5.5, 6.0),
        seg("Yes.", 6.5, 7.0),
    ]
    assert run(*segments) == segments


def test_a_phrase_looped_inside_a_segment_is_kept_once():
    [kept] = run(seg("Thank you. Thank you. Thank you. Thank you. Thank you.", 0.0, 6.0))
    assert kept.text == "Thank you."
    assert [w.text.strip() for w in kept.words] == ["Thank", "you."]
    assert kept.end < 6.0


def test_a_single_word_stutter_is_collapsed_only_past_three():
    [kept] = run(seg("I said go go go go go go now", 0.0, 4.0))
    assert kept.text == "I said go now"
    [natural] = run(seg("go go go", 0.0, 1.5))
    assert natural.text == "go go go"


def test_identical_segments_in_a_loop_are_dropped():
    looped = [seg("And that is how we did it.", i * 2.0, i * 2.0 + 1.8) for i in range(5)]
    kept = run(seg("First we planned.", 0.0, 1.0), *looped)
    assert [k.text for k in kept] == ["First we planned.", "And that is how we did it."]


def test_short_repeats_survive_twice_but_not_a_third_time():
    kept = run(seg("Okay.", 0, 0.5), seg("Okay.", 1, 1.5), seg("Okay.", 2, 2.5))
    assert len(kept) == 2


def test_text_faster_than_anyone_speaks_is_dropped():
    fast = seg("Subtitles by the community of volunteers everywhere", 10.0, 10.4)
    kept = run(seg("Hello.", 0, 1), fast, seg("Goodbye.", 11, 12))
    assert [k.text for k in kept] == ["Hello.", "Goodbye."]


def test_empty_and_punctuation_only_segments_are_dropped():
    assert run(seg("", 0, 1), seg(" ... ", 1, 2)) == []
