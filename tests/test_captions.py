"""engine.captions on crafted caption files: parsers, cleaning, track choice, language check."""

from __future__ import annotations

import json
from itertools import pairwise

import pytest

from engine.captions import (
    Track,
    checked_language,
    choose,
    detect_language,
    fold_rolling,
    list_tracks,
    read_captions,
    recue,
)
from engine.protocol import CaptionTrack, Cue, Style, SubtideError

ENGLISH = (
    "Have you decided where we are going this summer? I was thinking about the coast, somewhere "
    "quiet with a small beach and a good bakery nearby."
)
GERMAN = (
    "Hast du schon entschieden, wohin wir diesen Sommer fahren? Ich dachte an die Küste, "
    "irgendwo ruhig mit einem kleinen Strand und einer guten Bäckerei in der Nähe."
)


def spans(cues: list[Cue]) -> list[tuple[float, float, str]]:
    return [(c.start, c.end, c.text) for c in cues]


# --- WebVTT ------------------------------------------------------------------------------------


def test_vtt_markup_positioning_and_voices():
    vtt = """WEBVTT
Kind: captions
Language: en

STYLE
::cue { color: yellow }

NOTE a comment --> not a cue

intro
00:00:01.000 --> 00:00:03.500 align:start position:10% line:85%
<v.loud Anna Smith>Hello <b>there</b>, <i>Ben</i>!

00:00:04.000 --> 00:00:06.000
<v Ben>I<00:00:04.500><c> am</c><00:00:05.000><c.colorE5E5E5> fine</c> &amp; you?
second line
"""
    cues = read_captions(vtt.encode(), "vtt").cues
    assert spans(cues) == [
        (1.0, 3.5, "Hello there, Ben!"),
        (4.0, 6.0, "I am fine & you?\nsecond line"),
    ]
    assert [c.speaker for c in cues] == ["Anna Smith", "Ben"]
    assert [c.id for c in cues] == [1, 2]


# YouTube's automatic captions: a rolling two-line window, lines of a single space, karaoke
# timestamps, and 10 ms cues between the windows.
YOUTUBE_AUTO_VTT = "\n".join(
    [
        "WEBVTT",
        "Kind: captions",
        "Language: en",
        "",
        "00:00:00.000 --> 00:00:02.340 align:start position:0%",
        " ",
        "have<00:00:00.480><c> you</c><00:00:00.900><c> decided</c>",
        "",
        "00:00:02.340 --> 00:00:02.350 align:start position:0%",
        "have you decided",
        " ",
        "",
        "00:00:02.350 --> 00:00:04.800 align:start position:0%",
        "have you decided",
        "where<00:00:02.800><c> we</c><00:00:03.100><c> are</c><00:00:03.400><c> going</c>",
        "",
        "00:00:04.800 --> 00:00:04.810 align:start position:0%",
        "where we are going",
        " ",
        "",
        "00:00:04.810 --> 00:00:06.000 align:start position:0%",
        "where we are going",
        "this<00:00:05.200><c> summer</c>",
        "",
    ]
)


def test_rolling_automatic_captions_show_each_line_once():
    cues = read_captions(YOUTUBE_AUTO_VTT.encode(), "vtt", automatic=True).cues
    assert spans(cues) == [
        (0.0, 2.35, "have you decided"),
        (2.35, 4.81, "where we are going"),
        (4.81, 6.0, "this summer"),
    ]


def test_rolling_captions_are_recognised_even_when_not_marked_automatic():
    assert len(read_captions(YOUTUBE_AUTO_VTT.encode(), "vtt").cues) == 3


def test_a_repeated_line_in_people_made_captions_is_kept():
    vtt = "WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nNo.\n\n00:00:03.000 --> 00:00:04.000\nNo.\n"
    assert spans(read_captions(vtt.encode(), "vtt").cues) == [(1, 2, "No."), (3, 4, "No.")]
    # Folding only merges a repeat that follows without a gap.
    assert len(fold_rolling(read_captions(vtt.encode(), "vtt").cues)) == 2


# --- SRT ---------------------------------------------------------------------------------------


def test_srt_tags_are_removed_and_bom_and_crlf_tolerated():
    srt = (
        "\ufeff1\r\n00:00:01,000 --> 00:00:02,500\r\n<i>Hello</i> <font color='red'>you</font>"
        "\r\n\r\n2\r\n00:00:03,000 --> 00:00:04,000\r\n{\\an8}Up here\r\n"
    )
    cues = read_captions(srt.encode(), "srt").cues
    assert spans(cues) == [(1.0, 2.5, "Hello you"), (3.0, 4.0, "Up here")]


