"""`subtide run` and `subtide translate` given bad or awkward inputs, as a new user gives them: a
real process each time, and a real socket where a server hangs. Nothing a user gave is written
over, every problem is one line that names the option, every wait ends, and a signal stops the
run at once without leaving a temporary file behind."""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from tests.support.cli import start_subtide, subtide
from tests.support.http_server import serve, serve_directory
from tests.support.timing import HANG_GUARD_S, JOB_HANG_GUARD_S

TALK_SRT = (
    "1\n00:00:01,000 --> 00:00:02,000\nHello there.\n\n2\n00:00:03,000 --> 00:00:04,500\nBye.\n"
)


@contextmanager
def silent_server() -> Iterator[tuple[str, socket.socket]]:
    """An address that accepts connections and never answers: the kernel completes the handshake
    for the listen backlog, so a client waits for a reply that never comes. A test may accept a
    connection to learn that the client got there."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as listener:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", listener


def wait_for_client(listener: socket.socket) -> socket.socket:
    """The next connection to `listener`; kept open by the caller, so the client keeps waiting."""
    listener.settimeout(HANG_GUARD_S)  # hang guard: the client connects within a second or two
    connection, _ = listener.accept()
    return connection


def stderr_line_with(process: subprocess.Popen, text: str) -> str:
    """The first line of the process's stderr that holds `text`, read as it comes."""
    seen = []
    while True:
        # Hang guard: the line is due within seconds.
        ready, _, _ = select.select([process.stderr], [], [], HANG_GUARD_S)
        line = process.stderr.readline() if ready else ""
        if not line:
            raise AssertionError(f"no line with {text!r} on stderr; saw {seen}")
        if text in line:
            return line
        seen.append(line)


def leftovers(*folders: Path) -> list[str]:
    return [str(p) for folder in folders if folder.exists() for p in folder.rglob("*")]


# --- nothing a user gave is written over -------------------------------------------------------


def test_run_writes_beside_a_subtitle_file_it_would_overwrite(cache_root, tmp_path):
    talk = tmp_path / "talk.srt"
    talk.write_text(TALK_SRT)
    done = subtide(
        "run", str(talk), "-o", str(tmp_path), cache=cache_root, timeout=JOB_HANG_GUARD_S
    )
    assert done.returncode == 0, done.stderr
    assert talk.read_text() == TALK_SRT, "the source is untouched"
    assert done.stdout.split() == [str(tmp_path / "talk-2.srt")]
    summary, clash = done.stderr.splitlines()
    assert summary.startswith(f"subtide: {talk}: ") and "text from" in summary
    assert clash == (
        f"subtide: {talk}: {talk} is the source itself; writing {tmp_path / 'talk-2.srt'} instead"
    )
    assert "Bye." in (tmp_path / "talk-2.srt").read_text()


@pytest.mark.slow
def test_run_never_replaces_audio_named_like_its_transcript(clips, cache_root, tmp_path):
    audio = tmp_path / "speech_as.txt"
    shutil.copy(clips.short.wav, audio)
    done = subtide(
        "run",
        str(audio),
        "-f",
        "txt",
        "-m",
        "bundled:tiny.en",
        "-o",
        str(tmp_path),
        cache=cache_root,
        timeout=JOB_HANG_GUARD_S,
    )
    assert done.returncode == 0, done.stderr
    assert audio.read_bytes() == clips.short.wav.read_bytes()
    assert done.stdout.split() == [str(tmp_path / "speech_as-2.txt")]
    assert "is the source itself" in done.stderr
    assert "summer" in (tmp_path / "speech_as-2.txt").read_text()


def test_two_sources_with_one_name_get_two_files_and_a_rerun_replaces_them(cache_root, tmp_path):
    first, second = tmp_path / "in" / "real.srt", tmp_path / "in" / "dup" / "real.srt"
    second.parent.mkdir(parents=True)
    first.write_text(TALK_SRT)
    second.write_text(TALK_SRT.replace("Bye.", "See you."))
    out = tmp_path / "o"
    for _ in range(2):  # the second run replaces the first run's files: no real-3.srt
        done = subtide(
            "run",
            "-o",
            str(out),
            str(first),
            str(second),
            cache=cache_root,
            timeout=JOB_HANG_GUARD_S,
        )
        assert done.returncode == 0, done.stderr
        assert sorted(p.name for p in out.iterdir()) == ["real-2.srt", "real.srt"]
        assert "Bye." in (out / "real.srt").read_text()
        assert "See you." in (out / "real-2.srt").read_text()
        assert f"was just written for {first}" in done.stderr
        assert done.stdout.split() == [str(out / "real.srt"), str(out / "real-2.srt")]


