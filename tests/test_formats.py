"""engine.formats: every writer checked by reading its output back, readers on hand-made files."""

from __future__ import annotations

import json
import re

import pytest

from engine.formats import (
    parse_srt,
    parse_vtt,
    read_json,
    read_srt,
    read_subtitles,
    read_vtt,
    render,
    render_files,
    safe_stem,
)
from engine.protocol import Cue, RenderedFile, Style, SubtideError, Word

LABELLED = Style(speaker_labels=True)


def _cue(
    cue_id: int,
    start: float,
    end: float,
    text: str,
    *,
    speaker: str | None = None,
    translations: dict[str, str] | None = None,
) -> Cue:
    return Cue(
        id=cue_id,
        start=start,
        end=end,
        text=text,
        speaker=speaker,
        translations=translations or {},
    )


@pytest.fixture
def cues() -> list[Cue]:
    # Sparse ids, a two-line cue, accents, Japanese, emoji and a time past the first hour.
    return [
        _cue(3, 0.5, 2.25, "Bonjour à tous,\nça va ?", speaker="Amélie"),
        _cue(7, 2.5, 4.0, "日本語の字幕です。", speaker="Kenji"),
        _cue(9, 4.1, 6.789, "Tom & Jerry <3 🎉", speaker="Amélie"),
        _cue(12, 3723.456, 3725.0, "Still here after an hour."),
    ]


def _fields(cues: list[Cue]) -> list[tuple[float, float, str]]:
    return [(cue.start, cue.end, cue.text) for cue in cues]


def _dialogues(ass: str) -> list[list[str]]:
    """The ten fields of every Dialogue line, split the way ASS readers split them."""
    return [
        line.removeprefix("Dialogue: ").split(",", 9)
        for line in ass.splitlines()
        if line.startswith("Dialogue: ")
    ]


def _styles(ass: str) -> dict[str, dict[str, str]]:
    """Style rows by name, keyed by the section's own Format line, as ASS readers map them."""
    section = ass.split("[V4+ Styles]\n", 1)[1].split("\n\n", 1)[0].splitlines()
    keys = [key.strip() for key in section[0].removeprefix("Format:").split(",")]
    rows = [line.removeprefix("Style: ").split(",") for line in section[1:]]
    return {row[0]: dict(zip(keys, row, strict=True)) for row in rows}


# --- round trips ------------------------------------------------------------------------------


def test_srt_round_trip_keeps_times_text_and_renumbers(cues: list[Cue]) -> None:
    back = read_srt(render("srt", cues))

    assert _fields(back) == _fields(cues)
    assert [cue.id for cue in back] == [1, 2, 3, 4]


def test_srt_rounds_times_to_the_millisecond() -> None:
    srt = render("srt", [_cue(1, 1.0004, 2.0006, "tick")])

    assert "00:00:01,000 --> 00:00:02,001" in srt
    assert _fields(read_srt(srt)) == [(1.0, 2.001, "tick")]


def test_srt_is_text_with_one_item_per_cue_and_a_trailing_newline(cues: list[Cue]) -> None:
    srt = render("srt", cues)

    assert srt.endswith("\n")
    assert "\r" not in srt
    assert re.findall(r"^(\d+)$", srt, flags=re.MULTILINE) == ["1", "2", "3", "4"]


def test_vtt_round_trip_keeps_speakers_when_labelled(cues: list[Cue]) -> None:
    vtt = render("vtt", cues, style=LABELLED, language="fr")
    back = read_vtt(vtt)

    assert vtt.startswith("WEBVTT\nKind: captions\nLanguage: fr\n\n")
    assert "<v Amélie>Bonjour à tous," in vtt
    assert "Tom &amp; Jerry &lt;3 🎉" in vtt
    assert _fields(back) == _fields(cues)
    assert [cue.speaker for cue in back] == [cue.speaker for cue in cues]
    assert [cue.id for cue in back] == [1, 2, 3, 4]


def test_vtt_without_labels_has_no_voice_tags(cues: list[Cue]) -> None:
    vtt = render("vtt", cues)

    assert "<v " not in vtt
    assert vtt.startswith("WEBVTT\n\n")
    assert [cue.speaker for cue in read_vtt(vtt)] == [None] * 4


