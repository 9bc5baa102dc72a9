"""Cue building and line breaking, checked against the readability rules in Style."""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from itertools import pairwise

import pytest

from engine.cues import CueBuilder, build_cues, is_cjk, wrap_text
from engine.protocol import Cue, Style, Word

STYLE = Style()
TOLERANCE = 1e-9
NO_LINE_START = set("、。，！？」』）")
NO_LINE_END = set("「『（")


def lay_out(
    texts: Sequence[str],
    *,
    start: float = 0.0,
    duration: float = 0.3,
    gap: float = 0.05,
    pauses: Mapping[int, float] | None = None,
) -> list[Word]:
    """Words spoken one after another; `pauses[i]` replaces the gap before word i."""
    words: list[Word] = []
    clock = start
    for index, text in enumerate(texts):
        if index:
            clock += (pauses or {}).get(index, gap)
        words.append(Word(start=clock, end=clock + duration, text=text))
        clock += duration
    return words


def spoken(sentence: str, **timing: float) -> list[Word]:
    """Words as faster-whisper gives them for a space-separated language: a leading space."""
    return lay_out([" " + word for word in sentence.split()], **timing)


def after(words: Sequence[Word], pause: float, sentence: str, **timing: float) -> list[Word]:
    """`sentence` spoken `pause` seconds after the last of `words`."""
    return [*words, *spoken(sentence, start=words[-1].end + pause, **timing)]


def line_limit(style: Style, language: str | None) -> int:
    return style.max_chars_per_line_cjk if is_cjk(language) else style.max_chars_per_line


def joined(words: Sequence[Word], language: str | None) -> str:
    if language in ("ja", "zh"):
        return "".join(word.text.strip() for word in words)
    return " ".join("".join(word.text for word in words).split())


def ends_sentence(word: Word) -> bool:
    return word.text.strip().endswith((".", "?", "!", "。", "？", "！"))


def check_cues(
    cues: Sequence[Cue], words: Sequence[Word], style: Style, language: str | None
) -> None:
    """Every guarantee of build_cues that holds whatever the input (word times increasing)."""
    given_back = [word for cue in cues for word in cue.words or []]
    assert all(a is b for a, b in zip(given_back, words, strict=True))  # same objects, in order
    assert [cue.id for cue in cues] == list(range(cues[0].id, cues[0].id + len(cues)))
    limit = line_limit(style, language)
    for index, cue in enumerate(cues):
        assert cue.words
        lines = cue.text.split("\n")
        assert len(lines) <= style.max_lines
        assert cue.text == cue.text.strip()
        assert cue.text.replace("\n", "" if language == "ja" else " ") == joined(
            cue.words, language
        )
        if len(cue.words) > 1:
            assert max(map(len, lines)) <= limit, cue.text
            assert cue.words[-1].end - cue.words[0].start <= style.max_duration + TOLERANCE
        assert cue.start <= cue.words[0].start
        assert cue.end > cue.start
        assert cue.end - cue.start <= max(style.max_duration, cue.words[-1].end - cue.start)
        following = cues[index + 1].start if index + 1 < len(cues) else float("inf")
        latest = following - style.min_gap
        assert cue.end <= following
        if following - cue.start >= style.min_gap + 0.01:  # else visibility beats the gap
            assert cue.end <= latest + TOLERANCE
        held_back = cue.end >= latest - TOLERANCE
        capped = cue.end >= cue.start + style.max_duration - TOLERANCE
        duration = cue.end - cue.start
        assert duration >= style.min_duration - TOLERANCE or held_back
        chars = len(joined(cue.words, language))
        assert chars / duration <= style.max_cps + TOLERANCE or held_back or capped


# --- sentences and splitting ---------------------------------------------------------------


def test_short_sentence_is_one_cue() -> None:
    words = spoken("Hello there, how are you?")
    cues = build_cues(words, STYLE, "en")
    assert [(cue.id, cue.text) for cue in cues] == [(1, "Hello there, how are you?")]
    assert cues[0].start == words[0].start
    check_cues(cues, words, STYLE, "en")