# --- every option checked before any work, by its own name --------------------------------------

# (options, what the one line must say). The source is a link to a server that never answers: an
# option checked only after the work began would hang the run, not end it at once.
WRONG_OPTIONS = [
    (["--max-chars", "5"], "--max-chars must be greater than or equal to 10"),
    (["--max-chars", "0"], "--max-chars must be greater than or equal to 10"),
    (["--max-chars", "1000"], "--max-chars must be less than or equal to 200"),
    (["--speakers", "0"], "--speakers must be greater than or equal to 1"),
    (
        ["--min-speakers", "3", "--max-speakers", "2"],
        "--min-speakers must not exceed --max-speakers",
    ),
    (["--about", "x" * 2001], "--about must have at most 2000 characters"),
    (["--llm-url", "not a url"], "--llm-url 'not a url': Not an http(s) URL."),
    (["--llm-url", "http://[::1"], "--llm-url 'http://[::1': Not a valid URL (Invalid IPv6 URL)."),
    (["--backend", "not a url"], "--backend: 'not a url': No valid host name in the URL."),
    (["--backend", "http://[::1"], "--backend: 'http://[::1': Not a valid URL (Invalid IPv6 URL)."),
    (["-j", "0"], "-j/--jobs: must be at least 1"),
    (["-l", "xx"], "-l/--lang: "),
    (["--to", "zz"], "--to: "),
    (["--to", "german"], "--to: "),
    (
        ["-m", "no-such-model"],
        "-m/--model: Unknown Whisper model 'no-such-model'. (Use one of: bundled, bundled:base, "
        "bundled:tiny.en, tiny.en, tiny,",
    ),
    (["-m", "./nope_dir"], "-m/--model: No model folder at ./nope_dir. (Use one of: bundled,"),
]


@pytest.mark.parametrize(
    ("options", "said"), WRONG_OPTIONS, ids=[" ".join(options)[:30] for options, _ in WRONG_OPTIONS]
)
def test_a_wrong_option_is_one_line_that_names_it(options, said, cache_root, tmp_path):
    out = tmp_path / "out"
    with silent_server() as (url, _):
        # Hang guard: the run must end before it touches the source.
        done = subtide(
            "run",
            f"{url}/talk.mp4",
            "-o",
            str(out),
            *options,
            cache=cache_root,
            timeout=HANG_GUARD_S,
        )
    assert done.returncode == 2, done.stderr
    assert said in done.stderr
    assert "Traceback" not in done.stderr and "num_speakers" not in done.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (
            ["run", "talk.mp4", "--max-chars", "abc"],
            "run: argument --max-chars: invalid int value: 'abc' (see subtide run --help)",
        ),
        (
            ["run", "--bogus", "talk.mp4"],
            "run: unrecognized arguments: --bogus (see subtide run --help)",
        ),
        (["run"], "run: the following arguments are required: SOURCE (see subtide run --help)"),
        (["--bogus"], "unrecognized arguments: --bogus (see subtide --help)"),
    ],
)
def test_a_malformed_command_line_is_one_line_not_a_usage_dump(argv, said, capsys):
    from app.cli import main

    with pytest.raises(SystemExit) as ended:
        main(argv)

    assert ended.value.code == 2
    assert capsys.readouterr() == ("", f"subtide: {said}\n")


def test_an_output_folder_that_is_a_file_is_refused_before_any_work(cache_root, tmp_path):
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    with silent_server() as (url, _):
        # Hang guard: the run must end before it touches the source.
        done = subtide(
            "run", f"{url}/talk.mp4", "-o", str(taken), cache=cache_root, timeout=HANG_GUARD_S
        )
    assert done.returncode == 2
    assert f"-o: {taken} can't be the output folder: it is a file" in done.stderr
    assert "File exists" not in done.stderr and taken.read_text() == "mine"


def test_an_output_folder_that_cannot_be_made_is_refused_before_any_work(cache_root, tmp_path):
    with silent_server() as (url, _):
        # Hang guard: the run must end before it touches the source. /proc takes no new folder,
        # whatever access() says to root.
        done = subtide(
            "run",
            f"{url}/talk.mp4",
            "-o",
            "/proc/subtide-out",
            cache=cache_root,
            timeout=HANG_GUARD_S,
        )
    assert done.returncode == 2
    assert done.stderr.startswith("subtide: -o: can't make the folder /proc/subtide-out (")
    assert "(name a folder you can write in)" in done.stderr