def test_json_round_trip_is_exact(cues: list[Cue]) -> None:
    cues[0] = cues[0].model_copy(
        update={
            "translations": {"de": "Hallo zusammen,\nwie geht's?", "ja": "皆さん、こんにちは"},
            "words": [
                Word(start=0.5, end=1.1, text="Bonjour", probability=0.93),
                Word(start=1.2, end=2.25, text="à tous", probability=None),
            ],
        }
    )

    text = render("json", cues, title="Démo 🎬", language="fr", duration=3725.0)
    back = read_json(text)

    assert back == cues
    assert "日本語の字幕です。" in text  # ensure_ascii off: the file stays readable
    assert text.startswith('{\n  "title": "Démo 🎬",\n  "language": "fr",\n  "duration": 3725.0,')


def test_json_says_where_the_text_came_from(cues: list[Cue]) -> None:
    text = render("json", cues, language="fr", source="captions-manual")
    assert json.loads(text)["source"] == "captions-manual"
    assert read_json(text) == cues
    # Without a source (older callers), the key is left out.
    assert "source" not in json.loads(render("json", cues))


def test_json_lists_the_cues_each_target_kept_in_the_source_language() -> None:
    cues = [
        _cue(1, 0, 1, "one", translations={"de": "eins", "fr": "un"}),
        Cue(id=2, start=1, end=2, text="two", translations={"fr": "deux"}, untranslated=["de"]),
        Cue(id=3, start=2, end=3, text="three", untranslated=["de", "fr"]),
    ]

    document = json.loads(render("json", cues))

    assert document["untranslated"] == {"de": [2, 3], "fr": [3]}
    assert [cue["untranslated"] for cue in document["cues"]] == [[], ["de"], ["de", "fr"]]
    assert read_json(render("json", cues)) == cues
    assert "untranslated" not in json.loads(render("json", cues[:1]))


# --- times ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("srt", "01:02:03,456 --> 01:02:05,000"),
        ("vtt", "01:02:03.456 --> 01:02:05.000"),
        # Centiseconds are rounded to the nearest, not truncated: .456 becomes .46.
        ("ass", "Dialogue: 0,1:02:03.46,1:02:05.00,"),
    ],
)
def test_times_past_one_hour(fmt: str, expected: str) -> None:
    assert expected in render(fmt, [_cue(1, 3723.456, 3725.0, "late")])


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0.004, "0:00:00.00"),
        (0.005, "0:00:00.01"),
        (59.996, "0:01:00.00"),
        (3599.995, "1:00:00.00"),
    ],
)
def test_ass_rounds_to_the_nearest_centisecond_with_carry(seconds: float, expected: str) -> None:
    [fields] = _dialogues(render("ass", [_cue(1, seconds, 4000.0, "x")]))

    assert fields[1] == expected


def test_negative_and_inverted_times_are_clamped() -> None:
    cues = [_cue(1, -1.5, -0.5, "before zero"), _cue(2, 5.0, 4.0, "backwards")]

    assert _fields(read_srt(render("srt", cues))) == [
        (0.0, 0.0, "before zero"),
        (5.0, 5.0, "backwards"),
    ]
    assert _fields(read_vtt(render("vtt", cues))) == [
        (0.0, 0.0, "before zero"),
        (5.0, 5.0, "backwards"),
    ]
    assert [fields[1:3] for fields in _dialogues(render("ass", cues))] == [
        ["0:00:00.00", "0:00:00.00"],
        ["0:00:05.00", "0:00:05.00"],
    ]


# --- ASS --------------------------------------------------------------------------------------


def test_ass_escapes_braces_and_breaks_lines() -> None:
    ass = render("ass", [_cue(1, 1.0, 2.0, "a {\\b1} trap\nsecond, line")])

    [fields] = _dialogues(ass)
    assert fields[9] == "a \\{\\b1\\} trap\\Nsecond, line"
    assert "{" not in fields[9].replace("\\{", "")


def test_ass_has_one_coloured_style_per_speaker_and_parses_back(cues: list[Cue]) -> None:
    ass = render("ass", cues, title="Démo")
    styles = _styles(ass)
    dialogues = _dialogues(ass)

    assert "Title: Démo" in ass
    assert "PlayResX: 1920" in ass and "PlayResY: 1080" in ass
    assert list(styles) == ["Default", "Amélie", "Kenji"]
    assert len({style["PrimaryColour"] for style in styles.values()}) == 3
    default = styles["Default"]
    assert (default["Fontname"], default["Fontsize"], default["PrimaryColour"]) == (
        "Arial",
        "64",
        "&H00FFFFFF",
    )
    assert (default["Outline"], default["Shadow"], default["Alignment"]) == ("3", "1", "2")
    assert len(dialogues) == len(cues)
    assert [(fields[3], fields[4]) for fields in dialogues] == [
        ("Amélie", "Amélie"),
        ("Kenji", "Kenji"),
        ("Amélie", "Amélie"),
        ("Default", ""),
    ]
    assert dialogues[0][9] == "Bonjour à tous,\\Nça va ?"


