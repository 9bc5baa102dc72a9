"""The Gradio app through its API (gradio_client), on a real Engine with the bundled model."""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
import urllib.request
from pathlib import Path

import pysrt
import pytest
from gradio_client import Client, handle_file

from engine.edits import CueList
from engine.protocol import Cue, Style, SubtideError
from tests.support.browser import serve_app
from tests.support.http_server import serve_directory
from tests.support.openai_server import Reply, fake_translation, lines_of, serve_openai
from tests.support.video import subtitle_streams, track_cues
from ui.handlers import SCREEN
from ui.session import Workspace
from ui.table import KEPT, edits, table

MODEL = "bundled:tiny.en"
API_KEY = "sk-test-key-do-not-echo"
# What the API returns of the run's outputs: a gr.State stays on the server, and the Run
# button's state is the page's.
RETURNED = [name for name in SCREEN if name not in ("session", "run")]

# A real model behind the app.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def app_url(cache_root):
    from engine.pipeline import Engine, EngineOptions
    from ui.app import UiDefaults, build

    engine = Engine(
        EngineOptions(cache_dir=cache_root, whisper_model=MODEL, allow_private_urls=True)
    )
    blocks = build(
        lambda: engine, fetch_preview=fetch_preview, defaults=UiDefaults(whisper_model=MODEL)
    )
    with serve_app(blocks) as url:
        yield url


# A test closes it to hold the preview back until the subtitles are done.
PREVIEW_GATE = threading.Event()
PREVIEW_GATE.set()


def fetch_preview(url: str, folder: Path) -> Path | None:
    """Stands in for the app's preview fetcher: the link itself is a playable MP4 (a page has
    no preview, as when the real fetcher fails)."""
    if url.endswith(".html"):
        return None
    PREVIEW_GATE.wait(timeout=30)
    with urllib.request.urlopen(url) as response, (folder / "preview.mp4").open("wb") as out:
        shutil.copyfileobj(response, out)
    return folder / "preview.mp4"


@pytest.fixture
def client(app_url, tmp_path):
    # One client is one page session: the edit below works on the run before it.
    return Client(app_url, verbose=False, download_files=str(tmp_path))


# The page's form, as the page sends it to its own /run, which the API page does not list (so
# a client knows neither its names nor its defaults): every value, in order.
PAGE_FORM = {
    "url": "",
    "file": None,
    "targets": [],
    "caption_track": None,
    "source_lang": "",
    "whisper_model": "",
    "force_asr": False,
    "recue": False,
    "speakers": "off",
    "num_speakers": 0,
    "llm_url": "",
    "llm_model": "",
    "llm_key": "",
    "about": "",
    "glossary": "",
    "max_chars": 42,
    "max_lines": 2,
    "dual": False,
    "speaker_labels": True,
}


def run(client: Client, **form) -> dict:
    return _returned(submit(client, **form).result())


def submit(client: Client, **form):
    assert form.keys() <= PAGE_FORM.keys(), form.keys() - PAGE_FORM.keys()
    return client.submit(*{**PAGE_FORM, **form}.values(), api_name="/run")


def _returned(output: tuple) -> dict:
    return dict(zip(RETURNED, output, strict=True))


def _has_downloads(screen: dict) -> bool:
    # An output the update left alone comes back as {"__type__": "update"}.
    return isinstance(screen["downloads"], list) and bool(screen["downloads"])


def rows(screen: dict) -> list[list]:
    return screen["table"]["value"]["data"]


def download(screen: dict, name: str) -> Path:
    paths = {Path(path).name: Path(path) for path in screen["downloads"]}
    assert name in paths, sorted(paths)
    return paths[name]