def test_long_sentence_is_split_into_cues_within_limits() -> None:
    sentence = " ".join(["the committee discussed budgets and schedules for the new library"] * 6)
    words = spoken(sentence + ".")
    cues = build_cues(words, STYLE, "en")
    assert len(cues) >= 5
    check_cues(cues, words, STYLE, "en")
    for cue in cues:
        assert cue.end - cue.start <= STYLE.max_duration


def test_a_sentence_worth_three_cues_becomes_three_not_four() -> None:
    words = spoken(" ".join(["many"] + ["plain words here"] * 12) + ".", duration=0.1)
    text_length = len(joined(words, "en"))
    assert 2 * 84 < text_length <= 2.6 * 84
    sizes = [len(joined(cue.words or [], "en")) for cue in build_cues(words, STYLE, "en")]
    assert len(sizes) == 3
    assert max(sizes) - min(sizes) <= 10  # even thirds, not a half cut in two


MEETING = (
    "Before the meeting started yesterday everybody in the office was talking about the new survey."
)


def first_cue_ends_with(words: Sequence[Word]) -> str:
    return (build_cues(words, STYLE, "en")[0].words or [])[-1].text


def test_split_does_not_leave_a_side_needing_more_cues() -> None:
    # A cut before "a" reads well, but would leave the rest too long for one cue.
    sentence = "Well " + "this sentence goes on for quite a while without any punctuation " * 2
    assert len(build_cues(spoken(sentence.strip() + "."), STYLE, "en")) == 2


def test_split_prefers_a_comma_to_the_middle() -> None:
    assert first_cue_ends_with(spoken(MEETING)) != " yesterday"  # the even split is elsewhere
    cues = build_cues(spoken(MEETING.replace("yesterday", "yesterday,")), STYLE, "en")
    assert [cue.text.split("\n")[0] for cue in cues] == [
        "Before the meeting started yesterday,",
        "everybody in the office was",
    ]


def test_split_prefers_a_pause_to_the_middle() -> None:
    cut = MEETING.split().index("yesterday") + 1
    words = lay_out([" " + word for word in MEETING.split()], pauses={cut: 0.8})
    assert first_cue_ends_with(words) == " yesterday"


def test_split_avoids_a_one_word_orphan() -> None:
    sentence = (
        "Yes, everybody in the office was talking about the surprising results of the survey."
    )
    words = lay_out([" " + word for word in sentence.split()], pauses={1: 0.8})
    cues = build_cues(words, STYLE, "en")
    assert len(cues) == 2
    assert all(len(cue.words or []) > 1 for cue in cues)


def test_every_sentence_end_and_long_pause_is_a_cue_boundary() -> None:
    words = after(spoken("Hi. How are you? Fine! so we went home"), 2.0, "and then we slept")
    words = after(words, 1.1, "five")
    cues = build_cues(words, STYLE, "en")
    assert [cue.text for cue in cues] == [
        "Hi.",
        "How are you?",
        "Fine!",
        "so we went home",
        "and then we slept",
        "five",
    ]


def test_abbreviations_and_closing_quotes() -> None:
    words = spoken('Mr. Smith said "I agree." Then he left.')
    cues = build_cues(words, STYLE, "en")
    assert [cue.text for cue in cues] == ['Mr. Smith said "I agree."', "Then he left."]


def test_text_that_cannot_be_read_in_one_cue_is_split_even_if_it_fits_the_lines() -> None:
    style = Style(max_chars_per_line=60, max_lines=4, max_cps=10)
    sentence = "a fairly long sentence with many words in it " * 3
    words = spoken(sentence.strip() + ".", duration=0.15)
    cues = build_cues(words, style, "en")
    assert len(joined(words, "en")) <= 240
    assert len(cues) > 1
    assert all(len(cue.text) <= style.max_cps * style.max_duration for cue in cues)
    check_cues(cues, words, style, "en")


# --- timing ----------------------------------------------------------------------------------


def test_short_cue_is_extended_to_min_duration() -> None:
    words = after(spoken("Yes."), 3.0, "Then we left.")
    first = build_cues(words, STYLE, "en")[0]
    assert first.end == pytest.approx(first.start + STYLE.min_duration)


