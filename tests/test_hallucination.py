"""The hallucination filter on crafted segments: loops, repeated phrases, impossible speed, and
words Whisper does not believe where it doubts anyone speaks."""

from dataclasses import replace

from engine.asr import Segment, spread_words
from engine.hallucination import HallucinationFilter
from engine.protocol import Word


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


def test_a_phrase_written_again_where_it_was_given_no_time_is_kept_once():
    # tiny.en wrote "four queen of clubs" twice after "ten of clubs", three of the second's
    # words 0 s long ("clubs 4 queen of" is there twice too, the second mostly 0 s long).
    said = spread_words("10 of clubs 4 queen of clubs", 0.18, 3.74)
    again = [Word(start=3.74, end=3.74, text=" " + t) for t in ("4", "queen", "of")]
    words = (*said, *again, Word(start=3.74, end=3.87, text=" clubs"))
    [kept] = run(Segment(0.18, 3.87, "10 of clubs 4 queen of clubs 4 queen of clubs", words))
    assert (kept.text, kept.end) == ("10 of clubs 4 queen of clubs", 3.74)
    # Given no time first, and time after: the copy with time is kept.
    later = spread_words("4 queen of clubs", 3.76, 5.0)
    words = (*again, Word(start=3.74, end=3.76, text=" clubs"), *later)
    [kept] = run(Segment(3.74, 5.0, "4 queen of clubs 4 queen of clubs", words))
    assert (kept.text, kept.start) == ("4 queen of clubs", 3.76)
    # Said twice, both copies with time: both kept.
    [twice] = run(seg("thank you thank you", 0.0, 1.6))
    assert twice.text == "thank you thank you"


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


def scored(text: str, no_speech: float, *probabilities: float) -> Segment:
    """A segment as Whisper returns it: each word with its probability, the window's
    no-speech probability."""
    plain = seg(text, 0.0, 0.4 * len(probabilities))
    words = tuple(
        w.model_copy(update={"probability": p})
        for w, p in zip(plain.words, probabilities, strict=True)
    )
    return replace(plain, words=words, no_speech_prob=no_speech)


def test_words_whisper_does_not_believe_where_it_doubts_speech_are_dropped():
    # As the bundled base model writes them on a tenth of a second of a word, or on noise.
    assert run(scored("You", 0.56, 0.007)) == []
    assert run(scored("Thank you.", 0.59, 0.004, 0.95)) == []
    assert run(scored("Thank you very much.", 0.7, 0.02, 0.9, 0.9, 0.95)) == []


def test_short_real_words_and_unsure_words_in_clear_speech_are_kept():
    lone_no = scored("No.", 0.42, 0.145)  # a real "No." alone, as the base model scores it
    in_speech = scored("Hmm.", 0.1, 0.05)  # Whisper is sure someone speaks there
    unscored = seg("Fine.", 0.0, 0.5)  # no word timings: nothing to judge by
    named = scored("Ngozi said we should all meet at the station.", 0.4, 0.05, *[0.9] * 8)
    assert run(lone_no, in_speech, unscored, named) == [lone_no, in_speech, unscored, named]