def test_upload_streams_cues_into_the_table_and_exports_every_format(client, clips):
    screen = run(client, file=handle_file(clips.short_mp4))

    assert 'data-state="done"' in screen["progress"]
    table = rows(screen)
    assert len(table) >= len(clips.short.sentences)
    assert "cottage" in " ".join(row[4] for row in table).lower()
    names = sorted(Path(path).name for path in screen["downloads"])
    assert names == sorted(f"short_en.{ext}" for ext in ("srt", "vtt", "ass", "txt", "json"))
    subs = pysrt.open(str(download(screen, "short_en.srt")))
    assert len(subs) == len(table)
    assert [sub.text.replace("\n", " ") for sub in subs] == [row[4] for row in table]
    # The preview carries its subtitles as a track of our own VTT.
    assert Path(screen["video"]["subtitles"]).read_text().startswith("WEBVTT")


def test_every_edit_reaches_the_downloads_and_undo_takes_it_back(client, clips):
    screen = run(client, file=handle_file(clips.short_mp4))
    table = screen["table"]["value"]
    before = pysrt.open(str(download(screen, "short_en.srt")))
    table["data"][0][4] = "An edited first line."
    table["data"][0][2] = "0:02.000"

    _, video, downloads, *_ = client.predict(table, "source", False, api_name="/edit")

    edited = srt_of(downloads)
    assert edited[0].text == "An edited first line."
    assert (edited[0].start.ordinal, edited[0].end.ordinal) == (before[0].start.ordinal, 2000)
    assert "An edited first line." in Path(video["subtitles"]).read_text()

    merged = srt_of(operate(client, "merge", cue=1)[2])
    assert len(merged) == len(before) - 1
    assert merged[0].text.replace("\n", " ").startswith("An edited first line. ")
    split = srt_of(operate(client, "split", cue=1, playhead=before[1].start.ordinal / 1000)[2])
    assert len(split) == len(before)
    assert srt_of(operate(client, "undo")[2]) == merged
    assert srt_of(operate(client, "undo")[2]) == edited
    assert srt_of(operate(client, "redo")[2]) == merged
    shifted = srt_of(operate(client, "shift_all", shift_ms=-100)[2])
    moved = [s.start.ordinal - m.start.ordinal for s, m in zip(shifted, merged, strict=True)]
    assert moved == [-100] * len(merged)


def test_a_refused_edit_leaves_the_cues_as_they_were(client, clips):
    screen = run(client, file=handle_file(clips.short_mp4))
    before = pysrt.open(str(download(screen, "short_en.srt")))

    # The page shows why (a notice); the cue list stays as it was.
    _, _, downloads, *_ = operate(client, "set_end", cue=1, playhead=30.0)
    assert srt_of(downloads) == before
    table = screen["table"]["value"]
    rows = [row for row in table["data"] if row[0] != 2]  # the row menu's "Delete row"
    _, _, downloads, *_ = client.predict({**table, "data": rows}, "source", False, api_name="/edit")
    assert [s.text for s in srt_of(downloads)] == [s.text for k, s in enumerate(before) if k != 1]


def test_a_column_added_or_deleted_is_refused_and_nothing_is_read(client, clips):
    screen = run(client, file=handle_file(clips.short_mp4))
    before = pysrt.open(str(download(screen, "short_en.srt")))
    table = screen["table"]["value"]
    # "Delete column" on the start column: every cell after it one to the left.
    shifted = [[row[0], *row[2:]] for row in table["data"]]
    headers = [table["headers"][0], *table["headers"][2:]]

    changed = {"headers": headers, "data": shifted}
    edited = client.predict(changed, "source", False, api_name="/edit")

    assert srt_of(edited[2]) == before
    assert edited[0]["value"]["headers"] == table["headers"]  # drawn again whole