def test_srt_in_windows_code_page():
    srt = "1\n00:00:01,000 --> 00:00:02,000\nCafé crème\n".encode("cp1252")
    assert read_captions(srt, "srt").cues[0].text == "Café crème"


# --- TTML --------------------------------------------------------------------------------------


def test_ttml_ticks_clock_frames_breaks_spans_and_agents():
    ttml = """<?xml version="1.0" encoding="utf-8"?>
<tt xmlns="http://www.w3.org/ns/ttml" xmlns:ttp="http://www.w3.org/ns/ttml#parameter"
    xmlns:tts="http://www.w3.org/ns/ttml#styling" xmlns:ttm="http://www.w3.org/ns/ttml#metadata"
    ttp:tickRate="10000000" ttp:frameRate="25" xml:lang="en">
  <head>
    <metadata>
      <ttm:agent xml:id="anna" type="person"><ttm:name type="full">Anna</ttm:name></ttm:agent>
    </metadata>
  </head>
  <body>
    <div>
      <p begin="10000000t" end="25000000t" ttm:agent="anna">Hello
         <span tts:fontStyle="italic">there</span><br/>second   line</p>
      <p begin="00:00:03.000" end="00:00:04.500">Clock time</p>
      <p begin="00:00:05:05" dur="1s">Frames and a duration</p>
    </div>
    <div begin="10s">
      <p begin="500ms" end="1.5s">Offset by its div</p>
    </div>
  </body>
</tt>"""
    cues = read_captions(ttml.encode(), "ttml").cues
    assert spans(cues) == [
        (1.0, 2.5, "Hello there\nsecond line"),
        (3.0, 4.5, "Clock time"),
        (5.2, 6.2, "Frames and a duration"),
        (10.5, 11.5, "Offset by its div"),
    ]
    assert cues[0].speaker == "Anna"
    assert cues[1].speaker is None


def test_dfxp_in_the_old_namespace():
    dfxp = (
        '<tt xmlns="http://www.w3.org/2006/10/ttaf1"><body><div>'
        '<p begin="0.5s" end="2s">Old style</p></div></body></tt>'
    )
    assert spans(read_captions(dfxp.encode(), "dfxp").cues) == [(0.5, 2.0, "Old style")]


# --- json3 -------------------------------------------------------------------------------------


def test_json3_segments_appends_and_rolling_windows():
    data = {
        "wireMagic": "pb3",
        "events": [
            {"tStartMs": 0, "dDurationMs": 6000, "id": 1, "wpWinPosId": 1},
            {
                "tStartMs": 0,
                "dDurationMs": 4000,
                "wWinId": 1,
                "segs": [{"utf8": "have"}, {"utf8": " you", "tOffsetMs": 480}],
            },
            {
                "tStartMs": 2000,
                "dDurationMs": 2000,
                "wWinId": 1,
                "aAppend": 1,
                "segs": [{"utf8": "\n"}],
            },
            {
                "tStartMs": 2000,
                "dDurationMs": 4000,
                "wWinId": 1,
                "segs": [{"utf8": "decided"}, {"utf8": " where", "tOffsetMs": 300}],
            },
            {"tStartMs": 6000, "dDurationMs": 1500, "segs": [{"utf8": "Hi\nthere"}]},
        ],
    }
    cues = read_captions(json.dumps(data).encode(), "json3", automatic=True).cues
    assert spans(cues) == [
        (0.0, 2.0, "have you"),
        (2.0, 6.0, "decided where"),
        (6.0, 7.5, "Hi\nthere"),
    ]


