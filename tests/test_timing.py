"""Word times snapped to speech edges found by VAD (crafted regions, plus real VAD on speech)."""

import numpy as np
import pytest

from engine.protocol import Word
from engine.timing import Region, SpeechSnapper, pauses, speech_regions

REGIONS = [(0.5, 2.9), (3.6, 8.9), (9.6, 12.4)]


def w(text: str, start: float, end: float) -> Word:
    return Word(start=start, end=end, text=" " + text)


def test_an_early_start_in_silence_moves_to_the_speech_onset():
    [first, second] = SpeechSnapper(REGIONS).snap([w("Have", 0.14, 0.7), w("you", 0.7, 0.9)])
    assert first.start == 0.5 and first.end == 0.7
    assert second == w("you", 0.7, 0.9)


def test_a_late_end_in_silence_moves_back_to_the_speech_offset():
    [last] = SpeechSnapper(REGIONS).snap([w("summer?", 2.5, 3.3)])
    assert (last.start, last.end) == (2.5, 2.9)


def test_a_word_stretched_over_a_pause_goes_to_the_side_it_belongs_to():
    snapper = SpeechSnapper(REGIONS)
    opening = snapper.snap([w("late.", 8.0, 8.85), w("I", 8.85, 9.7), w("like", 9.7, 9.9)])
    assert opening[1].start == 9.6, "a word opening a sentence belongs after the pause"
    closing = snapper.snap([w("sleep", 2.0, 2.5), w("late.", 2.5, 3.8)])
    assert (closing[1].start, closing[1].end) == (2.5, 2.9)


def test_an_opening_word_begun_in_voice_of_its_own_is_before_the_pause_it_is_stretched_over():
    # tiny.en began "four" 0.1 s into its voice, long after "clubs." ended, and stretched it
    # over the pause between "four" and "queen" to 0.02 s after it: it is said where the VAD
    # heard that voice begin.
    regions = [(0.19, 1.02), (1.44, 1.8), (2.02, 2.97)]
    snapper = SpeechSnapper(regions, previous=w("clubs.", 0.6, 0.9))
    [four, _] = snapper.snap([w("4", 1.54, 2.04), w("queen", 2.04, 2.3)])
    assert (four.start, four.end) == (1.44, 1.8)


def test_a_word_stretched_over_a_pause_mid_sentence_is_the_word_after_it():
    # base wrote "ten of clubs four queen" with no full stop, and stretched "four" (spoken
    # after the pause) from the end of "clubs" over the pause, more of it before than after.
    regions = [(0.19, 1.02), (1.38, 2.88)]
    [_, four, _] = SpeechSnapper(regions).snap(
        [w("clubs", 0.46, 0.68), w("four", 0.68, 1.58), w("queen", 1.58, 2.1)]
    )
    assert (four.start, four.end) == (1.38, 1.58)
    # One that ends a clause is the word before; one with next to no voice after, too.
    for last in (w("clubs,", 0.68, 1.58), w("clubs", 0.68, 1.42)):
        [_, clubs] = SpeechSnapper(regions).snap([w("of", 0.46, 0.68), last])
        assert (clubs.start, clubs.end) == (0.68, 1.02)


def test_a_clause_end_stretched_over_a_pause_is_after_it_when_only_voice_no_word_claims_is():
    # base wrote "ten of clubs. four queen of clubs" as "10 of cloves 4, Queen of Cloves",
    # stretched "4," from the end of "cloves" over the 1.38 s pause and began "Queen" 0.56 s
    # into the voice after it: that voice is "four".
    regions = [(0.19, 1.02), (2.4, 3.9)]
    words = [w("cloves", 0.46, 0.7), w("4,", 0.7, 2.6), w("Queen", 2.96, 3.14)]
    [_, four, _] = SpeechSnapper(regions).snap(words)
    assert (four.start, four.end) == (2.4, 2.6)
    # With the next word right after it, the comma's word is the one before the pause.
    words = [w("cloves", 0.46, 0.7), w("4,", 0.7, 2.6), w("Queen", 2.6, 3.14)]
    [_, four, _] = SpeechSnapper(regions).snap(words)
    assert (four.start, four.end) == (0.7, 1.02)


def test_a_pause_a_fifth_of_a_second_long_is_not_inside_a_word():
    # base wrote "seven of clubs five five" under noise and stretched the first "five" from
    # the end of "clubs" over the 0.26 s the VAD heard between the two sentences.
    regions = [(3.59, 4.8), (5.06, 6.05)]
    words = [w("clubs", 4.18, 4.52), w("five", 4.52, 5.24), w("five", 5.24, 5.78)]
    [_, five, _] = SpeechSnapper(regions).snap(words)
    assert (five.start, five.end) == (5.06, 5.24)