def test_clearing_a_text_deletes_its_cue_once_confirmed(client, clips):
    screen = run(client, file=handle_file(clips.short_mp4))
    before = pysrt.open(str(download(screen, "short_en.srt")))
    table = screen["table"]["value"]
    table["data"][1][4] = ""

    # Not confirmed (the page asks first): refused, nothing lost.
    _, _, downloads, *_ = client.predict(table, "source", False, api_name="/edit")
    assert srt_of(downloads) == before
    _, _, downloads, *_ = client.predict(table, "source", True, api_name="/edit")
    assert [s.text for s in srt_of(downloads)] == [s.text for k, s in enumerate(before) if k != 1]
    assert srt_of(operate(client, "undo")[2]) == before


def test_speaker_labels_follow_the_switch_after_the_run(client, clips):
    screen = run(client, file=handle_file(clips.short_mp4), speakers="builtin", num_speakers=2)
    labelled = pysrt.open(str(download(screen, "short_en.srt")))
    speakers = {row[3] for row in rows(screen)}
    assert len(speakers) == 2
    assert all(sub.text.startswith("[") for sub in labelled), labelled.text

    _, _, downloads, *_ = client.predict(False, "source", api_name="/relabel")
    plain = srt_of(downloads)
    assert [s.text.replace("\n", " ") for s in plain] == [row[4] for row in rows(screen)]
    _, _, downloads, *_ = client.predict(True, "source", api_name="/relabel")
    assert srt_of(downloads) == labelled


def test_the_video_with_its_subtitles_holds_the_edited_cues(client, clips):
    screen = run(client, file=handle_file(clips.short_mp4))
    table = screen["table"]["value"]
    table["data"][0][4] = "An edited first line."
    client.predict(table, "source", False, api_name="/edit")

    status, files = client.predict("video_soft", "source", api_name="/make_video")

    assert 'data-state="done"' in status
    video = next(Path(path) for path in files if path.endswith(".subtitled.mkv"))
    (track,) = subtitle_streams(video)
    assert track["tags"]["language"] == "eng"
    cues = track_cues(video, 0)
    assert re.sub(r"<[^>]*>", "", cues[0].text) == "An edited first line."  # ASS styling off
    assert len(cues) == len(rows(screen))


def test_a_video_for_an_audio_job_is_refused_with_advice(client, clips):
    run(client, file=handle_file(clips.short.wav))
    status, files = client.predict("video_burn", "source", api_name="/make_video")
    assert "has no video" in status
    assert files is None or not any(path.endswith(".mp4") for path in files)


def operate(client: Client, operation: str, cue: int = 0, playhead=None, shift_ms=0) -> tuple:
    """One of the editor's buttons, as the page presses it (it reads the playhead itself)."""
    return client.predict(
        cue, playhead, shift_ms, None, "", "", "", "source", api_name=f"/edit_{operation}"
    )


def srt_of(downloads: list[str]) -> pysrt.SubRipFile:
    return pysrt.open(next(path for path in downloads if path.endswith(".srt")))


def test_a_bad_url_shows_the_engines_message(client):
    screen = run(client, url="ftp://x/y.mp4")

    assert "Only http and https links" in screen["error"]["value"]
    assert 'data-state="failed"' in screen["progress"]


def test_nothing_to_run_says_so(client):
    screen = run(client)

    assert "Nothing to subtitle yet" in screen["error"]["value"]


def test_translation_fills_a_column_and_the_key_is_never_echoed(client, clips):
    with serve_openai(api_key=API_KEY) as llm:
        screen = run(
            client,
            file=handle_file(clips.short_mp4),
            targets=["de"],
            llm_url=llm.url + "/v1",
            llm_model="gpt-4o-mini",
            llm_key=API_KEY,
        )
        assert llm.translations_requested(), "the LLM was never asked"

    assert screen["table"]["value"]["headers"][-1] == "German (de)"
    for row in rows(screen):
        assert row[5] == " ".join(fake_translation(row[4], "German").split())
    german = pysrt.open(str(download(screen, "short_en.de.srt")))
    assert all(sub.text.startswith("[ge]") for sub in german)
    assert API_KEY not in json.dumps(screen)