# --- malformed ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "ext", "message"),
    [
        (b"", "vtt", r"empty \(0 bytes\)"),
        (b"1\n00:00:01,000 --> 00:00:02,000\nHi\n", "vtt", "not a WebVTT file"),
        (
            b"WEBVTT\n\n00:00:01.000 --> 00:00:0x.000\nOne\n\n"
            b"00:00:05.000 --> 00:00:02.000\nTwo\n\n00:00:06.000 --> 00:00:07.000\nThree\n",
            "vtt",
            "2 of 3 captions have unreadable or backwards timestamps",
        ),
        (
            b"1\n00:00:01,000 --> 00:00:0x,000\nOne\n\n2\n00:00:03,000 --> 00:00:04,000\nTwo\n",
            "srt",
            "1 of 2 captions have unreadable",
        ),
        (
            b"WEBVTT\n\n00:00:00.000 --> 00:00:09.000\nOne\n\n"
            b"00:00:01.000 --> 00:00:08.000\nTwo\n\n"
            b"00:00:02.000 --> 00:00:07.000\nThree\n\n"
            b"00:00:03.000 --> 00:00:06.000\nFour\n",
            "vtt",
            "3 of 4 captions overlap",
        ),
        (
            b"WEBVTT\n\n00:00:01.000 --> 00:00:02.000\n\n\n"
            b"00:00:03.000 --> 00:00:04.000\n<b></b>\n",
            "vtt",
            "no captions with text",
        ),
        (b"<tt><body><p begin='1s' end='2s'>Hi</p>", "ttml", "not valid TTML"),
        (
            b'<!DOCTYPE tt [<!ENTITY a "aaaa">]><tt><body><div><p begin="1s" end="2s">&a;</p>'
            b"</div></body></tt>",
            "ttml",
            "DOCTYPE",
        ),
        (b"<html><body>Hi</body></html>", "ttml", "not TTML"),
        (b'{"events": ', "json3", "not valid json3"),
        (b"WEBVTT\n", "vtt", "no captions with text"),
        (b"anything", "sbv", "sbv format cannot be read"),
    ],
    ids=[
        "zero-bytes",
        "srt-as-vtt",
        "bad-timestamps",
        "bad-srt-timestamps",
        "overlapping",
        "empty-cues",
        "broken-xml",
        "doctype",
        "not-ttml",
        "broken-json",
        "header-only",
        "unknown-format",
    ],
)
def test_malformed_tracks_are_refused_with_a_clear_message(raw, ext, message):
    with pytest.raises(SubtideError, match=message) as caught:
        read_captions(raw, ext)
    assert caught.value.code == "bad_input"


def test_a_few_broken_or_empty_cues_are_skipped_and_reported():
    good = "".join(f"00:00:{i:02d}.000 --> 00:00:{i:02d}.900\nLine {i}\n\n" for i in range(1, 20))
    vtt = (
        f"WEBVTT\n\n{good}00:00:30.000 --> 00:00:3.000\nBroken\n\n00:00:40.000 --> 00:00:41.000\n\n"
    )
    found = read_captions(vtt.encode(), "vtt")
    assert len(found.cues) == 19
    assert found.notes == [
        "Skipped 1 caption(s) with unreadable or backwards timestamps.",
        "Skipped 1 empty caption(s).",
    ]


# --- tracks ------------------------------------------------------------------------------------


def youtube_like_info() -> dict:
    def formats(key: str, name: str) -> list[dict]:
        return [
            {"ext": ext, "url": f"https://example.com/{key}.{ext}", "name": name}
            for ext in ("json3", "srv1", "ttml", "vtt")
        ]

    return {
        "language": "en",
        "subtitles": {
            "de": formats("de", "German"),
            "en-GB": formats("en-GB", "English (United Kingdom)"),
            "live_chat": [{"ext": "json", "url": "https://example.com/chat"}],
            "xx": [{"ext": "srv3", "url": "https://example.com/xx"}],
        },
        "automatic_captions": {
            "en-orig": formats("en-orig", "English (Original)"),
            "en": formats("en", "English"),
            "fr": formats("fr", "French"),
        },
    }


def test_tracks_are_listed_with_their_best_format():
    tracks = list_tracks(youtube_like_info())
    assert [t.info for t in tracks] == [
        CaptionTrack(id="manual:de", lang="de", name="German", ext="vtt"),
        CaptionTrack(id="manual:en-GB", lang="en-GB", name="English (United Kingdom)", ext="vtt"),
        CaptionTrack(
            id="auto:en-orig", lang="en", name="English (Original)", automatic=True, ext="vtt"
        ),
        CaptionTrack(id="auto:en", lang="en", name="English", automatic=True, ext="vtt"),
        CaptionTrack(id="auto:fr", lang="fr", name="French", automatic=True, ext="vtt"),
    ]
    assert tracks[0].url == "https://example.com/de.vtt"


def test_a_page_track_without_srclang_or_with_only_json3():
    info = {
        "subtitles": {
            None: [{"url": "https://example.com/a.srt", "ext": "srt"}],
            "Director's cut": [{"url": "https://example.com/b.json3", "ext": "json3"}],
        }
    }
    tracks = list_tracks(info)
    assert [(t.info.id, t.info.lang, t.info.name, t.info.ext) for t in tracks] == [
        ("manual:und", "und", "und", "srt"),
        ("manual:Director's cut", "und", "Director's cut", "json3"),
    ]


def track(track_id: str) -> Track:
    automatic, _, key = track_id.partition(":")
    lang = key.removesuffix("-orig")
    return Track(CaptionTrack(id=track_id, lang=lang, automatic=automatic == "auto", ext="vtt"))