def test_a_first_word_run_on_from_the_sentence_before_goes_after_the_pause_it_opens():
    # base wrote "...than he was." then, from a stretch decoded again, "He might even", with
    # "He" right after "was." and "might" stretched over the 1 s pause before them.
    regions = [(14.82, 20.38), (21.41, 24.22)]
    words = [w("He", 19.98, 20.68), w("might", 20.68, 21.72), w("even", 21.72, 22.02)]
    snapper = SpeechSnapper(regions)
    snapper.snap([w("he", 19.64, 19.74), w("was.", 19.74, 19.98)])
    he, might, _ = snapper.snap(words)
    assert he.start == 21.41 and he.end <= might.start < might.end == 21.72
    # A comma says the reader paused there: the word stays before the pause.
    snapper = SpeechSnapper(regions)
    snapper.snap([w("was.", 19.74, 19.98)])
    assert snapper.snap([w("Well,", 19.98, 20.68), *words[1:]])[0].start == 19.98


def test_words_far_from_any_speech_are_left_alone():
    snapper = SpeechSnapper(REGIONS, max_shift=1.0)
    lonely = w("hmm", 14.0, 14.5)
    assert snapper.snap([lonely]) == [lonely]
    assert SpeechSnapper([]).snap([lonely]) == [lonely]


def test_a_word_stretched_far_over_silence_starts_where_its_voice_does():
    # Whisper began "eight" just after "five" and stretched it over a pause longer than
    # max_shift: the onset inside the word's own span is still where it is spoken.
    snapper = SpeechSnapper([(0.5, 2.0), (3.5, 5.0)], max_shift=1.0)
    [_, eight] = snapper.snap([w("five", 1.5, 2.0), w("eight", 2.1, 3.7)])
    assert (eight.start, eight.end) == (3.5, 3.7)


def test_a_word_aligned_after_voice_no_word_claims_starts_with_it_mid_sentence_too():
    # tiny.en wrote "7 of clubs 5, 5" with no full stop, and began the first "5" 0.4 s into
    # the voice the VAD heard begin after "clubs".
    [_, five] = SpeechSnapper(REGIONS).snap([w("clubs", 2.0, 2.8), w("5,", 4.0, 4.3)])
    assert (five.start, five.end) == (3.6, 4.3)


def test_a_word_wholly_in_silence_keeps_its_length_at_the_next_onset():
    [moved] = SpeechSnapper(REGIONS).snap([w("so", 3.0, 3.2)])
    assert moved.start == 3.6 and moved.end == pytest.approx(3.8)


def test_a_word_going_on_a_sentence_wholly_in_the_silence_after_it_ends_where_speech_did():
    # "five, five," read ending at 2.9; Whisper put the second "five," just after that.
    [_, late] = SpeechSnapper(REGIONS).snap([w("five,", 2.3, 2.6), w("five,", 2.95, 3.2)])
    assert (late.start, late.end) == (pytest.approx(2.65), 2.9)
    # The same word opening a sentence belongs to the speech that follows.
    [_, opening] = SpeechSnapper(REGIONS).snap([w("five.", 2.3, 2.6), w("So", 2.95, 3.2)])
    assert opening.start == 3.6


def test_real_vad_finds_the_sentences_of_a_synthesised_clip(clips):
    from engine.media import decode_audio

    audio = decode_audio(clips.short.wav)
    regions = speech_regions(audio)
    assert isinstance(audio, np.ndarray)
    for sentence in clips.short.sentences:
        assert min(abs(start - sentence.start) for start, _ in regions) < 0.06
        assert min(abs(end - sentence.end) for _, end in regions) < 0.1


def test_pauses_are_found_by_energy_and_short_dips_are_not_pauses():
    rate = 16000
    t = np.arange(2 * rate) / rate
    voice = np.sin(2 * np.pi * 220 * t) * 0.3
    for start, end in [(0.0, 0.5), (1.0, 1.12), (1.6, 1.65)]:  # quiet: 0.5 s, 0.12 s, 0.05 s
        voice[int(start * rate) : int(end * rate)] = 0.0
    voice += np.random.default_rng(0).standard_normal(len(t)) * 1e-3  # a room's hiss
    [(quiet, resumes)] = pauses(voice.astype(np.float32), 0.6, 1.9)
    assert quiet == pytest.approx(1.0, abs=0.02) and resumes == pytest.approx(1.12, abs=0.02)


@pytest.fixture(scope="module")
def real_clips():
    from tests.support import real_speech
    from tests.support.synth import fixture_dir

    if not real_speech.available():
        pytest.skip("needs pocketsphinx-testdata")
    return {clip.wav.stem: clip for clip in real_speech.standard_clips(fixture_dir())}