def test_a_subtitle_file_is_translated_without_a_preview(client, tmp_path):
    srt = tmp_path / "talk.srt"
    srt.write_text("1\n00:00:01,000 --> 00:00:02,500\nHello there.\n\n", encoding="utf-8")

    screen = run(client, file=handle_file(srt))

    assert [row[4] for row in rows(screen)] == ["Hello there."]
    assert screen["video"]["visible"] is False
    assert pysrt.open(str(download(screen, "talk.srt")))[0].text == "Hello there."


def test_a_link_plays_the_fetched_preview_with_its_subtitles(client, clips):
    with serve_directory(clips.short_mp4.parent) as site:
        screen = run(client, url=f"{site}/{clips.short_mp4.name}")

    assert rows(screen)
    assert screen["video"]["visible"] is True
    assert Path(screen["video"]["value"]).read_bytes() == clips.short_mp4.read_bytes()
    assert Path(screen["video"]["subtitles"]).read_text().startswith("WEBVTT")


def test_downloads_come_before_a_slow_preview(client, clips):
    PREVIEW_GATE.clear()
    try:
        with serve_directory(clips.short_mp4.parent) as site:
            job = submit(client, url=f"{site}/{clips.short_mp4.name}")
            deadline = time.monotonic() + 60
            while not any(_has_downloads(_returned(output)) for output in job.outputs()):
                assert time.monotonic() < deadline and not job.done(), "no downloads yet"
                time.sleep(0.1)
            PREVIEW_GATE.set()
            job.result()
    finally:
        PREVIEW_GATE.set()

    screens = [_returned(output) for output in job.outputs()]
    waiting = next(screen for screen in screens if _has_downloads(screen))
    assert "Loading the preview" in waiting["progress"]
    assert waiting["table"]["interactive"] is False  # an edit now would be lost
    assert screens[-1]["video"]["visible"] is True
    assert screens[-1]["table"]["interactive"] is True


def test_audio_gets_an_audio_player_and_no_video(client, clips):
    job = submit(client, file=handle_file(clips.short.wav))
    job.result()
    # The player is set once, as the job starts; later updates leave it playing.
    first, *_, last = (_returned(output) for output in job.outputs())

    assert first["audio"]["visible"] is True
    assert Path(first["audio"]["value"]).read_bytes() == clips.short.wav.read_bytes()
    assert rows(last)
    assert last["video"]["visible"] is False


def applied(cues: list[Cue], rows: list[list], style: Style | None = None) -> list[Cue]:
    """The cues after the table's edits, as the page applies them."""
    edited = CueList(tuple(cues), style or Style(), "en")
    for change in edits(cues, rows, ["de"]):
        edited = edited.apply(change)
    return list(edited.cues)


def test_edits_are_rewrapped_and_matched_by_id():
    cues = [
        Cue(id=1, start=0, end=2, text="Hello.", translations={"de": "Hallo."}, untranslated=[]),
        Cue(
            id=2,
            start=2.5,
            end=4,
            text="Two\nlines",
            translations={"de": "Two lines"},
            untranslated=["de"],
        ),
    ]
    rows = [
        # Row 2 first, a row that is no cue's, row 1 as it was: only cue 2 changes.
        [2, "0:02.500", "0:04.000", "", "Two lines", "Zwei Zeilen, die nicht in eine passen"],
        [99, "", "", "", "stray", ""],
        table(cues, ["de"])["data"][0],
    ]

    edited = applied(cues, rows, Style(max_chars_per_line=20))

    assert edited[0] == cues[0]
    assert applied(cues, rows[:2])[0].id == 2  # a row taken out is its cue deleted
    assert edited[1].text == "Two\nlines"  # unchanged apart from its line break: kept as is
    assert edited[1].translations["de"] == "Zwei Zeilen, die\nnicht in eine passen"
    assert edited[1].untranslated == []
    assert (edited[1].start, edited[1].end) == (2.5, 4)


