"""The engine given bad or awkward inputs, as any front end passes them on: language codes it
must check before any work, sources that are no regular file, subtitle files with cues that
cannot be read, media cut short, tones and a model that cannot be had. Whatever matters reaches
the user as a notice; nothing is dropped unsaid."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from pathlib import Path

import pytest

from engine.pipeline import Engine
from engine.protocol import ErrorEvent, Event, JobSpec, ProgressEvent, ResultEvent, Source
from tests.support.http_server import serve_directory
from tests.support.timing import HANG_GUARD_S

BROKEN_SRT = (
    "1\n00:00:01,000 --> 00:00:02,000\none\n\n"
    "2\n00:00:0x,000 --> 00:00:03,000\ntwo\n\n"
    "3\n00:00:05,000 --> 00:00:04,000\nthree\n\n"
    "4\n00:00:06,000 --> 00:00:07,000\nfour\n"
)


def run(engine: Engine, path: Path, **job) -> list[Event]:
    return list(engine.run(JobSpec(source=Source(path=str(path)), **job)))


def error_of(events: list[Event]) -> ErrorEvent:
    assert isinstance(events[-1], ErrorEvent), events[-1]
    return events[-1]


def result_of(events: list[Event]) -> ResultEvent:
    assert isinstance(events[-1], ResultEvent), events[-1]
    return events[-1]


def notices(events: list[Event]) -> list[str]:
    return [e.message for e in events if isinstance(e, ProgressEvent) and e.notice]


def tone(folder: Path, seconds: float = 3.0) -> Path:
    path = folder / "tone.wav"
    command = ["sox", "-n", "-r", "16000", "-c", "1", str(path), "synth", str(seconds)]
    subprocess.run([*command, "sine", "440", "vol", "0.5"], check=True, capture_output=True)
    return path


def spoken(folder: Path, text: str, voice: str, start: float = 0.0, seconds: float = 0.0) -> Path:
    """espeak-ng saying `text`; with `seconds`, only that much of it from `start`."""
    whole = folder / "whole.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(whole), text], check=True)
    if not seconds:
        return whole
    path = folder / "cut.wav"
    subprocess.run(["sox", str(whole), str(path), "trim", str(start), str(seconds)], check=True)
    return path


# --- language codes --------------------------------------------------------------------------


def test_a_spoken_language_whisper_does_not_know_is_refused_before_any_work(engine, clips):
    events = run(engine, clips.short.wav, source_lang="xx")

    # The only event: no download, decode or model load came first.
    [error] = events
    assert isinstance(error, ErrorEvent) and error.code == "bad_input"
    assert "'xx'" in error.message
    assert "en, es, de, ja" in (error.hint or "") and "detect" in (error.hint or "")


def test_a_target_given_by_its_name_gets_its_code_suggested(engine, clips):
    for name in ("german", "Deutsch"):
        [error] = run(engine, clips.short.wav, target_langs=["de", name])
        assert isinstance(error, ErrorEvent) and error.code == "bad_input"
        assert f"'{name}'" in error.message
        assert "Did you mean de?" in (error.hint or "")


def test_a_subtitle_files_language_is_any_target_and_spelled_as_usual(engine, tmp_path):
    path = tmp_path / "talk.srt"
    path.write_text("1\n00:00:01,000 --> 00:00:02,000\nOlá\n")

    result = result_of(run(engine, path, source_lang="PT_br", formats=["srt"]))

    assert result.language == "pt-BR"


# --- sources that are no regular file --------------------------------------------------------


def test_a_folder_is_named_as_a_folder(engine, tmp_path):
    folder = tmp_path / "clips.mp4"
    folder.mkdir()

    error = error_of(run(engine, folder))

    assert error.code == "bad_input"
    assert error.message == "clips.mp4 is a folder, not a media file."


@pytest.mark.parametrize("name", ["stream.wav", "stream.srt"])
def test_a_named_pipe_is_refused_at_once(engine, tmp_path, name):
    pipe = tmp_path / name
    os.mkfifo(pipe)
    events: list[Event] = []
    job = threading.Thread(target=lambda: events.extend(run(engine, pipe)), daemon=True)
    job.start()
    job.join(HANG_GUARD_S)
    if job.is_alive():
        _let_go(pipe)
        pytest.fail(f"reading the named pipe {name} hung")

    error = error_of(events)
    assert error.code == "bad_input"
    assert error.message.startswith(f"{name} is a named pipe, not a ")


def _let_go(pipe: Path) -> None:
    """A writer that opens and closes at once: a reader stuck on the pipe sees its end."""
    with contextlib.suppress(OSError):  # no reader is waiting
        os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))


def test_a_downloaded_file_that_is_no_media_is_named_by_its_link(engine, tmp_path):
    (tmp_path / "readme.txt").write_text("Not media, just words.\n")
    with serve_directory(tmp_path) as base:
        events = list(engine.run(JobSpec(source=Source(url=f"{base}/readme.txt?key=s3cret"))))

    error = error_of(events)
    assert error.code == "bad_input"
    # Our temporary file (readme.unknown_video) means nothing to the user; a query string
    # may hold a key.
    assert error.message == (
        f"{base}/readme.txt is not an audio or video file ffmpeg can read (corrupt or unsupported)"
    )


# --- subtitle files with unreadable cues -----------------------------------------------------


def test_a_subtitle_file_with_unreadable_cues_is_refused_not_shrunk(engine, tmp_path):
    path = tmp_path / "bad_ts.srt"
    path.write_text(BROKEN_SRT)

    error = error_of(run(engine, path))

    assert error.code == "bad_input"
    assert error.message == (
        "2 of 4 cues in bad_ts.srt cannot be read: cue 2 (timing line unreadable), "
        "cue 3 (ends before it starts)."
    )
    assert error.hint == "Fix them, or pass --force to go on without them."


def test_skipping_unreadable_cues_says_which_were_left_out(engine, tmp_path):
    path = tmp_path / "bad_ts.srt"
    path.write_text(BROKEN_SRT)

    events = run(engine, path, skip_unreadable_cues=True, diarize="auto", formats=["srt"])

    result = result_of(events)
    assert [(c.id, c.start, c.end, c.text) for c in result.cues] == [
        (1, 1.0, 2.0, "one"),
        (2, 6.0, 7.0, "four"),
    ]
    assert notices(events) == [
        "Speaker labels need audio: skipped for a subtitle file.",
        "2 of 4 cues in bad_ts.srt cannot be read: cue 2 (timing line unreadable), "
        "cue 3 (ends before it starts); going on without them.",
    ]


def test_a_utf16_subtitle_file_is_translated_like_any_other(engine, tmp_path):
    path = tmp_path / "windows.srt"
    path.write_bytes("1\r\n00:00:01,000 --> 00:00:02,000\r\nÇa va ?\r\n".encode("utf-16"))

    result = result_of(run(engine, path, formats=["srt"]))

    assert [c.text for c in result.cues] == ["Ça va ?"]


# --- media: cut short, no speech, a model that cannot be had ---------------------------------


def test_a_file_cut_short_is_said(engine, clips, tmp_path):
    # With the index at the front (faststart), a cut file still states its full duration.
    whole = tmp_path / "whole.mp4"
    command = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(clips.short_mp4), "-c", "copy"]
    subprocess.run([*command, "-movflags", "+faststart", str(whole)], check=True)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])

    events = run(engine, cut, whisper_model="bundled:tiny.en", formats=["srt"])

    result_of(events)
    [said] = [n for n in notices(events) if "cut short" in n]
    assert said.startswith("Only ") and "s of cut.mp4 could be decoded" in said


def test_a_tone_gives_no_invented_words_and_says_no_speech_was_found(engine, tmp_path):
    events = run(engine, tone(tmp_path), formats=["srt"])

    result = result_of(events)
    assert result.cues == []
    assert result.files[0].content == ""  # the file is still written
    assert notices(events) == [
        "No speech was found in tone.wav (silence, music or noise?): "
        "the subtitle files are written, empty."
    ]


# Each a tenth of a second of a word, on which the bundled base model wrote "You" (or, on
# another CPU, "Thank you.") with a word probability of a few percent.
@pytest.mark.parametrize(
    ("text", "voice", "start"),
    [
        ("Okay.", "en", 0.0),
        ("Good evening.", "en+f3", 0.0),
        ("Thank you very much.", "en", 0.05),
        ("Hello there, this is a test.", "en", 0.0),
    ],
)
def test_a_tenth_of_a_second_of_a_word_gives_no_invented_words(
    engine, tmp_path, text, voice, start
):
    events = run(engine, spoken(tmp_path, text, voice, start, 0.1), formats=["srt"])

    assert result_of(events).cues == []
    assert [n for n in notices(events) if n.startswith("No speech was found in cut.wav")]


@pytest.mark.parametrize(("text", "voice"), [("Okay.", "en+m3"), ("Hello.", "en+f3")])
def test_a_short_real_word_is_still_transcribed(engine, tmp_path, text, voice):
    result = result_of(run(engine, spoken(tmp_path, text, voice), formats=["srt"]))

    assert [c.text.rstrip(".") for c in result.cues] == [text.rstrip(".")]


def test_a_model_that_cannot_be_had_is_replaced_and_that_is_said(engine, tmp_path):
    assert os.environ["HF_HUB_OFFLINE"] == "1"

    events = run(engine, tone(tmp_path), whisper_model="large-v3", formats=["srt"])

    result_of(events)
    [replaced] = [n for n in notices(events) if "large-v3" in n]
    assert "bundled model (bundled:base) instead" in replaced
    assert "Error" not in replaced  # no exception class names