def test_cue_end_keeps_the_gap_before_the_next() -> None:
    words = after(spoken("Yes."), 0.3, "Then we left.")
    first, second = build_cues(words, STYLE, "en")
    assert first.end == pytest.approx(second.start - STYLE.min_gap)
    assert first.end - first.start < STYLE.min_duration


def test_fast_speech_is_extended_as_far_as_the_next_cue_allows() -> None:
    fast = spoken("Absolutely everything we tried yesterday worked perfectly well.", duration=0.2)
    words = after(fast, 0.5, "Great.")
    first, second = build_cues(words, STYLE, "en")
    assert len(first.text) / (fast[-1].end - fast[0].start) > STYLE.max_cps
    assert first.end == pytest.approx(second.start - STYLE.min_gap)
    assert len(first.text) / (first.end - first.start) > STYLE.max_cps  # the speech did not allow


def test_fast_speech_with_room_after_it_is_read_at_max_cps() -> None:
    words = spoken("Absolutely everything we tried yesterday worked perfectly well.", duration=0.2)
    (cue,) = build_cues(words, STYLE, "en")
    assert cue.end == pytest.approx(cue.start + len(cue.text) / STYLE.max_cps)


def test_overlapping_and_zero_length_words_never_overlap_cues() -> None:
    instant = [Word(start=5.0, end=5.0, text=" A."), Word(start=5.0, end=5.5, text=" B.")]
    first, second = build_cues(instant, STYLE, "en")
    assert first.start < first.end <= second.start  # shown a moment early rather than not at all
    words = [Word(start=5.0, end=5.0, text=f" {name}.") for name in "ABC"]
    words += [Word(start=5.0, end=5.5, text=" D."), Word(start=5.4, end=6.0, text=" E.")]
    cues = build_cues(words, STYLE, "en")
    assert [w for cue in cues for w in cue.words or []] == words
    for cue, following in pairwise(cues):
        assert cue.start <= cue.end <= following.start
    assert all(cue.start <= (cue.words or [])[0].start for cue in cues)


# --- line breaking ----------------------------------------------------------------------------


def test_wrap_keeps_a_short_line_whole() -> None:
    assert wrap_text("  Just a  short\nline. ", STYLE, "en") == "Just a short line."


def test_wrap_balances_a_sixty_character_line() -> None:
    text = "Readers glance at subtitles quickly and need balanced lines."
    assert len(text) == 60
    top, bottom = wrap_text(text, STYLE, "en").split("\n")
    assert f"{top} {bottom}" == text
    assert max(len(top), len(bottom)) <= STYLE.max_chars_per_line
    assert abs(len(top) - len(bottom)) <= 8


def test_wrap_leans_bottom_heavy_between_near_even_breaks() -> None:
    text = "abcdefghijkl abcdefghijkl xy " + "z" * 26  # 25/29 or 28/26 characters
    assert wrap_text(text, STYLE, "en") == "abcdefghijkl abcdefghijkl\nxy " + "z" * 26


def test_wrap_prefers_a_break_after_a_comma() -> None:
    wrapped = wrap_text("I went to the market yesterday, and then I came back home", STYLE, "en")
    assert wrapped == "I went to the market yesterday,\nand then I came back home"


@pytest.mark.parametrize(
    "text",
    [
        "We stayed at home all day long\nbecause it was raining hard",
        "I really wanted to see\nthe film with my best friends",
    ],
)
def test_wrap_breaks_before_a_conjunction_or_article_not_after(text: str) -> None:
    assert wrap_text(text.replace("\n", " "), STYLE, "en") == text


def test_wrap_never_drops_text_that_cannot_fit() -> None:
    word = "x" * 100
    assert wrap_text(word, STYLE, "en") == word
    text = " ".join(["word"] * 40)
    wrapped = wrap_text(text, STYLE, "en")
    assert wrapped.count("\n") == STYLE.max_lines - 1
    assert wrapped.replace("\n", " ") == text