def test_a_time_cell_moves_its_cue_and_a_bad_one_is_refused_with_advice():
    cues = [Cue(id=1, start=0, end=2, text="Hello."), Cue(id=2, start=3, end=4, text="Bye.")]
    [first, second] = table(cues, ["de"])["data"]

    moved = applied(cues, [[*first[:2], "0:02.500", *first[3:]], second])
    assert (moved[0].start, moved[0].end) == (0, 2.5)
    with pytest.raises(SubtideError, match="would overlap cue 2") as refused:
        applied(cues, [[*first[:2], "0:03.500", *first[3:]], second])
    assert "End it at 0:02.917 or earlier" in refused.value.hint
    with pytest.raises(SubtideError, match="'soon' is not a time"):
        applied(cues, [[*first[:2], "soon", *first[3:]], second])


def test_lines_kept_in_english_are_a_warning_and_marked_rows(client, tmp_path):
    srt = tmp_path / "talk.srt"
    srt.write_text(
        "1\n00:00:01,000 --> 00:00:02,500\nHello there.\n\n"
        "2\n00:00:03,000 --> 00:00:04,500\nGood bye.\n",
        encoding="utf-8",
    )
    with serve_openai() as llm:
        # Every batch that holds cue 2 breaks the rules: that line is kept in English.
        llm.when(lambda body: "2" in (lines_of(body) or {}), Reply("invalid_json"))
        screen = run(
            client,
            file=handle_file(srt),
            targets=["de"],
            source_lang="en",
            llm_url=llm.url + "/v1",
            llm_model="gpt-4o-mini",
        )

    assert 'data-state="warning"' in screen["error"]["value"] and screen["error"]["visible"]
    assert "1 of 2 lines translated into German; 1 kept in English" in screen["error"]["value"]
    assert [row[5] for row in rows(screen)] == [
        fake_translation("Hello there.", "German"),
        KEPT,
    ]
    document = json.loads(download(screen, "talk.json").read_text())
    assert document["untranslated"] == {"de": [2]}


def test_the_kept_marker_is_not_taken_for_an_edit():
    cue = Cue(id=1, start=0, end=2, text="Hello.", untranslated=["de"])
    [row] = table([cue], ["de"])["data"]
    assert row[5] == KEPT

    assert edits([cue], [row], ["de"]) == []
    [edited] = applied([cue], [[*row[:5], "Hallo."]])
    assert edited.translations == {"de": "Hallo."} and edited.untranslated == []


def test_a_refused_key_shows_the_advice_and_not_the_key(client, clips):
    with serve_openai(api_key=API_KEY) as llm:
        screen = run(
            client,
            file=handle_file(clips.short_mp4),
            targets=["de"],
            llm_url=llm.url + "/v1",
            llm_model="gpt-4o-mini",
            llm_key="sk-wrong-key",
        )

    assert "refused the API key" in screen["error"]["value"]
    assert "sk-wrong-key" not in json.dumps(screen)


