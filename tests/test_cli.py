"""`subtide` as a user runs it: a real process, real files, one-line errors."""

import os
import re
import subprocess
import sys

import pytest

from tests.support.cli import ROOT, subtide
from tests.support.http_server import serve_directory
from tests.support.subtitles import numbered_srt
from tests.support.timing import HANG_GUARD_S


def test_help_lists_the_commands_without_heavy_imports(cache_root):
    # Instant because nothing heavy is imported (checked below); its time: bench/responsiveness.py.
    done = subtide("--help", cache=cache_root, timeout=HANG_GUARD_S)
    assert done.returncode == 0 and "run" in done.stdout
    imported = subprocess.run(
        [sys.executable, "-c", "import app.cli, sys; print(sorted(sys.modules))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for heavy in ("faster_whisper", "ctranslate2", "yt_dlp", "numpy"):
        assert f"'{heavy}'" not in imported, f"{heavy} is imported by `subtide --help`"


@pytest.mark.slow
def test_run_writes_every_format_that_parses(clips, cache_root, tmp_path):
    import pysrt

    from engine.formats import read_json, read_vtt

    out = tmp_path / "subs"
    done = subtide(
        "run", str(clips.short_mp4), "-o", str(out), "-f", "srt,vtt,ass,txt,json", cache=cache_root
    )
    assert done.returncode == 0, done.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"short_en.{ext}" for ext in ("ass", "json", "srt", "txt", "vtt")]
    assert sorted(done.stdout.split()) == sorted(str(out / n) for n in names)
    srt = pysrt.open(str(out / "short_en.srt"))
    cues = read_json((out / "short_en.json").read_text())
    assert len(srt) == len(cues) == len(read_vtt((out / "short_en.vtt").read_text())) > 0
    assert srt[0].text == cues[0].text
    assert "Dialogue:" in (out / "short_en.ass").read_text()
    assert "summer" in (out / "short_en.txt").read_text()


@pytest.mark.slow
def test_a_run_ends_in_a_summary_and_files_as_the_umask_says(clips, cache_root, tmp_path):
    import json
    import pty

    out = tmp_path / "subs"
    # On a terminal, as a user sees it: the bar is drawn only there.
    leader, follower = pty.openpty()
    with subprocess.Popen(
        [sys.executable, "-m", "app.cli", "run", str(clips.short.wav), "-o", str(out)],
        cwd=ROOT,
        env={**os.environ, "CACHE_DIR": str(cache_root), "COLUMNS": "120"},
        stdin=follower,
        stdout=follower,
        stderr=follower,
        preexec_fn=lambda: os.umask(0o027),
    ) as process:
        os.close(follower)
        shown = _read_all(leader)
        assert process.wait(timeout=HANG_GUARD_S) == 0, shown
    assert "100%" in shown, shown
    summary = next(line for line in shown.splitlines() if line.startswith("subtide: "))
    assert summary.startswith(f"subtide: {clips.short.wav}: "), shown
    assert " cues, en, in " in summary and summary.endswith("text from speech recognition")
    srt = out / "short_en.srt"
    assert srt.stat().st_mode & 0o777 == 0o640  # as open() would have made it

    done = subtide("run", str(clips.short.wav), "-o", str(out), "-f", "json", cache=cache_root)
    document = json.loads((out / "short_en.json").read_text())
    assert (document["title"], document["source"]) == ("short_en", "asr"), done.stderr


def _read_all(fd: int) -> str:
    """All a pseudo-terminal shows until the process on it ends, as plain lines."""
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the other side is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    text = b"".join(chunks).decode(errors="replace").replace("\r", "\n")
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)  # colours, cursor moves


@pytest.mark.slow
def test_a_url_source_is_named_after_its_title(clips, cache_root, tmp_path):
    with serve_directory(clips.short_mp4.parent) as base:
        done = subtide(
            "run", f"{base}/{clips.short_mp4.name}", "-o", str(tmp_path), cache=cache_root
        )
    assert done.returncode == 0, done.stderr
    assert [p.suffix for p in tmp_path.iterdir()] == [".srt"]