def test_a_missing_source_says_what_to_check(cache_root, tmp_path):
    missing = tmp_path / "talk.mp4"
    done = subtide("run", str(missing), cache=cache_root, timeout=HANG_GUARD_S)
    assert done.returncode == 1
    assert done.stderr == (
        f"subtide: {missing}: File not found: talk.mp4 (Check the path and the file name.)\n"
    )


def test_translate_without_a_target_is_a_usage_error(cache_root, tmp_path):
    talk = tmp_path / "talk.srt"
    talk.write_text(TALK_SRT)
    done = subtide("translate", str(talk), cache=cache_root, timeout=HANG_GUARD_S)
    assert done.returncode == 2 and "translate needs --to" in done.stderr


def test_a_file_named_like_an_option_gets_a_hint(cache_root):
    done = subtide("run", "-x.m4a", cache=cache_root, timeout=HANG_GUARD_S)
    assert done.returncode == 2
    assert "write ./-x.m4a, or put -- before the file names" in done.stderr


# --- sources that can never work fail alone, at once --------------------------------------------


def test_a_named_pipe_a_folder_and_a_broken_link_fail_at_once(cache_root, tmp_path):
    pipe = tmp_path / "live.wav"
    os.mkfifo(pipe)
    folder = tmp_path / "clips.mp4"
    folder.mkdir()
    out = tmp_path / "out"
    # Hang guard: reading the pipe waited forever for a writer.
    done = subtide(
        "run",
        str(pipe),
        str(folder),
        "http://[::1",
        "-o",
        str(out),
        cache=cache_root,
        timeout=HANG_GUARD_S,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines == [
        f"subtide: {pipe}: {pipe.name} is a named pipe, not a media file. "
        "(Save the stream to a file first, then give that file.)",
        f"subtide: {folder}: {folder.name} is a folder, not a media file. "
        "(Give a media file inside it.)",
        "subtide: http://[::1: Not a valid URL (Invalid IPv6 URL). (check the link)",
    ]
    assert not out.exists()


def test_a_page_that_fails_is_not_fetched_again_by_its_job(cache_root, tmp_path):
    from engine import media
    from engine.protocol import SubtideError

    asked: list[str] = []

    class Failing(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_error(HTTPStatus.SERVICE_UNAVAILABLE)

        def log_message(self, *args: object) -> None:
            pass

    with serve(Failing) as url:
        with pytest.raises(SubtideError):
            media.playlist_entries(f"{url}/page", allow_private=True)
        one_look = len(asked)
        asked.clear()
        done = subtide("run", f"{url}/page", cache=cache_root, timeout=JOB_HANG_GUARD_S)
    assert done.returncode == 1 and "503" in done.stderr
    assert len(asked) == one_look, "a page that failed once is not asked again"


def test_a_link_to_a_text_file_is_named_as_given_not_by_our_temporary_file(cache_root, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "readme.txt").write_text("Not media, just words.\n")
    with serve_directory(site) as base:
        link = f"{base}/readme.txt"
        done = subtide("run", link, cache=cache_root, timeout=JOB_HANG_GUARD_S)
    assert done.returncode == 1
    assert f"subtide: {link}: {link} is not an audio or video file ffmpeg can read" in done.stderr
    assert "unknown_video" not in done.stderr


# --- every wait is said and bounded; a signal stops the run at once ----------------------------


def test_a_silent_backend_is_said_and_given_up_on_in_the_stated_time(clips, cache_root, tmp_path):
    import cloud

    with silent_server() as (url, _):
        run = start_subtide(
            "run", str(clips.short.wav), "--backend", url, "-o", str(tmp_path), cache=cache_root
        )
        line = stderr_line_with(run, "waiting for the Subtide server")
        assert f"at {url} (giving up after {cloud.REACH_TIMEOUT_S:g} s)" in line
        run.send_signal(signal.SIGINT)
        run.communicate(timeout=HANG_GUARD_S)  # hang guard
        assert run.returncode == 130
        with pytest.raises(cloud.transport.UnreachableError) as caught:
            cloud.reach(cloud.detect(url), None, timeout_s=0.5)
    assert "did not answer within 0.5 s" in caught.value.message


@pytest.mark.parametrize(
    ("link", "sent", "code"),
    [
        ("talk.mp4", signal.SIGINT, 130),  # a media link: its job's download, in a worker
        ("talk.mp4", signal.SIGTERM, 143),
        ("page", signal.SIGINT, 130),  # a page: its list of videos, read before any job
        ("page", signal.SIGTERM, 143),
    ],
)
def test_a_signal_stops_a_stuck_run_at_once_and_leaves_nothing(
    link, sent, code, cache_root, tmp_path
):
    tmp, out = tmp_path / "tmp", tmp_path / "out"
    tmp.mkdir()
    with silent_server() as (url, listener):
        run = start_subtide("run", f"{url}/{link}", "-o", str(out), cache=cache_root, tmp=tmp)
        with wait_for_client(listener):  # the run is now waiting for this server's answer
            run.send_signal(sent)
            # Hang guard: the run used to wait out the download's 30 s timeout first (27 s).
            _, stderr = run.communicate(timeout=HANG_GUARD_S)
    assert run.returncode == code, stderr
    assert stderr.strip().splitlines()[-1].startswith("subtide: cancelled")
    assert "Traceback" not in stderr
    assert leftovers(tmp, out) == []


@pytest.mark.slow
def test_sigterm_during_a_local_job_cleans_up_like_ctrl_c(clips, cache_root, tmp_path):
    tmp, out = tmp_path / "tmp", tmp_path / "out"
    tmp.mkdir()
    run = start_subtide(
        "run",
        str(clips.dialogue.wav),
        "-m",
        "bundled:tiny.en",
        "--no-cache",
        "-o",
        str(out),
        cache=cache_root,
        tmp=tmp,
    )
    # The engine's work folder for the job says it started (the run's own folder is older).
    deadline = time.monotonic() + JOB_HANG_GUARD_S  # hang guard
    while not [p for p in tmp.rglob("subtide-*") if not p.name.startswith("subtide-run-")]:
        assert run.poll() is None and time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)
    run.send_signal(signal.SIGTERM)
    _, stderr = run.communicate(timeout=HANG_GUARD_S)  # hang guard
    assert run.returncode == 143, stderr
    assert stderr.strip().splitlines()[-1] == "subtide: cancelled (SIGTERM)"
    assert leftovers(tmp, out) == []


# --- what the user must know reaches them ----------------------------------------------------


def test_every_notice_is_a_lasting_line_without_a_terminal(capsys):
    from app.cli_jobs import Board
    from engine.protocol import ProgressEvent, ResultEvent

    events = [
        ProgressEvent(stage="transcribe", percent=10, message="Transcribing"),
        ProgressEvent(
            stage="transcribe",
            percent=20,
            message="large-v3 is not here: using bundled",
            notice=True,
        ),
        ResultEvent(cues=[], language="en", duration=1.0),
    ]
    with Board(quiet=True) as board:
        result = board.follow(iter(events), "talk.mp4")
    assert result is not None
    assert capsys.readouterr().err == "subtide: talk.mp4: large-v3 is not here: using bundled\n"


def test_force_reaches_the_job_from_run_and_translate():
    from app.cli import _parser
    from app.cli_inputs import job_options

    for command in (["run", "a.srt"], ["translate", "a.srt", "--to", "de"]):
        assert not job_options(_parser().parse_args(command), {})["skip_unreadable_cues"]
        forced = _parser().parse_args([*command, "--force"])
        assert job_options(forced, {})["skip_unreadable_cues"]


BROKEN_SRT = (
    "1\n00:00:01,000 --> 00:00:02,000\nFirst.\n\n"
    "2\n00:00:0x,000 --> 00:00:03,000\nUnreadable time.\n\n"
    "3\n00:00:04,000 --> 00:00:05,000\nLast.\n"
)


def test_translate_refuses_to_drop_cues_unless_forced_and_then_says_so(cache_root, tmp_path):
    from tests.support.openai_server import serve_openai

    broken = tmp_path / "broken.srt"
    broken.write_text(BROKEN_SRT)
    out = tmp_path / "out"
    with serve_openai() as fake:
        llm = ["--llm-url", f"{fake.url}/v1", "--llm-model", "local-model", "-o", str(out)]
        refused = subtide("translate", str(broken), "--to", "de", *llm, cache=cache_root)
        forced = subtide("translate", str(broken), "--to", "de", "--force", *llm, cache=cache_root)
    assert refused.returncode == 1 and refused.stderr.startswith(f"subtide: {broken}: ")
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.split() == [str(out / "broken.de.srt")]
    *notices, summary = forced.stderr.splitlines()
    assert summary.endswith("text from captions or a subtitle file"), forced.stderr
    assert len(notices) == 1 and "1" in notices[0], "the notice says how many cues were left out"
