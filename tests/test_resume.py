"""Checkpoints (issue 17): a transcription journals its segments as they are decoded, and a run
killed part way is taken up where it stopped, with the same cues as a run that never died."""

import contextlib
import json
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pysrt
import pytest

from engine.asr import DecodeOptions, Transcriber, resolve_model
from engine.journal import Journal
from engine.media import decode_audio
from tests.support.cli import start_subtide, subtide
from tests.support.synth import DIALOGUE_EN, Clip, fixture_dir, synthesize

MODEL = "bundled:tiny.en"
# A hang guard: the whole clip transcribes in well under a minute on a busy 2-core machine.
HANG_S = 300


@pytest.fixture(scope="module", autouse=True)
def one_chunk_at_a_time() -> Iterator[None]:
    """Whisper's speech chunks decoded one at a time by `subtide run`, so that its journal
    grows chunk by chunk and a kill lands between two of them."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WHISPER_BATCH_SIZE", "1")
        yield


@pytest.fixture(scope="module")
def long_clip() -> Clip:
    """About 100 s of two voices: several decoding windows."""
    return synthesize(DIALOGUE_EN * 2, fixture_dir(), "dialogue_long", gap=0.7)


@pytest.fixture(scope="module")
def uninterrupted(long_clip, tmp_path_factory) -> list[pysrt.SubRipItem]:
    out = tmp_path_factory.mktemp("whole")
    done = subtide("run", str(long_clip.wav), "-m", MODEL, "-o", str(out), cache=out / "cache")
    assert done.returncode == 0, done.stderr
    return list(pysrt.open(str(out / f"{long_clip.wav.stem}.srt")))


def _journaled_to(cache: Path) -> float:
    """How far into the audio the journal in `cache` has come (0 when there is none)."""
    ends = [0.0]
    for path in (cache / "journals").rglob("*.jsonl"):
        for line in path.read_text().splitlines()[1:]:
            with contextlib.suppress(ValueError, KeyError):  # a line being written
                ends.append(json.loads(line)["end"])
    return max(ends)


def test_a_killed_run_resumes_where_it_stopped_with_the_same_cues(
    long_clip, uninterrupted, tmp_path
):
    cache, out = tmp_path / "cache", tmp_path / "out"
    running = start_subtide("run", str(long_clip.wav), "-m", MODEL, "-o", str(out), cache=cache)
    deadline = time.monotonic() + HANG_S
    while _journaled_to(cache) < 0.6 * long_clip.duration:
        assert running.poll() is None, running.communicate()
        assert time.monotonic() < deadline, "the journal did not grow"
        time.sleep(0.05)
    running.send_signal(signal.SIGKILL)  # as a crash or the out-of-memory killer would
    running.communicate()
    assert not (out / f"{long_clip.wav.stem}.srt").exists()

    again = subtide("run", str(long_clip.wav), "-m", MODEL, "-o", str(out), cache=cache)
    assert again.returncode == 0, again.stderr
    said = re.search(r"Resuming at (\d+):(\d\d) of (\d+):(\d\d)", again.stdout + again.stderr)
    assert said, again.stderr
    at = int(said[1]) * 60 + int(said[2])
    # The kill came at 60 %; at most the window being decoded and the one before it (which
    # can't be known to be whole) are decoded again.
    assert at >= 0.6 * long_clip.duration - 2 * 30, at

    resumed = list(pysrt.open(str(out / f"{long_clip.wav.stem}.srt")))
    assert [c.text for c in resumed] == [c.text for c in uninterrupted]
    for mine, theirs in zip(resumed, uninterrupted, strict=True):
        assert abs(mine.start.ordinal - theirs.start.ordinal) <= 50
        assert abs(mine.end.ordinal - theirs.end.ordinal) <= 50
    # The finished journal became the transcript's cache entry.
    assert not list((cache / "journals").rglob("*.jsonl"))
    assert list((cache / "transcripts").rglob("*.json"))


def test_a_resumed_decode_starts_at_its_window_and_matches_a_whole_one(long_clip, tmp_path):
    model = Transcriber(resolve_model(MODEL, tmp_path))
    audio = decode_audio(long_clip.wav)
    _, segments = model.transcribe(audio, DecodeOptions())
    whole = list(segments)
    seeks = sorted({s.seek for s in whole})
    assert len(seeks) >= 3
    before = [word for s in whole if s.seek < seeks[1] for word in s.words]
    _, resumed = model.transcribe(
        audio, DecodeOptions(language="en"), resume_seek=seeks[1], resume_after=before[-1]
    )
    later = list(resumed)
    # Nothing before the window was decoded, and from it on the segments are the whole run's.
    assert min(s.seek for s in later) == seeks[1]
    assert later == [s for s in whole if s.seek >= seeks[1]]
    model.close()


def test_a_torn_last_line_is_ignored(long_clip, tmp_path):
    model = Transcriber(resolve_model(MODEL, tmp_path))
    info, segments = model.transcribe(decode_audio(long_clip.wav), DecodeOptions())
    whole = list(segments)
    model.close()
    journal = Journal(tmp_path / "job.jsonl")
    journal.start(info, whole)
    journal.close()
    with open(journal.path, "a") as torn:
        torn.write('{"start": 99.0, "end": 1')  # a crash mid-write
    checkpoint = journal.checkpoint()
    last = whole[-1].seek
    assert checkpoint is not None and checkpoint.info == info
    assert checkpoint.seek == last
    assert checkpoint.segments == [s for s in whole if s.seek != last]
    assert checkpoint.at == checkpoint.segments[-1].end