@pytest.mark.slow
def test_bad_input_is_one_line_and_writes_nothing(clips, cache_root, tmp_path):
    out = tmp_path / "out"
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    done = subtide(
        "run",
        str(empty),
        "ftp://example.com/x.mp4",
        str(clips.short.wav),
        "-o",
        str(out),
        cache=cache_root,
    )
    assert done.returncode == 1
    *errors, finished = done.stderr.strip().splitlines()
    assert finished.startswith(f"subtide: {clips.short.wav}: "), done.stderr
    assert len(errors) == 2, done.stderr
    # Neither can ever work, so both are refused, in the order given, before any source runs.
    assert "empty" in errors[0] and "ftp" in errors[1]
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["short_en.srt"], "the good source still ran"


def test_unknown_format_is_a_usage_error(cache_root):
    done = subtide("run", "x.mp4", "-f", "srt,doc", cache=cache_root)
    assert done.returncode == 2 and "unknown format doc" in done.stderr


def test_a_bad_setting_is_reported_plainly(cache_root, tmp_path):
    env = {**os.environ, "CACHE_DIR": str(cache_root), "CACHE_MAX_SIZE_MB": "lots"}
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "run", "x.mp4"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2, "a wrong setting is found before any work, like a wrong option"
    assert "cache_max_size_mb" in done.stderr and "Traceback" not in done.stderr


ODD_SRT = (
    "\ufeff1\r\n00:00:01,000 --> 00:00:02,500\r\n<i>Hello there.</i>\r\n\r\n"
    "7\r\n00:00:03,040 --> 00:00:05,999\r\nTwo lines\r\nin one cue.\r\n\r\n\r\n"
    "3\r\n01:02:03,456 --> 01:02:04,000\r\nPast an hour, no blank line at the end."
)


def test_translate_keeps_every_timestamp_of_a_foreign_srt(cache_root, tmp_path):
    import pysrt

    from tests.support.openai_server import fake_translation, serve_openai

    source = tmp_path / "odd.srt"
    source.write_bytes(ODD_SRT.encode("utf-8"))
    out = tmp_path / "out"
    with serve_openai() as fake:
        done = subtide(
            "translate",
            str(source),
            "--to",
            "de",
            "-o",
            str(out),
            "--llm-url",
            f"{fake.url}/v1",
            "--llm-model",
            "local-model",
            cache=cache_root,
        )
    assert done.returncode == 0, done.stderr
    assert [p.name for p in out.iterdir()] == ["odd.de.srt"]
    original = pysrt.open(str(source), encoding="utf-8-sig")
    translated = pysrt.open(str(out / "odd.de.srt"))
    assert [(s.start.ordinal, s.end.ordinal) for s in translated] == [
        (s.start.ordinal, s.end.ordinal) for s in original
    ]
    for before, after in zip(original, translated, strict=True):
        assert after.text.replace("\n", " ") == fake_translation(
            before.text.replace("\n", " "), "German"
        )


def test_translate_without_a_target_or_with_a_video_is_refused(cache_root, clips):
    done = subtide("translate", "x.srt", cache=cache_root)
    assert done.returncode == 2 and "--to" in done.stderr
    done = subtide("translate", str(clips.short_mp4), "--to", "de", cache=cache_root)
    assert done.returncode == 1 and ".srt or .vtt" in done.stderr


@pytest.mark.slow
def test_speaker_labels_and_names_from_the_command_line(clips, cache_root, tmp_path):
    done = subtide(
        "run",
        str(clips.short.wav),
        "-o",
        str(tmp_path),
        "--diarize",
        "builtin",
        "--speaker-labels",
        "--speaker-names",
        "SPEAKER_1=Anna",
        cache=cache_root,
    )
    assert done.returncode == 0, done.stderr
    srt = (tmp_path / "short_en.srt").read_text()
    assert "[Anna]" in srt and "[SPEAKER_2]" in srt


def test_malformed_speaker_names_are_a_usage_error(cache_root):
    done = subtide("run", "x.mp4", "--speaker-names", "Anna", cache=cache_root)
    assert done.returncode == 2 and "LABEL=Name" in done.stderr