def test_ass_speaker_names_cannot_break_fields() -> None:
    cues = [_cue(1, 0, 1, "hi", speaker="Smith, John"), _cue(2, 1, 2, "yo", speaker="Default")]
    ass = render("ass", cues)

    assert [fields[3:5] for fields in _dialogues(ass)] == [
        ["Smith John", "Smith John"],
        ["Default 2", "Default"],
    ]
    assert list(_styles(ass)) == ["Default", "Smith John", "Default 2"]


def test_ass_dual_puts_a_smaller_italic_translation_under_the_source() -> None:
    cue = _cue(1, 0, 1, "Good morning", translations={"de": "Guten Morgen"})

    [fields] = _dialogues(render("ass", [cue], dual_with="de"))

    assert fields[9] == "Good morning\\N{\\fs48\\i1}Guten Morgen"


# --- reading hand-written files ---------------------------------------------------------------

HAND_WRITTEN_VTT = """WEBVTT - made by hand
Kind: captions
Language: en

NOTE This is a comment
that spans two lines

STYLE
::cue { color: white }

REGION
id:fred width:40%

intro
00:01.000 --> 00:04.250 align:start position:10%
<c.colorE5E5E5>Tom &amp; Jerry</c> <00:00:02.000><c>run</c>

2
00:05.000 --> 00:06.500
<v.loud Mary Jane>Hello
<i>there</i>

NOTE one more

01:00:00.000 --> 01:00:01.000 line:0
&lt;not a tag&gt; caf&eacute;
"""


def test_read_vtt_hand_written() -> None:
    back = read_vtt(HAND_WRITTEN_VTT)

    assert [(cue.id, cue.start, cue.end, cue.text, cue.speaker) for cue in back] == [
        (1, 1.0, 4.25, "Tom & Jerry run", None),
        (2, 5.0, 6.5, "Hello\nthere", "Mary Jane"),
        (3, 3600.0, 3601.0, "<not a tag> café", None),
    ]


def test_read_vtt_accepts_bom_and_crlf() -> None:
    text = "\ufeffWEBVTT\r\n\r\n00:00:01.000 --> 00:00:02.000\r\nHi\r\nthere\r\n"

    assert _fields(read_vtt(text)) == [(1.0, 2.0, "Hi\nthere")]


def test_read_vtt_rejects_other_files() -> None:
    with pytest.raises(SubtideError) as caught:
        read_vtt("1\n00:00:01,000 --> 00:00:02,000\nan SRT file\n")
    assert caught.value.code == "bad_input"


def test_read_srt_with_bom_and_crlf() -> None:
    text = (
        "\ufeff1\r\n00:00:01,000 --> 00:00:02,500\r\nÉtat de l'art\r\nzweite Zeile\r\n\r\n"
        "2\r\n01:00:00,000 --> 01:00:01,250\r\n日本語\r\n"
    )

    back = read_srt(text)

    assert _fields(back) == [
        (1.0, 2.5, "État de l'art\nzweite Zeile"),
        (3600.0, 3601.25, "日本語"),
    ]
    assert [cue.id for cue in back] == [1, 2]


# A file as users send them: two cues whose times cannot be used among readable ones.
BROKEN_SRT = (
    "1\n00:00:01,000 --> 00:00:02,000\none\n\n"
    "2\n00:00:0x,000 --> 00:00:03,000\ntwo\n\n"
    "3\n00:00:05,000 --> 00:00:04,000\nthree\n\n"
    "4\n00:00:06,000 -> 00:00:07,000\nfour\n\n"
    "5\n00:00:08.000 --> 00:00:09.500\nfive\n"
)