@pytest.mark.parametrize(
    ("offered", "targets", "spoken", "whisper", "expected"),
    [
        # A manual track in the target language: nothing to translate.
        (["manual:en", "manual:de"], ["de"], None, True, "manual:de"),
        (["manual:en", "manual:de-DE"], ["de"], None, True, "manual:de-DE"),
        (["manual:de-AT", "manual:de"], ["de"], None, True, "manual:de"),
        # The first target that has a track.
        (["manual:fr", "manual:ja"], ["de", "ja", "fr"], None, True, "manual:ja"),
        # Another language, the spoken one first: translated.
        (["manual:fr", "manual:en"], ["de"], "en", True, "manual:en"),
        (["manual:fr", "manual:en"], ["de"], None, True, "manual:fr"),
        # No target: the spoken language when known, else any.
        (["manual:fr", "manual:en"], [], "en", True, "manual:en"),
        (["manual:fr"], [], "en", True, None),
        (["manual:fr", "manual:en"], [], None, True, "manual:fr"),
        # Automatic captions lose to Whisper...
        (["auto:en-orig", "auto:de"], ["de"], "en", True, None),
        # ...and when it is off, only the original-language one is taken, never a translation.
        (["auto:de", "auto:en-orig", "auto:en"], ["de"], "en", False, "auto:en-orig"),
        (["auto:de", "auto:en-orig"], ["de"], None, False, "auto:en-orig"),
        (["auto:de", "auto:en"], ["de"], "en", False, "auto:en"),
        (["auto:de", "auto:en"], ["de"], None, False, None),
        (["auto:fr"], ["de"], None, False, "auto:fr"),
        # A manual track still beats them all.
        (["auto:en-orig", "manual:fr"], ["de"], "en", False, "manual:fr"),
        ([], ["de"], "en", True, None),
    ],
)
def test_track_choice_order(offered, targets, spoken, whisper, expected):
    tracks = [track(t) for t in offered]
    chosen = choose(tracks, targets=targets, spoken=spoken, whisper_enabled=whisper)
    assert (chosen.info.id if chosen else None) == expected


# --- language ----------------------------------------------------------------------------------


def cues_of(text: str) -> list[Cue]:
    return [Cue(id=1, start=0, end=5, text=text)]


def test_the_detector_ships_its_model_and_knows_common_languages():
    assert detect_language(ENGLISH)[0] == "en"
    assert detect_language(GERMAN)[0] == "de"
    assert detect_language("Hallo") is None  # too little text to judge


@pytest.mark.parametrize(
    ("label", "text", "expected", "noted"),
    [
        ("en", ENGLISH, "en", False),
        ("en-US", ENGLISH, "en-US", False),
        ("en", GERMAN, "de", True),
        ("de", ENGLISH, "en", True),
        ("und", GERMAN, "de", True),
        ("de", "Ja.", "de", False),
        ("und", "Ja.", "und", False),
    ],
)
def test_a_mislabelled_track_is_relabelled(label, text, expected, noted):
    language, note = checked_language(label, cues_of(text))
    assert language == expected
    assert bool(note) == noted


def test_close_languages_are_never_relabelled():
    norwegian = (
        "Har du bestemt deg for hvor vi skal reise i sommer? Jeg tenkte på kysten, et rolig sted "
        "med en liten strand og et godt bakeri i nærheten."
    )
    assert checked_language("no", cues_of(norwegian)) == ("no", None)


# --- re-cueing ---------------------------------------------------------------------------------


def test_recue_follows_the_readability_rules_and_keeps_speakers():
    long = Cue(
        id=1,
        start=0.0,
        end=12.0,
        text="This caption is far too long for one subtitle. It holds two sentences and many "
        "words that no reader could follow in time.",
        speaker="Anna",
    )
    short = Cue(id=2, start=12.5, end=14.0, text="Yes.", speaker="Ben")
    style = Style()
    cues = recue([long, short], style, "en")
    assert len(cues) > 2
    assert [c.id for c in cues] == list(range(1, len(cues) + 1))
    assert {c.speaker for c in cues[:-1]} == {"Anna"} and cues[-1].speaker == "Ben"
    for cue in cues:
        assert all(len(line) <= style.max_chars_per_line for line in cue.text.split("\n"))
        assert cue.end - cue.start <= style.max_duration
    assert cues[0].start == 0.0 and cues[-1].end == 14.0
    assert all(a.end <= b.start for a, b in pairwise(cues))
    assert " ".join(" ".join(c.text.split()) for c in cues) == f"{long.text} Yes."