def test_wrap_japanese_and_chinese_by_characters() -> None:
    japanese = "今日はとても良い天気なので、公園まで散歩に行きましょう。"
    lines = wrap_text(japanese, STYLE, "ja").split("\n")
    assert "".join(lines) == japanese
    assert len(lines) == 2
    assert all(len(line) <= STYLE.max_chars_per_line_cjk for line in lines)
    assert lines[0].endswith("、")
    chinese = "我们今天要讨论的是人工智能的发展以及它对社会的影响。"
    lines = wrap_text(chinese, STYLE, "zh-CN").split("\n")
    assert "".join(lines) == chinese
    assert all(len(line) <= 16 for line in lines)
    assert not lines[1].startswith("。")


def test_wrap_cjk_moves_an_even_break_off_an_opening_bracket() -> None:
    text = "あいうえおかきくけこさ「すせそたちつてとなにぬね」"
    assert wrap_text(text, STYLE, "ja") == "あいうえおかきくけこさ\n「すせそたちつてとなにぬね」"


def test_wrap_cjk_never_breaks_before_closing_or_after_opening_punctuation() -> None:
    rng = random.Random(7)
    kana = "あいうえおかきくけこさしすせそ"
    for _ in range(200):
        pieces = [rng.choice(kana) for _ in range(rng.randint(10, 45))]
        for _ in range(rng.randint(0, 6)):
            at = rng.randrange(1, len(pieces))
            pieces[at:at] = [rng.choice(["。", "、", "」", "！", "「"])]
        text = "".join(pieces)
        lines = wrap_text(text, STYLE, "ja").split("\n")
        assert "".join(lines) == text
        assert len(lines) <= STYLE.max_lines
        assert not any(line[0] in NO_LINE_START for line in lines[1:]), lines
        assert not any(line[-1] in NO_LINE_END for line in lines[:-1]), lines


def test_wrap_cjk_keeps_latin_words_whole() -> None:
    text = "これはとても長いテキストですがinternationalizationは一語です"
    for line in wrap_text(text, STYLE, "ja").split("\n"):
        assert re.fullmatch(r"[^a-z]*(internationalization)?[^a-z]*", line)


def test_wrap_korean_breaks_at_spaces_with_the_cjk_limit() -> None:
    text = "오늘은 날씨가 정말 좋아서 공원에 산책하러 가기로 했어요"
    lines = wrap_text(text, STYLE, "ko").split("\n")
    assert " ".join(lines) == text
    assert len(lines) == 2
    assert all(len(line) <= STYLE.max_chars_per_line_cjk for line in lines)


# Every HTML tag or ASS override block a line holds, and a tag cut in two (an unclosed "<x"
# at the end or a "...>" with no "<" at the start).
_MARKUP = re.compile(r"</?[A-Za-z][^<>]*>|\{\\[^{}]*\}")
_CUT_TAG = re.compile(r"<[^>]*$|^[^<]*>")


def _shown(line: str) -> str:
    return _MARKUP.sub("", line)


def test_wrap_keeps_markup_whole_and_out_of_the_count() -> None:
    # 36 characters shown; with its tags, 65: short enough for one line.
    short = '<font color="#ff0000">Stop right there,</font> <i>please</i>.'
    assert wrap_text(short, STYLE, "en") == short

    text = (
        '<font color="#ff0000">Readers glance at subtitles quickly</font> and {\\i1}need '
        "<i>balanced lines</i>.{\\i0}"
    )
    lines = wrap_text(text, STYLE, "en").split("\n")
    assert " ".join(lines) == text
    assert len(lines) == 2
    assert all(not _CUT_TAG.search(line) for line in lines), lines
    assert all(len(_shown(line)) <= STYLE.max_chars_per_line for line in lines), lines
    # The shown text is balanced as if the tags were not there.
    assert abs(len(_shown(lines[0])) - len(_shown(lines[1]))) <= 8, lines


@pytest.mark.parametrize(
    "text",
    [
        "Whatever you do, <i> do not open that door",
        "She left the house early </i> and never came back",
    ],
)
def test_wrap_sends_a_lone_tag_with_its_text(text: str) -> None:
    # An opening tag goes with the words after it, a closing one with the words before.
    lines = wrap_text(text, Style(max_chars_per_line=20), "en").split("\n")
    assert " ".join(lines) == text and len(lines) == 2
    assert not lines[0].endswith("<i>") and not lines[1].startswith("</i>"), lines