@pytest.mark.parametrize(
    "encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"]
)
def test_utf16_and_utf32_files_are_read_with_or_without_bom(tmp_path, encoding: str) -> None:
    # "utf-16" and "utf-32" write a byte order mark; the -le/-be codecs write none.
    path = tmp_path / "wide.srt"
    path.write_bytes("1\n00:00:01,000 --> 00:00:02,500\nÉté 日本\n".encode(encoding))

    parsed = read_subtitles(path)

    assert _fields(parsed.cues) == [(1.0, 2.5, "Été 日本")]
    assert parsed.unreadable == []


def test_unreadable_cues_are_counted_named_and_never_mended() -> None:
    parsed = parse_srt(BROKEN_SRT)

    # The cue that ends before it starts is left out, not shown for 0 s.
    assert _fields(parsed.cues) == [(1.0, 2.0, "one"), (8.0, 9.5, "five")]
    assert [(u.label, u.reason) for u in parsed.unreadable] == [
        ("cue 2", "timing line unreadable"),
        ("cue 3", "ends before it starts"),
        ("cue 4", "timing line unreadable"),
    ]
    assert parsed.problem("talk.srt") == (
        "3 of 5 cues in talk.srt cannot be read: cue 2 (timing line unreadable), "
        "cue 3 (ends before it starts), cue 4 (timing line unreadable)"
    )


def test_vtt_cues_that_end_before_they_start_are_unreadable() -> None:
    parsed = parse_vtt(
        "WEBVTT\n\nNOTE not a cue\n\nintro\n00:00:05.000 --> 00:00:04.000\nback\n\n"
        "00:00:06.000 --> 00:00:07.000\nfine\n"
    )

    assert _fields(parsed.cues) == [(6.0, 7.0, "fine")]
    assert [(u.label, u.reason) for u in parsed.unreadable] == [
        ('"intro"', "ends before it starts")
    ]


def test_a_long_list_of_unreadable_cues_names_the_first_few() -> None:
    text = "".join(f"{n}\n00:00:0{n},000 --> 00:00:00,500\nx\n\n" for n in range(1, 9))

    problem = parse_srt(text).problem("many.srt")

    assert problem.startswith("8 of 8 cues in many.srt cannot be read: cue 1 (")
    assert "cue 5 (" in problem and "cue 6 (" not in problem
    assert problem.endswith(" and 3 more")


def test_a_folder_is_no_subtitle_file(tmp_path) -> None:
    folder = tmp_path / "subs.srt"
    folder.mkdir()

    with pytest.raises(SubtideError) as caught:
        read_subtitles(folder)

    assert caught.value.code == "bad_input"
    assert caught.value.message == "subs.srt is a folder, not a subtitle file."


def test_read_json_rejects_other_json() -> None:
    for text in ('{"items": []}', "[1, 2]", "not json", '{"cues": [{"id": "x"}]}'):
        with pytest.raises(SubtideError) as caught:
            read_json(text)
        assert caught.value.code == "bad_input"


# --- languages --------------------------------------------------------------------------------


def test_missing_translation_falls_back_to_source_text() -> None:
    cues = [
        _cue(1, 0, 1, "one", translations={"de": "eins"}),
        _cue(2, 1, 2, "two"),
        _cue(3, 2, 3, "three", translations={"de": "  "}),
    ]

    back = read_srt(render("srt", cues, lang="de"))

    assert [cue.text for cue in back] == ["eins", "two", "three"]


def test_dual_shows_source_over_translation_and_no_repeat_when_missing() -> None:
    cues = [
        _cue(1, 0, 1, "Good morning\neveryone", translations={"de": "Guten Morgen"}),
        _cue(2, 1, 2, "untranslated"),
    ]

    back = read_vtt(render("vtt", cues, dual_with="de"))

    assert [cue.text for cue in back] == ["Good morning\neveryone\nGuten Morgen", "untranslated"]


def test_srt_speaker_labels() -> None:
    cues = [_cue(1, 0, 1, "hello\nworld", speaker="SPEAKER_00"), _cue(2, 1, 2, "anon")]

    back = read_srt(render("srt", cues, style=LABELLED))

    assert [cue.text for cue in back] == ["[SPEAKER_00] hello\nworld", "anon"]


def test_dual_is_refused_where_the_format_has_no_room() -> None:
    with pytest.raises(ValueError, match="dual"):
        render("txt", [_cue(1, 0, 1, "x")], dual_with="de")


# --- TXT --------------------------------------------------------------------------------------