@pytest.mark.slow
def test_a_page_with_several_videos_runs_each(clips, cache_root, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    for name in ("first.mp4", "second.mp4"):
        (site / name).write_bytes(clips.short_mp4.read_bytes())
    (site / "page.html").write_text(
        "<html><head><title>Two talks</title></head><body>"
        '<video src="first.mp4"></video><video src="second.mp4"></video></body></html>'
    )
    out = tmp_path / "out"
    with serve_directory(site) as base:
        done = subtide("run", f"{base}/page.html", "-o", str(out), cache=cache_root)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["first.srt", "second.srt"]


def test_force_asr_and_recue_reach_the_job():
    from app.cli import _job, _parser
    from app.cli_inputs import job_options
    from engine.protocol import Source

    source = Source(url="https://example.com/v")
    args = _parser().parse_args(["run", "https://example.com/v", "--force-asr", "--recue"])
    job = _job(args, source, job_options(args, {}))
    assert job.force_asr and job.recue_captions
    plain = _parser().parse_args(["run", "https://example.com/v"])
    job = _job(plain, source, job_options(plain, {}))
    assert not job.force_asr and not job.recue_captions


def _translate(source, out, fake, cache, *args):
    llm = ("--llm-url", f"{fake.url}/v1", "--llm-model", "local-model")
    return subtide("translate", str(source), "-l", "en", "-o", str(out), *llm, *args, cache=cache)


def _asks_for(language: str, cue_id: int | None = None):
    """A fake-server predicate: a batch into `language` (holding `cue_id`, when given)."""
    import json

    from tests.support.openai_server import lines_of

    def matches(body: dict) -> bool:
        in_language = language in json.dumps(body)
        return in_language and (cue_id is None or str(cue_id) in (lines_of(body) or {}))

    return matches


def test_translate_says_which_lines_stayed_in_english_and_exits_3(cache_root, tmp_path):
    from tests.support.openai_server import Reply, serve_openai

    source, out = numbered_srt(tmp_path, 4), tmp_path / "out"
    with serve_openai() as fake:
        fake.when(_asks_for("German", 2), Reply("invalid_json"))
        listed = _translate(source, out, fake, cache_root, "--to", "de", "-f", "srt,json")
        unlisted = _translate(source, tmp_path / "other", fake, cache_root, "--to", "de")
    assert listed.returncode == 3, listed.stderr
    assert (
        f"subtide: {source}: 3 of 4 lines translated into German; 1 kept in English, "
        f"listed in {out / 'talk.json'}" in listed.stderr
    )
    assert sorted(p.name for p in out.iterdir()) == ["talk.de.srt", "talk.json"]
    assert unlisted.returncode == 3, unlisted.stderr
    assert "1 kept in English, add -f json to list them" in unlisted.stderr


def test_translate_writes_no_file_for_a_language_that_fails_entirely(cache_root, tmp_path):
    from tests.support.openai_server import Reply, serve_openai

    source, out = numbered_srt(tmp_path, 3), tmp_path / "out"
    with serve_openai() as fake:
        fake.when(_asks_for("German"), Reply("invalid_json"))
        done = _translate(source, out, fake, cache_root, "--to", "de,fr")
        german_only = _translate(source, tmp_path / "de", fake, cache_root, "--to", "de")
    assert done.returncode == 3, done.stderr
    assert [p.name for p in out.iterdir()] == ["talk.fr.srt"]
    assert "Nothing could be translated into German" in done.stderr
    assert "No German subtitles were written" in done.stderr
    assert "the model's replies never carried the lines as asked" in done.stderr
    # Nothing at all to write is a failed source.
    assert german_only.returncode == 1, german_only.stderr
    assert not (tmp_path / "de").exists() or not any((tmp_path / "de").iterdir())


def test_translate_without_an_llm_is_refused_before_any_work(cache_root, tmp_path):
    source = numbered_srt(tmp_path, 2)
    done = subtide("translate", str(source), "-l", "en", "--to", "de", cache=cache_root)
    assert done.returncode == 1
    assert "Translation needs an LLM" in done.stderr and not done.stdout


@pytest.mark.slow
def test_a_page_with_a_track_in_the_target_language_needs_no_llm(clips, cache_root, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "clip.mp4").write_bytes(clips.short_mp4.read_bytes())
    (site / "de.srt").write_text("1\n00:00:00,500 --> 00:00:02,000\nHallo zusammen.\n")
    (site / "page.html").write_text(
        "<html><head><title>Trip</title></head><body><video src='clip.mp4'>"
        "<track kind='subtitles' src='de.srt' srclang='de' label='Deutsch'></video></body></html>"
    )
    out = tmp_path / "out"
    with serve_directory(site) as base:
        done = subtide("run", f"{base}/page.html", "--to", "de", "-o", str(out), cache=cache_root)
    assert done.returncode == 0, done.stderr
    [written] = out.iterdir()
    assert "Hallo zusammen." in written.read_text()
