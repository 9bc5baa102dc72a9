"""Video out (issue 20): the video with its subtitles as switchable tracks (MKV, MP4) or burned
in, made by real ffmpeg from the cues of real runs; checked with ffprobe, by extracting each
track back, and by the burned frames themselves."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pysrt
import pytest

from engine.formats import read_srt
from engine.protocol import Cue, SubtideError, VideoOptions
from engine.video import burn, burn_subtitles, make_video
from tests.support.cli import subtide
from tests.support.http_server import serve_directory
from tests.support.openai_server import fake_translation, serve_openai
from tests.support.video import ffprobe_streams, frame, subtitle_streams, track_cues

MODEL = "bundled:tiny.en"
_TAG = re.compile(r"<[^>]*>")


def packets_md5(path: Path, stream: str) -> str:
    """A hash of a stream's packets as stored: equal only for a stream copied unchanged."""
    command = ["ffmpeg", "-v", "error", "-i", str(path), "-map", f"0:{stream}:0", "-c", "copy"]
    done = subprocess.run([*command, "-f", "md5", "-"], capture_output=True, check=True)
    return done.stdout.decode().strip()


def assert_same_cues(video: Path, number: int, srt: Path) -> None:
    """Track `number` holds the SRT file's cues: same count, text and times (ASS keeps
    centiseconds) against the picture. ffmpeg writes an ASS track's styling into the SRT as
    tags: they are left out."""
    track = track_cues(video, number)
    written = read_srt(srt.read_text("utf-8"))
    # Matroska has no edit list: AAC's priming moves every stream, the picture too, alike.
    shift = video_start(video)
    assert len(track) == len(written) > 0
    for got, want in zip(track, written, strict=True):
        assert _TAG.sub("", got.text) == want.text
        assert abs(got.start - shift - want.start) <= 0.01
        assert abs(got.end - shift - want.end) <= 0.01


def video_start(path: Path) -> float:
    command = ["ffprobe", "-v", "error", "-select_streams", "v:0", "-of", "json"]
    command += ["-show_entries", "stream=start_time", str(path)]
    probed = json.loads(subprocess.run(command, capture_output=True, check=True).stdout)
    return float(probed["streams"][0]["start_time"])


def small_video(folder: Path, *, seconds: float = 4, audio: bool = True) -> Path:
    """A plain grey 320x180 clip (a sine as its sound): cheap to burn, easy to compare."""
    out = folder / "clip.mp4"
    picture = f"color=c=gray:s=320x180:d={seconds}"
    command = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", picture]
    if audio:
        command += ["-f", "lavfi", "-i", f"sine=d={seconds}", "-c:a", "aac"]
    command += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(out)]
    subprocess.run(command, check=True, capture_output=True)
    return out


def run_dialogue(
    clips, cache_root, out: Path, *video: str, llm_url: str
) -> subprocess.CompletedProcess:
    return subtide(
        "run",
        str(clips.dialogue_mp4),
        "-m",
        MODEL,
        "--to",
        "de",
        "-o",
        str(out),
        "--llm-url",
        llm_url,
        "--llm-model",
        "fake-model",
        *video,
        cache=cache_root,
    )


@pytest.fixture(scope="module")
def llm():
    with serve_openai() as fake:
        yield f"{fake.url}/v1"


@pytest.mark.slow
def test_soft_mkv_has_a_tagged_ass_track_per_language_with_the_srts_cues(
    clips, cache_root, tmp_path, llm
):
    done = run_dialogue(clips, cache_root, tmp_path, "--dual", "--video", "soft", llm_url=llm)
    assert done.returncode == 0, done.stderr
    video = tmp_path / "dialogue_en.subtitled.mkv"
    assert str(video) in done.stdout.splitlines()
    streams = ffprobe_streams(video)
    assert [s["codec_type"] for s in streams] == ["video", "audio", *["subtitle"] * 3]
    # Picture and sound are copied, packet for packet.
    for kind in ("v", "a"):
        assert packets_md5(video, kind) == packets_md5(clips.dialogue_mp4, kind)
    tracks = [
        (s["codec_name"], s["tags"]["language"], s["tags"]["title"], s["disposition"]["default"])
        for s in streams[2:]
    ]
    assert tracks == [
        ("ass", "eng", "English", 1),
        ("ass", "ger", "Deutsch", 0),
        ("ass", "ger", "English + Deutsch", 0),
    ]
    assert_same_cues(video, 0, tmp_path / "dialogue_en.srt")
    assert_same_cues(video, 1, tmp_path / "dialogue_en.de.srt")
    assert_same_cues(video, 2, tmp_path / "dialogue_en.en-de.srt")