def test_wrap_cjk_keeps_tags_whole() -> None:
    text = (
        '今日は<i>とても良い天気</i>なので、<font color="#ffff00">公園まで散歩</font>'
        "に行きましょう。"
    )
    lines = wrap_text(text, STYLE, "ja").split("\n")
    assert "".join(lines) == text
    assert all(not _CUT_TAG.search(line) for line in lines), lines
    assert all(len(_shown(line)) <= STYLE.max_chars_per_line_cjk for line in lines), lines


def test_a_less_than_sign_is_text_not_a_tag() -> None:
    text = "if a < b and c > d then the result is clearly the smaller of the two numbers"
    lines = wrap_text(text, STYLE, "en").split("\n")
    assert " ".join(lines) == text
    assert all(len(line) <= STYLE.max_chars_per_line for line in lines)


def test_is_cjk() -> None:
    assert all(is_cjk(code) for code in ("zh", "ja", "yue", "ko", "zh-TW", "JA"))
    assert not any(is_cjk(code) for code in ("en", "fr", None))


def test_japanese_and_chinese_cues_join_without_spaces() -> None:
    japanese = lay_out(["今日は", "いい", "天気", "です", "ね。", "散歩", "しましょう。"])
    assert [cue.text for cue in build_cues(japanese, STYLE, "ja")] == [
        "今日はいい天気ですね。",
        "散歩しましょう。",
    ]
    chinese = lay_out(["我", "用", " Vim", " and", " Go", "。"])
    assert [cue.text for cue in build_cues(chinese, STYLE, "zh")] == ["我用Vim and Go。"]


def test_korean_cues_use_the_cjk_line_limit() -> None:
    words = spoken(
        "오늘은 날씨가 정말 좋아서 공원에 산책하러 가기로 했어요. 그리고 점심도 먹었어요."
    )
    cues = build_cues(words, STYLE, "ko")
    assert [cue.text for cue in cues] == [
        "오늘은 날씨가 정말 좋아서",
        "공원에 산책하러\n가기로 했어요.",
        "그리고 점심도 먹었어요.",
    ]
    check_cues(cues, words, STYLE, "ko")


# --- streaming --------------------------------------------------------------------------------


def test_closed_sentence_comes_out_once_the_next_word_arrives() -> None:
    builder = CueBuilder(STYLE, "en", first_id=7)
    first = spoken("Hello there.")
    assert builder.add(first) == []  # its end still depends on when the next cue starts
    released = builder.add(after(first, 1.0, "And welcome back.")[len(first) :])
    assert [(cue.id, cue.text) for cue in released] == [(7, "Hello there.")]
    assert [(cue.id, cue.text) for cue in builder.finish()] == [(8, "And welcome back.")]
    assert builder.finish() == []


def test_a_lull_settles_the_held_cue_as_the_next_word_would() -> None:
    builder = CueBuilder(STYLE, "en")
    first = spoken("Hello there.")
    assert builder.add(first) == []
    # The next cue could still begin within the reading time and cut it short.
    assert builder.quiet_until(first[-1].end + 0.1) == []
    [settled] = builder.quiet_until(first[-1].end + 5.0)
    assert settled == build_cues(after(first, 5.0, "And welcome back."), STYLE, "en")[0]


def test_segment_by_segment_gives_the_same_cues_as_all_at_once() -> None:
    words = spoken(
        "Good evening. Tonight we look at the history of the harbour, which was built in the "
        "eighteenth century by merchants who traded with half of Europe. It grew quickly. "
        "By eighteen fifty the town had doubled, and the old walls came down!"
    )
    builder = CueBuilder(STYLE, "en")
    streamed: list[Cue] = []
    for first in range(0, len(words), 6):
        streamed += builder.add(iter(words[first : first + 6]))
    streamed += builder.finish()
    assert streamed == build_cues(words, STYLE, "en")
    check_cues(streamed, words, STYLE, "en")


