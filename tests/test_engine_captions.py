"""The pipeline takes a video's own captions: pages with <video> and <track> served on 127.0.0.1,
read by yt-dlp's html5 extractor; the LLM is the fake OpenAI server in tests/support."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.cues import wrap_text
from engine.pipeline import Engine, EngineOptions
from engine.protocol import (
    CaptionTrack,
    ErrorEvent,
    Event,
    JobSpec,
    ProgressEvent,
    ResultEvent,
    Source,
    Style,
    TranslationConfig,
)
from tests.support.http_server import serve_directory
from tests.support.openai_server import FakeOpenAI, fake_translation, serve_openai

pytestmark = pytest.mark.slow
SPEAKERS = {"en+m3": "Tom", "en+f3": "Anna"}
# The short clip's three sentences in German, for the German track.
GERMAN = [
    "Hast du schon entschieden, wohin wir diesen Sommer fahren?",
    "Ein Ferienhaus, denke ich. Dann können wir selbst kochen und lange schlafen.",
    "Das klingt schön, aber die Fahrt ist sehr lang.",
]
MALFORMED = {
    "bad-timestamps": "WEBVTT\n\n00:00:01.000 --> 00:00:0x.000\nOne\n\n"
    "00:00:05.000 --> 00:00:02.000\nTwo\n",
    "overlapping": "WEBVTT\n\n00:00:00.000 --> 00:00:09.000\nOne\n\n"
    "00:00:01.000 --> 00:00:08.000\nTwo\n\n00:00:02.000 --> 00:00:07.000\nThree\n",
    "empty-cues": "WEBVTT\n\n00:00:01.000 --> 00:00:02.000\n<i></i>\n\n"
    "00:00:03.000 --> 00:00:04.000\n&#32;\n",
    "zero-bytes": "",
}
REASONS = {
    "bad-timestamps": "unreadable or backwards timestamps",
    "overlapping": "overlap the one before",
    "empty-cues": "no captions with text",
    "zero-bytes": "empty (0 bytes)",
    "missing": "HTTP 404",
}


@dataclass(frozen=True)
class Site:
    url: str
    llm: FakeOpenAI
    # (start, end) of each sentence of the clip, as written in every good track.
    times: list[tuple[float, float]]
    english: list[str]


@pytest.fixture(scope="module")
def site(clips, tmp_path_factory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("site")
    shutil.copy(clips.short_mp4, root / "clip.mp4")
    sentences = clips.short.sentences
    times = [(round(s.start, 3), round(s.end, 3)) for s in sentences]
    english = [s.text for s in sentences]
    vtt = ["WEBVTT", ""]
    for (start, end), sentence in zip(times, sentences, strict=True):
        vtt += [f"{_vtt(start)} --> {_vtt(end)} line:90%", f"<v {SPEAKERS[sentence.voice]}>"]
        vtt[-1] += f"<i>{sentence.text}</i>"
        vtt.append("")
    (root / "en.vtt").write_text("\n".join(vtt))
    srt = [
        f"{i}\n{_srt(s)} --> {_srt(e)}\n{text}\n"
        for i, ((s, e), text) in enumerate(zip(times, GERMAN, strict=True), start=1)
    ]
    (root / "de.srt").write_text("\n".join(srt))
    _page(root, "index", [("en.vtt", "en", "English"), ("de.srt", "de", "Deutsch")])
    _page(root, "english", [("en.vtt", "en", "English")])
    _page(root, "mislabelled", [("en.vtt", "de", "Deutsch")])
    for name, text in MALFORMED.items():
        (root / f"{name}.vtt").write_text(text)
        _page(root, name, [(f"{name}.vtt", "en", "English")])
    _page(root, "missing", [("nowhere.vtt", "en", "English")])
    with serve_directory(root) as base, serve_openai() as llm:
        yield Site(base, llm, times, english)


def _page(root: Path, name: str, tracks: list[tuple[str, str, str]]) -> None:
    elements = "".join(
        f'<track kind="subtitles" src="{src}" srclang="{lang}" label="{label}">'
        for src, lang, label in tracks
    )
    video = f'<video controls src="clip.mp4">{elements}</video>'
    html = f"<html><head><title>Trip</title></head><body>{video}</body></html>"
    (root / f"{name}.html").write_text(html)


def _vtt(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"00:{ms // 60000:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def _srt(seconds: float) -> str:
    return _vtt(seconds).replace(".", ",")


def new_engine(site: Site, cache: Path, **options) -> Engine:
    return Engine(
        EngineOptions(
            whisper_model="bundled:tiny.en",
            cache_dir=cache,
            allow_private_urls=True,
            llm=TranslationConfig(base_url=f"{site.llm.url}/v1", model="test-model"),
            **options,
        )
    )


def run(engine: Engine, site: Site, page: str, **fields) -> list[Event]:
    spec = JobSpec(source=Source(url=f"{site.url}/{page}.html"), formats=["json"], **fields)
    return list(engine.run(spec))


def result_of(events: list[Event]) -> ResultEvent:
    assert isinstance(events[-1], ResultEvent), events[-1]
    return events[-1]


def messages(events: list[Event]) -> list[str]:
    return [e.message for e in events if isinstance(e, ProgressEvent)]


def notices(events: list[Event]) -> list[str]:
    """The messages a front end must show whatever its display."""
    return [e.message for e in events if isinstance(e, ProgressEvent) and e.notice]


def transcribed(events: list[Event]) -> bool:
    return any(isinstance(e, ProgressEvent) and e.stage == "transcribe" for e in events)


def spans(result: ResultEvent) -> list[tuple[float, float]]:
    return [(c.start, c.end) for c in result.cues]


def german(text: str) -> str:
    return wrap_text(fake_translation(text.replace("\n", " "), "German"), Style(), "de")


# --- captions instead of transcription -----------------------------------------------------


def test_the_track_in_each_target_language_is_used_and_no_model_loads(site, tmp_path):
    engine = new_engine(site, tmp_path)
    site.llm.reset()
    to_german = run(engine, site, "index", target_langs=["de"])
    to_english = run(engine, site, "index", target_langs=["en"])

    german_result, english_result = result_of(to_german), result_of(to_english)
    assert engine.loaded_model is None
    assert not transcribed(to_german) and not transcribed(to_english)
    assert site.llm.translations_requested() == []  # each track was already in its target

    assert german_result.source == english_result.source == "captions-manual"
    assert (german_result.caption_track, german_result.language) == ("manual:de", "de")
    assert [c.text for c in german_result.cues] == GERMAN
    assert "Using the video's German captions" in notices(to_german)
    assert spans(german_result) == pytest.approx(site.times, abs=1e-3)

    assert (english_result.caption_track, english_result.language) == ("manual:en", "en")
    assert [c.text for c in english_result.cues] == site.english
    assert [c.speaker for c in english_result.cues] == ["Tom", "Anna", "Tom"]
    assert spans(english_result) == pytest.approx(site.times, abs=1e-3)

    assert english_result.caption_tracks == [
        CaptionTrack(id="manual:en", lang="en", name="English", ext="vtt"),
        CaptionTrack(id="manual:de", lang="de", name="German", ext="srt"),
    ]
    assert english_result.duration == pytest.approx(site.times[-1][1], abs=1e-3)
    assert '"source": "captions-manual"' in english_result.files[0].content
    assert not any("Downloading" in m for m in messages(to_english))  # no media fetched


def test_a_track_in_the_target_language_needs_no_llm(site, tmp_path):
    engine = Engine(EngineOptions(cache_dir=tmp_path, allow_private_urls=True))
    result = result_of(run(engine, site, "index", target_langs=["de"]))
    assert (result.caption_track, result.language) == ("manual:de", "de")
    assert [c.text for c in result.cues] == GERMAN
    assert result.targets == {} and [f.format for f in result.files] == ["json"]


def test_a_track_the_user_picks_and_recueing(site, tmp_path):
    engine = new_engine(site, tmp_path)
    picked = result_of(run(engine, site, "index", caption_track="manual:de"))
    assert picked.caption_track == "manual:de" and picked.language == "de"

    unknown = run(engine, site, "index", caption_track="manual:xx")
    assert any("no caption track 'manual:xx'" in m for m in notices(unknown))
    assert result_of(unknown).caption_track == "manual:en"

    recued = result_of(run(engine, site, "english", recue_captions=True))
    # The middle caption holds two sentences: the readability rules give each its own cue.
    assert len(recued.cues) == 4
    assert [c.speaker for c in recued.cues] == ["Tom", "Anna", "Anna", "Tom"]
    assert recued.cues[0].start == pytest.approx(site.times[0][0], abs=1e-3)
    assert engine.loaded_model is None


def test_a_track_in_another_language_is_translated(site, tmp_path):
    engine = new_engine(site, tmp_path)
    result = result_of(run(engine, site, "english", target_langs=["de"]))
    assert (result.source, result.caption_track, result.language) == (
        "captions-manual",
        "manual:en",
        "en",
    )
    assert [c.translations["de"] for c in result.cues] == [german(t) for t in site.english]
    assert spans(result) == pytest.approx(site.times, abs=1e-3)
    assert engine.loaded_model is None


def test_a_mislabelled_track_is_translated_from_its_real_language(site, tmp_path):
    engine = new_engine(site, tmp_path)
    events = run(engine, site, "mislabelled", target_langs=["de"])
    result = result_of(events)
    assert result.language == "en"
    assert any("labelled German but are in English" in m for m in messages(events))
    assert [c.translations["de"] for c in result.cues] == [german(t) for t in site.english]


# --- transcription instead of captions -----------------------------------------------------


@pytest.fixture(scope="module")
def asr_engine(site, tmp_path_factory) -> Engine:
    """Caches transcripts: every page shows the same video, so only the first run transcribes."""
    return new_engine(site, tmp_path_factory.mktemp("asr-cache"), use_cache=True)


def test_force_asr_transcribes_although_captions_exist(site, asr_engine):
    events = run(asr_engine, site, "english", target_langs=["de"], force_asr=True)
    result = result_of(events)
    assert result.source == "asr" and result.caption_track is None
    assert transcribed(events)
    assert "summer" in " ".join(c.text for c in result.cues).lower()
    assert all(c.translations["de"] == german(c.text) for c in result.cues)
    # The tracks are still listed, so the app can offer them.
    assert [t.id for t in result.caption_tracks] == ["manual:en"]
    picked = result_of(run(asr_engine, site, "index", caption_track="asr"))
    assert picked.source == "asr"


@pytest.mark.parametrize("page", [*MALFORMED, "missing"])
def test_a_malformed_track_is_reported_and_the_video_transcribed(site, asr_engine, page):
    events = run(asr_engine, site, page)
    result = result_of(events)
    warning = next(m for m in notices(events) if "can't be used" in m)
    assert REASONS[page] in warning and "Transcribing instead" in warning
    assert result.source == "asr" and result.caption_track is None
    assert "summer" in " ".join(c.text for c in result.cues).lower()


# --- Whisper turned off --------------------------------------------------------------------


def test_without_whisper_captions_still_work_and_nothing_else_is_tried(site, tmp_path, clips):
    engine = new_engine(site, tmp_path, whisper_enabled=False)
    engine.warm()  # loads nothing
    assert result_of(run(engine, site, "index")).source == "captions-manual"
    for events in (
        run(engine, site, "zero-bytes"),
        run(engine, site, "index", force_asr=True),
        list(engine.run(JobSpec(source=Source(path=str(clips.short.wav))))),
    ):
        assert isinstance(events[-1], ErrorEvent), events[-1]
        assert events[-1].code == "model_unavailable"
        assert "ENABLE_WHISPER" in (events[-1].hint or "")
    assert engine.loaded_model is None