def test_captions_are_used_and_another_source_can_be_picked(client, clips, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(clips.short_mp4, site / "clip.mp4")
    cues = [f"{i}\n00:00:0{i},000 --> 00:00:0{i},900\nLine {i} by a person.\n" for i in (1, 3)]
    (site / "en.srt").write_text("\n".join(cues))
    (site / "page.html").write_text(
        '<html><head><title>Trip</title></head><body><video src="clip.mp4">'
        '<track kind="subtitles" src="en.srt" srclang="en" label="English"></video></body></html>'
    )
    with serve_directory(site) as base:
        screen = run(client, url=f"{base}/page.html")
        assert "text from the video&#x27;s captions" in screen["progress"]
        assert [row[4] for row in rows(screen)] == ["Line 1 by a person.", "Line 3 by a person."]
        picker = screen["caption_track"]
        assert picker["visible"] and picker["value"] == "manual:en"
        labels = [label for label, _ in picker["choices"]]
        assert labels == ["Transcribe the audio (Whisper)", "English captions (by people)"]

        again = run(client, url=f"{base}/page.html", caption_track="asr")
        assert "transcribed" in again["progress"]
        assert "cottage" in " ".join(row[4] for row in rows(again)).lower()
        forced = run(client, url=f"{base}/page.html", force_asr=True)
        assert "transcribed" in forced["progress"]
        assert forced["caption_track"]["value"] == "asr"


def test_cancel_counts_when_the_pages_handler_was_closed_first(clips, cache_root):
    """A Cancel click both closes the run's handler (Gradio's `cancels`) and calls the cancel
    handler, in either order; the page must show "Cancelled" either way."""
    from engine.pipeline import Engine, EngineOptions
    from engine.protocol import JobSpec, Source
    from ui.jobs import JobRunner

    engine = Engine(EngineOptions(cache_dir=cache_root, whisper_model=MODEL, use_cache=False))
    job = JobSpec(source=Source(path=str(clips.dialogue.wav)))
    runner = JobRunner()
    events = runner.run(engine, job, owner="page", heartbeat=0.1)
    next(events)  # the job is running
    events.close()  # the handler closed first
    assert runner.cancel("page")
    assert not runner.cancel("another page")
    # The next job waits for the stopped one, then runs to its end; a cancel then finds none.
    assert list(runner.run(engine, job, owner="page", heartbeat=0.1))[-1].type == "result"
    assert not runner.cancel("page")


def test_the_readme_script_example_runs_as_written(app_url, clips, tmp_path, monkeypatch):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    example = readme.split("### From a script", 1)[1].split("```python\n", 1)[1].split("```")[0]
    assert len(example.strip().splitlines()) <= 5, example
    shutil.copy(clips.short.wav, tmp_path / "talk.mp4")  # ffmpeg reads it by its content
    monkeypatch.chdir(tmp_path)
    printed: list[str] = []
    namespace = {"print": lambda *args: printed.append(" ".join(map(str, args)))}
    exec(example.replace("http://127.0.0.1:7860/", app_url), namespace)

    files, cues = namespace["files"], namespace["cues"]
    assert printed and printed[0].startswith(f"{len(cues)} cues: Have you decided")
    names = sorted(Path(f).name for f in files)
    assert names == [f"talk.{ext}" for ext in ("ass", "json", "srt", "txt", "vtt")]
    srt = pysrt.open(next(f for f in files if f.endswith(".srt")))
    assert [item.text.replace("\n", " ") for item in srt] == [
        cue["text"].replace("\n", " ") for cue in cues
    ]


def test_the_script_api_names_its_parts_hides_the_pages_and_raises(app_url):
    client = Client(app_url, verbose=False)
    api = client.view_api(print_info=False, return_format="dict")
    assert list(api["named_endpoints"]) == ["/transcribe"]
    assert not api["unnamed_endpoints"]
    transcribe = api["named_endpoints"]["/transcribe"]
    assert all(p["parameter_has_default"] for p in transcribe["parameters"])
    assert [r["label"] for r in transcribe["returns"]] == ["Subtitle files", "Cues"]
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="Nothing to subtitle yet"):
        client.predict(api_name="/transcribe")
    with pytest.raises(AppError, match="ftp"):
        client.predict(url="ftp://example.com/x.mp4", api_name="/transcribe")


def test_job_folders_no_session_holds_go_once_they_are_old(tmp_path):
    workspace = Workspace(max_age_s=3600)
    old, recent = workspace.new_job(), workspace.new_job()
    (old / "talk.srt").write_text("1\n")
    a_day_ago = time.time() - 86400
    os.utime(old, (a_day_ago, a_day_ago))

    new = workspace.new_job()

    assert not old.exists()
    assert recent.is_dir() and new.is_dir()