def audio_of(clip) -> np.ndarray:
    from engine.media import decode_audio

    return decode_audio(clip.wav)


def snapper_on(clip) -> SpeechSnapper:
    audio = audio_of(clip)
    return SpeechSnapper(speech_regions(audio), audio=audio)


@pytest.mark.parametrize(
    ("start", "end"), [(-0.3, 0.2), (0.2, 0.25)], ids=["inside the sentence before", "late"]
)
def test_a_sentence_opening_word_starts_at_the_voice_after_a_short_pause(real_clips, start, end):
    # Sentences 2 and 3 of the clip are 0.12 s apart: too short a pause for the VAD to see.
    clip = real_clips["librivox_pauses"]
    onset = clip.sentences[2].start
    snapper = snapper_on(clip)
    snapper.snap([w("man.", onset - 0.5, min(start + onset, onset - 0.1))])
    [opening] = snapper.snap([w("Unless", onset + start, onset + end)])
    assert opening.start == pytest.approx(onset, abs=0.05)


def test_music_in_a_pause_is_not_taken_for_the_voice(real_clips):
    clip = real_clips["librivox_music"]
    onset = clip.sentences[3].start  # a second of music before it
    snapper = snapper_on(clip)
    snapper.snap([w("disposed.", onset - 1.3, onset - 1.0)])
    [opening] = snapper.snap([w("Had", onset, onset + 0.15)])
    assert opening.start == pytest.approx(onset, abs=0.05)


def test_an_opening_word_aligned_after_voice_no_word_claims_starts_with_that_voice(real_clips):
    # tiny.en put "four" 0.7 s late, after "four queen" was mostly spoken (the noise under the
    # cards clip hides the pause from the energy; the VAD hears the voice begin).
    clip = real_clips["cards_noise"]
    before, sentence = clip.sentences[0], clip.sentences[1]
    snapper = snapper_on(clip)
    snapper.snap([w("clubs,", before.end - 0.3, before.end + 0.06)])
    [opening] = snapper.snap([w("4", sentence.start + 0.7, sentence.start + 0.74)])
    assert 0.0 <= opening.start - sentence.start <= 0.15


def test_an_opening_word_over_a_dropped_word_starts_with_the_first_voice(real_clips):
    # base wrote "five five" as one "5" from the middle of the first "five" to the end of the
    # second: the word holds a pause, but the voice before it is no earlier word's either.
    clip = real_clips["cards_noise"]
    before, sentence = clip.sentences[2], clip.sentences[3]
    snapper = snapper_on(clip)
    snapper.snap([w("clubs.", before.end - 0.3, before.end - 0.2)])
    [opening] = snapper.snap([w("5", sentence.start + 0.3, sentence.end + 0.2)])
    assert 0.0 <= opening.start - sentence.start <= 0.15


def lead_in(clip, seconds: float) -> tuple[np.ndarray, float]:
    """The clip's audio after `seconds` of digital silence, and its first sentence's onset."""
    from engine.media import decode_audio

    zeros = np.zeros(round(seconds * 16000), dtype=np.float32)
    return np.concatenate([zeros, decode_audio(clip.wav)]), clip.sentences[0].start + seconds


def test_a_lead_in_of_digital_silence_does_not_make_music_the_voice(real_clips):
    # Music from the recording's first sample, the voice from 0.25 s: zeros before the music
    # are quieter than any room, and the music is the quiet level the voice rises from.
    audio, onset = lead_in(real_clips["librivox_music"], 0.067)
    resumed = [resumes for _, resumes in pauses(audio, 0.0, onset + 0.1)]
    assert resumed and resumed[-1] == pytest.approx(onset, abs=0.05)


def test_a_word_moved_out_of_silence_is_not_stretched_over_its_made_up_span(real_clips):
    # The VAD heard the voice 0.13 s late (its windows fell so), and Whisper put "And" wholly
    # before that: moved there with its length kept, it spans the dip before "Mr.", which is
    # no pause it was stretched over.
    audio, onset = lead_in(real_clips["librivox_music"], 0.04)
    heard = onset + 0.13
    snapper = SpeechSnapper([(heard, onset + 6.0)], audio=audio)
    [first] = snapper.snap([w("And", 0.02, onset + 0.09)])
    assert first.start == pytest.approx(heard)