def test_unpunctuated_monologue_is_emitted_before_finish() -> None:
    words = spoken(" ".join(["we keep talking without ever stopping"] * 60))
    builder = CueBuilder(STYLE, "en")
    emitted: list[Cue] = []
    for first in range(0, len(words), 20):
        emitted += builder.add(words[first : first + 20])
        if emitted:
            done = (emitted[-1].words or [])[-1].end
            fed = words[min(first + 20, len(words)) - 1].end
            assert fed - done <= 2 * STYLE.max_duration + 1.0
    assert len(emitted) > 10
    cues = emitted + builder.finish()
    check_cues(cues, words, STYLE, "en")


# --- properties over random transcripts ---------------------------------------------------------

VOCABULARY = (
    "the a of and to in is that it was for on are with as I his they be at one have this from "
    "or had by word but what some we can out other were all there when up use your how said an "
    "each she which do their time if will way about many then them would write like so these "
    "extraordinarily responsibilities"
)
KANA = "あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほ日本語東京大学"
HANGUL = "가나다라마바사아자차카타파하한국어서울대학교"
STYLES = (
    STYLE,
    Style(max_chars_per_line=20, max_chars_per_line_cjk=8, max_lines=1, max_cps=12),
    Style(max_lines=3, max_cps=15, min_duration=1.5, max_duration=5, min_gap=0.2),
)


def random_text(rng: random.Random, language: str) -> str:
    punctuation = rng.choice(["", "", "", "", "", ",", ".", "?", "!"])
    if language == "ja":
        mark = {",": "、", ".": "。", "?": "？", "!": "！"}.get(punctuation, "")
        return "".join(rng.choice(KANA) for _ in range(rng.randint(1, 4))) + mark
    if language == "ko":
        return " " + "".join(rng.choice(HANGUL) for _ in range(rng.randint(1, 5))) + punctuation
    if rng.random() < 0.01:
        return " " + "x" * rng.randint(40, 90)  # longer than any line
    return " " + rng.choice(VOCABULARY.split()) + punctuation


def random_words(rng: random.Random, language: str) -> list[Word]:
    words: list[Word] = []
    clock = rng.uniform(0, 3)
    for _ in range(rng.randint(1, 90)):
        duration = 9.0 if rng.random() < 0.005 else rng.uniform(0.1, 0.9)
        words.append(Word(start=clock, end=clock + duration, text=random_text(rng, language)))
        clock += duration + rng.choice([0.0, 0.0, 0.02, 0.05, 0.1, 0.3, 0.8, 1.6, 4.0])
    return words


def random_chunks(rng: random.Random, words: list[Word]) -> list[list[Word]]:
    chunks: list[list[Word]] = []
    first = 0
    while first < len(words):
        size = rng.randint(0, 12)
        chunks.append(words[first : first + size])
        first += size
    return chunks


@pytest.mark.parametrize("language", ["en", "ja", "ko"])
def test_random_transcripts_keep_every_guarantee(language: str) -> None:
    rng = random.Random(f"cues-{language}")
    for _ in range(120):
        style = rng.choice(STYLES)
        words = random_words(rng, language)
        cues = build_cues(words, style, language)
        check_cues(cues, words, style, language)
        last_words = {id(cue.words[-1]) for cue in cues if cue.words}
        for word, following in pairwise(words):
            if ends_sentence(word) or following.start - word.end >= 1.0:
                assert id(word) in last_words
        builder = CueBuilder(style, language)
        streamed = [cue for chunk in random_chunks(rng, words) for cue in builder.add(chunk)]
        assert streamed + builder.finish() == cues
        assert with_lulls(rng, words, style, language) == cues


def with_lulls(rng: random.Random, words: list[Word], style: Style, language: str) -> list[Cue]:
    """The cues streamed with a lull after each chunk, as the transcriber says them: no word
    to come starts before a time at or a little before the next word's start."""
    builder = CueBuilder(style, language)
    streamed: list[Cue] = []
    given = 0
    for chunk in random_chunks(rng, words):
        streamed += builder.add(chunk)
        given += len(chunk)
        if given < len(words):
            streamed += builder.quiet_until(words[given].start - rng.choice([0.0, 0.1, 1.0]))
    return streamed + builder.finish()