def test_txt_starts_a_paragraph_after_a_pause() -> None:
    cues = [
        _cue(1, 0.0, 1.0, "First line\nof the talk."),
        _cue(2, 2.0, 3.0, "Same breath."),  # 1 s gap: same paragraph
        _cue(3, 6.0, 7.0, "After a pause."),  # 3 s gap: new paragraph
    ]

    assert render("txt", cues) == ("First line of the talk. Same breath.\n\nAfter a pause.\n")


def test_txt_breaks_and_labels_on_speaker_change() -> None:
    cues = [
        _cue(1, 0.0, 1.0, "Hi.", speaker="Ann"),
        _cue(2, 1.1, 2.0, "Hello.", speaker="Ben"),
        _cue(3, 2.1, 3.0, "How are you?", speaker="Ben"),
    ]

    assert render("txt", cues) == "Hi.\n\nHello. How are you?\n"
    assert render("txt", cues, style=LABELLED) == "Ann: Hi.\n\nBen: Hello. How are you?\n"


def test_txt_joins_japanese_without_spaces() -> None:
    cues = [_cue(1, 0, 1, "今日は\nいい天気。"), _cue(2, 1, 2, "散歩しよう。")]

    assert render("txt", cues) == "今日はいい天気。散歩しよう。\n"


# --- files ------------------------------------------------------------------------------------


def _names(files: list[RenderedFile]) -> list[str]:
    return [file.filename for file in files]


def test_render_files_source_only(cues: list[Cue]) -> None:
    files = render_files(cues, ["srt", "vtt", "json"], stem="talk", language="fr")

    assert _names(files) == ["talk.srt", "talk.vtt", "talk.json"]
    assert [file.lang for file in files] == ["fr", "fr", None]
    assert read_json(files[2].content) == cues


def test_render_files_with_two_targets(cues: list[Cue]) -> None:
    cues[0] = cues[0].model_copy(update={"translations": {"de": "Hallo", "es": "Hola"}})

    files = render_files(
        cues, ["srt", "txt", "json"], stem="talk", language="fr", target_langs=["de", "es"]
    )

    assert _names(files) == [
        "talk.srt",
        "talk.de.srt",
        "talk.es.srt",
        "talk.txt",
        "talk.de.txt",
        "talk.es.txt",
        "talk.json",
    ]
    by_name = {file.filename: file for file in files}
    assert read_srt(by_name["talk.es.srt"].content)[0].text == "Hola"
    assert by_name["talk.de.txt"].content.startswith("Hallo\n\n日本語")


def test_render_files_with_dual(cues: list[Cue]) -> None:
    cues[0] = cues[0].model_copy(update={"translations": {"de": "Hallo"}})

    files = render_files(
        cues,
        ["srt", "txt", "ass"],
        stem="talk",
        language="fr",
        target_langs=["de", "es"],
        style=Style(dual=True),
    )

    assert _names(files) == [
        "talk.srt",
        "talk.de.srt",
        "talk.es.srt",
        "talk.fr-de.srt",
        "talk.fr-es.srt",
        "talk.txt",
        "talk.de.txt",
        "talk.es.txt",
        "talk.ass",
        "talk.de.ass",
        "talk.es.ass",
        "talk.fr-de.ass",
        "talk.fr-es.ass",
    ]
    dual = next(file for file in files if file.filename == "talk.fr-de.srt")
    assert dual.lang == "fr-de"
    assert read_srt(dual.content)[0].text == "Bonjour à tous,\nça va ?\nHallo"


def test_render_files_keeps_language_codes_out_of_paths(cues: list[Cue]) -> None:
    files = render_files(cues, ["srt"], stem="talk", language="fr", target_langs=["../../x"])

    assert all("/" not in name for name in _names(files))


# --- file names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("a/b:c*?", "a b c"),
        ("", "subtitles"),
        ("   ", "subtitles"),
        ("日本語のタイトル", "日本語のタイトル"),
        ("Crème brûlée 🍮 | Part 2", "Crème brûlée 🍮 Part 2"),
        ("line\nbreak\x00and\ttab", "line break and tab"),
        ("../..", "subtitles"),
        ("con", "_con"),
    ],
)
def test_safe_stem(title: str, expected: str) -> None:
    assert safe_stem(title) == expected


def test_safe_stem_caps_the_length() -> None:
    stem = safe_stem("word " * 60)

    assert 0 < len(stem) <= 120
    assert stem == stem.strip()
    assert stem.startswith("word word")