def test_an_opening_word_is_not_moved_back_over_a_silence_the_vad_heard(real_clips):
    # base stretched "5," from the end of "seven of clubs." over 1.2 s of noise to its own
    # voice, and the VAD heard that voice late: the only pause found before Whisper's start
    # was inside the sentence before, and the cue came 1.34 s early.
    clip = real_clips["cards_noise"]
    before, sentence = clip.sentences[3], clip.sentences[4]
    heard = sentence.start + 0.13
    audio = audio_of(clip)
    regions = [(before.start, before.end + 0.1), (heard, sentence.end)]
    previous = w("five.", before.start + 0.1, before.end)  # from the first "five"'s middle
    snapper = SpeechSnapper(regions, audio=audio, previous=previous)
    [opening] = snapper.snap([w("8", before.end + 0.05, sentence.start + 0.25)])
    assert opening.start == pytest.approx(heard)


def joined(tmp_path, recordings: str, pauses_s: list[float], **background):
    """The recordings ("cards" or "librivox") joined with these pauses (and music or noise
    under them)."""
    from tests.support import real_speech

    if not real_speech.available():
        pytest.skip("needs pocketsphinx-testdata")
    parts = getattr(real_speech, recordings)()
    return real_speech.join(parts, tmp_path, recordings, pauses=pauses_s, **background)


def first_five_late_by(clip, previous: Word, first: Region, second: Region) -> float:
    """Seconds after "five five" is spoken that the first of "5, 5," (at `first` and `second`,
    from the sentence's onset) starts once snapped after `previous`."""
    audio = audio_of(clip)
    onset = clip.sentences[3].start
    snapper = SpeechSnapper(speech_regions(audio), audio=audio, previous=previous)
    [five, _] = snapper.snap(
        [w("5,", onset + first[0], onset + first[1]), w("5,", onset + second[0], onset + second[1])]
    )
    return five.start - onset


def test_an_opening_word_that_ends_a_clause_is_before_the_pause_it_is_stretched_over(tmp_path):
    # tiny.en wrote "five five" as "5, 5," and stretched the first from "clubs." to the
    # second's voice: the dip between the two is the comma's, and the first "five" before it.
    clip = joined(tmp_path, "cards", [0.43, 0.76, 0.84, 0.45])
    before = clip.sentences[2]
    previous = w("clubs.", before.end - 0.36, before.end + 0.2)
    late = first_five_late_by(clip, previous, (-0.56, 0.76), (0.96, 1.54))
    assert 0.0 <= late <= 0.15


@pytest.fixture
def cards_under_loud_music(tmp_path):
    """The cards under music 12 dB below the voices: the VAD hears little of the pauses."""
    return joined(tmp_path, "cards", [1.31, 0.31, 0.91, 0.24], under="music", under_db=-12.0)


def test_a_word_stretched_over_a_pause_the_vad_did_not_hear_goes_after_it(cards_under_loud_music):
    # base wrote the cards without a full stop and stretched "seven" from the end of "four
    # queen of clubs" over the 0.31 s between them; the VAD heard 0.17 s of it.
    clip = cards_under_loud_music
    before, sentence = clip.sentences[1], clip.sentences[2]
    audio = audio_of(clip)
    snapper = SpeechSnapper(speech_regions(audio), audio=audio, previous=w("of", 3.1, 3.28))
    stretched = w("seven", before.end - 0.24, sentence.start + 0.33)
    [_, seven] = snapper.snap([w("cloves", before.end - 0.52, before.end - 0.24), stretched])
    assert seven.start == pytest.approx(sentence.start, abs=0.1)  # its voice rises from 4.01


def test_a_word_stretched_over_two_pauses_starts_after_the_first(cards_under_loud_music):
    # tiny.en stretched "5," from the end of "seven of clubs" over the pause and the first
    # "five" to the dip before the second: that dip is the comma's.
    clip = cards_under_loud_music
    before = clip.sentences[2]
    previous = w("clubs", before.end - 0.35, before.end + 0.41)
    late = first_five_late_by(clip, previous, (-0.58, 0.76), (0.9, 1.34))
    assert 0.0 <= late <= 0.15


def test_an_opening_word_is_not_moved_back_onto_a_dip_in_the_word_before(tmp_path):
    # LibriVox under music 12 dB below the voices, 0.24 s before the last sentence: energy
    # finds no pause there (the music fills it), only a dip inside "was", the word before.
    # base began "He" 0.06 s early; it was moved 0.33 s early, onto that dip.
    clip = joined(tmp_path, "librivox", [0.19, 1.48, 1.47, 0.24], under="music", under_db=-12.0)
    before, sentence = clip.sentences[3], clip.sentences[4]
    audio = audio_of(clip)
    previous = w("was.", before.end - 0.52, before.end - 0.28)
    snapper = SpeechSnapper(speech_regions(audio), audio=audio, previous=previous)
    at = sentence.start
    [he, _] = snapper.snap([w("He", at - 0.06, at + 0.08), w("might", at + 0.08, at + 0.3)])
    assert he.start == pytest.approx(at, abs=0.1)