@pytest.mark.slow
def test_soft_mp4_carries_mov_text_tracks(clips, cache_root, tmp_path, llm):
    video_args = ("--video", "soft", "--video-format", "mp4")
    done = run_dialogue(clips, cache_root, tmp_path, *video_args, llm_url=llm)
    assert done.returncode == 0, done.stderr
    video = tmp_path / "dialogue_en.subtitled.mp4"
    subtitles = subtitle_streams(video)
    assert [(s["codec_name"], s["tags"]["language"]) for s in subtitles] == [
        ("mov_text", "eng"),
        ("mov_text", "ger"),
    ]
    assert [s["tags"]["handler_name"] for s in subtitles] == ["English", "Deutsch"]
    assert [s["disposition"]["default"] for s in subtitles] == [1, 0]
    assert_same_cues(video, 0, tmp_path / "dialogue_en.srt")
    assert_same_cues(video, 1, tmp_path / "dialogue_en.de.srt")


@pytest.mark.slow
def test_burn_draws_the_translation_at_its_cues_and_nothing_between(
    clips, cache_root, tmp_path, llm
):
    done = run_dialogue(clips, cache_root, tmp_path, "--video", "burn", llm_url=llm)
    assert done.returncode == 0, done.stderr
    burned = tmp_path / "dialogue_en.burned.mp4"
    video, audio = ffprobe_streams(burned)
    assert (video["codec_name"], video["width"], video["height"]) == ("h264", 320, 240)
    assert audio["codec_name"] == "aac"
    cues = read_srt((tmp_path / "dialogue_en.de.srt").read_text("utf-8"))
    cue = cues[len(cues) // 2]
    during = np.abs(frame(burned, (cue.start + cue.end) / 2) - frame(clips.dialogue_mp4, 0))
    band = during.shape[0] * 2 // 3
    assert during[band:].mean() > 3 * max(during[:band].mean(), 0.5)
    gap_start, gap_end = max(
        ((a.end, b.start) for a, b in itertools.pairwise(cues)),
        key=lambda gap: gap[1] - gap[0],
    )
    assert gap_end - gap_start > 0.3
    between = np.abs(frame(burned, (gap_start + gap_end) / 2) - frame(clips.dialogue_mp4, 0))
    assert between.mean() < 1.0


def test_burn_scales_to_max_height_and_a_stop_leaves_no_file(tmp_path):
    source = small_video(tmp_path)
    cues = [Cue(id=1, start=0.5, end=3.0, text="Hello there", speaker="A")]
    ass = burn_subtitles(cues, language="en")
    small = burn(source, ass, tmp_path / "out" / "small.mp4", max_height=144)
    video, audio = ffprobe_streams(small)
    assert (video["width"], video["height"], audio["codec_name"]) == (256, 144, "aac")

    seen: list[float] = []
    with pytest.raises(SubtideError) as stopped:
        burn(
            source,
            ass,
            tmp_path / "out" / "stopped.mp4",
            on_progress=seen.append,
            should_stop=lambda: bool(seen),
        )
    assert stopped.value.code == "cancelled"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["small.mp4"]


def test_translate_with_video_muxes_the_file_and_its_translation(cache_root, tmp_path):
    source = tmp_path / "talk.srt"
    source.write_text(
        "1\n00:00:00,500 --> 00:00:01,500\nGood morning.\n\n"
        "2\n00:00:02,000 --> 00:00:03,500\nThe train is late\nagain today.\n",
        encoding="utf-8",
    )
    clip = small_video(tmp_path)
    out = tmp_path / "out"
    with serve_openai() as fake:
        done = subtide(
            "translate",
            str(source),
            "-l",
            "en",
            "--to",
            "de",
            "-o",
            str(out),
            "--llm-url",
            f"{fake.url}/v1",
            "--llm-model",
            "fake-model",
            "--with-video",
            str(clip),
            "--video",
            "soft",
            "--video-format",
            "mp4",
            cache=cache_root,
        )
    assert done.returncode == 0, done.stderr
    video = out / "talk.subtitled.mp4"
    assert done.stdout.splitlines() == [str(out / "talk.de.srt"), str(video)]
    assert [s["tags"]["language"] for s in subtitle_streams(video)] == ["eng", "ger"]
    assert [c.text for c in track_cues(video, 0)] == [s.text for s in pysrt.open(str(source))]
    assert [c.text.replace("\n", " ") for c in track_cues(video, 1)] == [
        fake_translation("Good morning.", "German"),
        fake_translation("The train is late again today.", "German"),
    ]


def test_a_source_without_video_gets_a_clear_error(cache_root, tmp_path):
    sound = tmp_path / "sound.wav"
    sine = ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=d=2", str(sound)]
    subprocess.run(sine, check=True)
    cues = [Cue(id=1, start=0.2, end=1.0, text="Hello")]
    with pytest.raises(SubtideError) as refused:
        make_video("video_soft", sound, tmp_path / "x.mkv", cues, language="en")
    assert refused.value.message == "this source has no video; use the subtitle files"
    assert refused.value.code == "bad_input"

    source = tmp_path / "talk.srt"
    source.write_text("1\n00:00:00,200 --> 00:00:01,000\nHello.\n", encoding="utf-8")
    with serve_openai() as fake:
        done = subtide(
            "translate",
            str(source),
            "--to",
            "de",
            "-o",
            str(tmp_path / "out"),
            "--llm-url",
            f"{fake.url}/v1",
            "--llm-model",
            "fake-model",
            "--with-video",
            str(sound),
            "--video",
            "burn",
            cache=cache_root,
        )
    assert done.returncode == 1
    assert "this source has no video; use the subtitle files" in done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["talk.de.srt"]


def test_an_ffmpeg_without_libass_is_named_before_any_work(cache_root, tmp_path, monkeypatch):
    # An ffmpeg built without libass: its filter list has neither `ass` nor `subtitles`.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "ffmpeg"
    fake.write_text("#!/bin/sh\necho ' ... null              V->V       Pass the source.'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not read: the check comes first")
    out = tmp_path / "out"
    done = subtide("run", str(clip), "--video", "burn", "-o", str(out), cache=cache_root)
    assert done.returncode == 2, done.stderr
    assert "without libass" in done.stderr and "'ass' and 'subtitles' filters" in done.stderr
    assert "Traceback" not in done.stderr and not out.exists()


def test_a_language_to_burn_the_cues_have_no_text_in_is_refused(cache_root, tmp_path):
    cues = [Cue(id=1, start=0.5, end=3.0, text="Hello", translations={"de": "Hallo"})]
    options = VideoOptions(burn_lang="fr")
    with pytest.raises(SubtideError) as refused:
        make_video(
            "video_burn",
            tmp_path / "unread.mp4",
            tmp_path / "out.mp4",
            cues,
            language="en",
            target_langs=["de"],
            options=options,
        )
    assert refused.value.message == "There is no French text to burn into the video."
    assert not (tmp_path / "out.mp4").exists()

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not read: the check comes first")
    asked = ("-l", "en", "--to", "de", "--video", "burn", "--burn-lang", "fr")
    done = subtide("run", str(clip), *asked, "-o", str(tmp_path / "out"), cache=cache_root)
    assert done.returncode == 2
    assert "--burn-lang fr: the subtitles are in en and de" in done.stderr


@pytest.mark.slow
def test_a_links_video_is_fetched_beside_its_job(clips, cache_root, tmp_path, monkeypatch):
    monkeypatch.setenv("SUBTIDE_ALLOW_PRIVATE_URLS", "true")
    with serve_directory(clips.short_mp4.parent) as media:
        link = f"{media}/short_en.mp4"
        done = subtide(
            "run", link, "-m", MODEL, "--video", "soft", "-o", str(tmp_path), cache=cache_root
        )
    assert done.returncode == 0, done.stderr
    video = tmp_path / "short_en.subtitled.mkv"
    assert done.stdout.splitlines() == [str(tmp_path / "short_en.srt"), str(video)]
    assert packets_md5(video, "v") == packets_md5(clips.short_mp4, "v")
    assert_same_cues(video, 0, tmp_path / "short_en.srt")
