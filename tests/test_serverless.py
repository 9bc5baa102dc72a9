"""`ServerlessBackend` against the RunPod stand-in, with real workers (`runpod/start.sh` in the
SDK's worker loop, on the bundled tiny.en model). Three workers serve one endpoint for the whole
module; a test that kills some gets them back before the next test starts."""

from __future__ import annotations

import base64
import difflib
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud import audio, speakers
from cloud.detect import Kind, Target
from cloud.serverless import ID_STRIDE, ServerlessBackend, _Part, _seam, _seamed
from cloud.transport import AuthError, NotFoundError, UnreachableError
from engine.diarize import Turn
from engine.protocol import (
    Cue,
    CuesEvent,
    ErrorEvent,
    Event,
    JobSpec,
    ProgressEvent,
    ResultEvent,
    Source,
    Word,
)
from tests.support.http_server import serve_directory
from tests.support.runpod_standin import WORKER_LOST, Job, StandIn, serve_runpod
from tests.support.runpod_workers import WorkerPool, wait_for
from tests.support.speakers import frame_accuracy
from tests.support.synth import DIALOGUE_EN, Clip, fixture_dir, synthesize
from tests.support.timing import HANG_GUARD_S
from tests.support.wer import wer, words

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]

ENDPOINT = "ep-serverless"
API_KEY = "rpa_test"
WORKER_IDS = ("worker-a", "worker-b", "worker-c")
MODEL = "bundled:tiny.en"
LOST_S = 3.0
WEATHER = [
    ("en-us", "Good morning, everyone."),
    ("en-us", "Today we are going to talk about the weather."),
    ("en-us", "It was very cold last week."),
    ("en-us", "This week it is warm and sunny."),
    ("en-us", "Many people went to the beach on Sunday."),
    ("en-us", "The water was still too cold for swimming."),
    ("en-us", "Tomorrow it will rain in the afternoon."),
    ("en-us", "Please take an umbrella with you."),
    ("en-us", "Thank you for listening, and have a nice day."),
]


@pytest.fixture(scope="module")
def standin() -> Iterator[StandIn]:
    with serve_runpod(api_key=API_KEY, endpoint_id=ENDPOINT, worker_lost_s=LOST_S) as server:
        yield server


@pytest.fixture(scope="module")
def pool(standin, tmp_path_factory) -> Iterator[WorkerPool]:
    workers = WorkerPool(standin, ENDPOINT, tmp_path_factory.mktemp("workers"), model=MODEL)
    try:
        yield workers
    finally:
        workers.stop()


@pytest.fixture
def workers(pool) -> WorkerPool:
    """The module's workers, all running (a test may have killed some), with an empty cache."""
    pool.ensure(WORKER_IDS)
    pool.forget()
    return pool


@pytest.fixture(scope="module")
def weather(tmp_path_factory) -> Clip:
    """Plain sentences tiny.en hears word for word, with pauses to cut at, named "weather"."""
    return synthesize(WEATHER, tmp_path_factory.mktemp("weather"), "weather", gap=1.0, speed=150)


@pytest.fixture(scope="module")
def media(clips) -> Iterator[str]:
    with serve_directory(clips.short_mp4.parent) as url:
        yield url


def backend(standin: StandIn, endpoint: str = ENDPOINT, key: str = API_KEY, **options):
    target = Target.assume(Kind.SERVERLESS, f"{standin.url}/v2/{endpoint}")
    options = {"poll_s": 0.2, "retries": 1, "backoff_s": 0.05, **options}
    return ServerlessBackend(target.url, key, target=target, **options)


def _path(path: Path) -> JobSpec:
    return JobSpec(source=Source(path=str(path)))


def new_jobs(standin: StandIn, before: set[str]) -> list[Job]:
    fresh = [job for job_id, job in standin.jobs.items() if job_id not in before]
    return sorted(fresh, key=lambda job: job.submitted)


def percents(events: list[Event]) -> list[float]:
    return [e.percent for e in events if isinstance(e, ProgressEvent)]


def text_of(cues) -> list[str]:
    return words(" ".join(cue.text for cue in cues))


def timed_words(cues: list[Cue]) -> list[Word]:
    """The cues' words, normalised as `words` does, with their times."""
    return [
        Word(text=text, start=word.start, end=word.end)
        for cue in cues
        for word in cue.words or []
        for text in words(word.text)
    ]


def consume(runner: ServerlessBackend, spec: JobSpec) -> tuple[list[Event], threading.Thread]:
    """Reads the run in a thread of its own, as the app does; the list fills as events come."""
    events: list[Event] = []

    def read() -> None:
        for event in runner.run(spec):
            events.append(event)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return events, thread


# --- Jobs that succeed ---------------------------------------------------------------------


def test_url_job_waits_for_a_worker_then_streams_progress_cues_and_result(standin, workers, media):
    # No free worker until the client has counted 2 s of waiting (or the hang guard's time).
    standin.pause(True)
    release = threading.Timer(HANG_GUARD_S, standin.pause, (False,))
    release.start()
    spec = JobSpec(source=Source(url=f"{media}/short_en.mp4"), formats=["srt", "vtt"])
    events, waits = [], []
    try:
        for event in backend(standin).run(spec):
            events.append(event)
            if isinstance(event, ProgressEvent) and event.stage == "queued":
                found = re.fullmatch(r"Waiting for a worker \((\d+) s\)", event.message)
                waits += [int(found[1])] if found else []
            if waits and waits[-1] >= 2:
                standin.pause(False)
    finally:
        release.cancel()
        standin.pause(False)

    assert waits == sorted(waits) and waits[-1] >= 2, waits
    assert any(isinstance(e, ProgressEvent) and e.stage == "transcribe" for e in events)
    streamed = [cue for e in events if isinstance(e, CuesEvent) for cue in e.cues]
    result = events[-1]
    assert isinstance(result, ResultEvent), result
    assert streamed and {c.id for c in streamed} == {c.id for c in result.cues}
    assert "summer" in " ".join(text_of(result.cues))
    assert {f.format for f in result.files} == {"srt", "vtt"}  # rendered by the worker
    assert percents(events) == sorted(percents(events)) and percents(events)[-1] == 100


def test_file_job_sends_compressed_audio_not_a_path(standin, workers, clips):
    before = set(standin.jobs)
    events = list(backend(standin).run(JobSpec(source=Source(path=str(clips.short.wav)))))

    result = events[-1]
    assert isinstance(result, ResultEvent), result
    assert "summer" in " ".join(text_of(result.cues)) and result.title == "short_en"
    assert any(isinstance(e, CuesEvent) for e in events)
    [job] = new_jobs(standin, before)
    source = job.input["source"]
    assert set(source) == {"audio_b64", "title"} and source["title"] == "short_en"
    sent = base64.b64decode(source["audio_b64"])
    assert sent.startswith(b"OggS") and b"OpusHead" in sent[:200]
    # 16 kHz mono Opus: a fraction of the WAV's size.
    assert len(sent) < clips.short.wav.stat().st_size / 8


def test_long_file_runs_as_parallel_parts_and_merges_like_one_local_run(
    standin, workers, weather, engine
):
    spec = JobSpec(source=Source(path=str(weather.wav)), whisper_model=MODEL)
    runner = backend(standin, chunk_s=weather.duration / 2.5)
    before = set(standin.jobs)
    events = list(runner.run(spec))

    remote = events[-1]
    assert isinstance(remote, ResultEvent), remote
    jobs = new_jobs(standin, before)
    assert len(jobs) == 3 and {job.status for job in jobs} == {"COMPLETED"}
    assert len({job.worker for job in jobs}) == 3  # one part per worker…
    assert max(job.started for job in jobs) < min(job.finished for job in jobs)  # …at once
    assert all(job.input["formats"] == [] for job in jobs)

    # The same file in one local run, with what the parts were sent (the title is the stem).
    local_spec = JobSpec(source=Source(path=str(weather.wav), title="weather"), whisper_model=MODEL)
    local = list(engine.run(local_spec))[-1]
    assert isinstance(local, ResultEvent), local
    # The same words at the same times. Not word for word: Whisper decodes a part in speech
    # chunks of its own (its first one short, for an early cue), and a word heard at another
    # place in a chunk is now and then heard otherwise ("very" / "Mary"). Cue splits may
    # differ too: a part decoded without the audio before it sometimes comes back without
    # punctuation, and then sentences share a cue.
    mine, theirs = timed_words(remote.cues), timed_words(local.cues)
    assert wer(" ".join(w.text for w in theirs), " ".join(w.text for w in mine)) <= 0.03
    matcher = difflib.SequenceMatcher(None, [w.text for w in mine], [w.text for w in theirs])
    for a, b, size in matcher.get_matching_blocks():
        for word, other in zip(mine[a : a + size], theirs[b : b + size], strict=True):
            assert abs(word.start - other.start) < 0.4 and abs(word.end - other.end) < 0.4, word
    first = 0
    for cue in remote.cues:  # each cue starts at its first word, on the whole file's clock
        assert abs(cue.start - mine[first].start) < 0.4, cue
        first += len(words(cue.text))

    ids = [cue.id for cue in remote.cues]
    assert len(set(ids)) == len(ids) and ids == sorted(ids)
    assert {cue.id // ID_STRIDE for cue in remote.cues} == {0, 1, 2}
    starts = [cue.start for cue in remote.cues]
    assert starts == sorted(starts)
    assert remote.language == "en" and remote.files == [] and remote.title == "weather"
    assert remote.duration == pytest.approx(weather.duration, abs=0.05)
    assert remote.timings["transcribe"] > 0 and remote.timings["wall"] > 0
    # The streamed cues are the result's, by id, at the same times.
    streamed = {cue.id: cue for e in events if isinstance(e, CuesEvent) for cue in e.cues}
    assert streamed == {cue.id: cue for cue in remote.cues}
    assert percents(events) == sorted(percents(events))


def test_parts_share_one_language_and_one_set_of_speakers(standin, workers, clips, engine):
    dialogue = clips.dialogue  # two voices, 53 s: three parts of about 21 s
    spec = JobSpec(source=Source(path=str(dialogue.wav)), whisper_model=MODEL, diarize="builtin")
    names = {"SPEAKER_1": "Tom"}
    runner = backend(standin, chunk_s=dialogue.duration / 2.5)
    before = set(standin.jobs)
    named = spec.model_copy(update={"speaker_names": names})
    events = list(runner.run(named))

    remote = events[-1]
    assert isinstance(remote, ResultEvent), remote
    jobs = new_jobs(standin, before)
    assert len(jobs) == 3 and {job.status for job in jobs} == {"COMPLETED"}
    # Detected once: the first part detects it, the others are sent once it is known.
    assert "source_lang" not in jobs[0].input
    assert [job.input["source_lang"] for job in jobs[1:]] == ["en", "en"]
    assert min(job.submitted for job in jobs[1:]) > jobs[0].started
    assert all(job.input["speaker_names"] == {} for job in jobs)

    # One set of speakers, named as the job asks, as right as one local run of the file.
    assert set(remote.speakers) == {"Tom", "SPEAKER_2"}
    assert {len(voice) for voice in remote.speakers.values()} == {256}
    local = list(engine.run(spec.model_copy(update={"source": Source(path=str(dialogue.wav))})))
    assert isinstance(local[-1], ResultEvent), local[-1]
    mine = frame_accuracy(cue_turns(remote.cues), dialogue)
    theirs = frame_accuracy(cue_turns(local[-1].cues), dialogue)
    assert mine >= 0.95 and mine >= theirs - 0.02, (mine, theirs)
    # Streamed cues carry no part's own label; the last batch brings the linked ones.
    streamed = [cue for e in events if isinstance(e, CuesEvent) for cue in e.cues]
    assert {c.speaker for c in streamed[: -len(remote.cues)]} == {None}
    assert streamed[-len(remote.cues) :] == remote.cues


def video_page(folder: Path, base_url: str, media_name: str, duration: float) -> str:
    """A page for `media_name` as video sites describe one (JSON-LD with the duration), written
    into the served `folder`; its URL."""
    data = {
        "@context": "https://schema.org",
        "@type": "VideoObject",
        # The title primes Whisper: a plain "A dialogue" leaves tiny.en hearing nothing in a
        # range that starts mid-sentence.
        "name": "Planning a summer holiday",
        "uploadDate": "2024-01-01",
        "contentUrl": f"{base_url}/{media_name}",
        "duration": f"PT{int(duration)}S",  # pages round to the second
    }
    script = f'<script type="application/ld+json">{json.dumps(data)}</script>'
    (folder / "watch.html").write_text(f"<html><head>{script}</head><body></body></html>")
    return f"{base_url}/watch.html"


def test_a_long_link_runs_as_time_ranges_and_keeps_each_word_once(
    standin, workers, clips, engine, tmp_path
):
    dialogue = clips.dialogue  # two voices, 53 s: three ranges of about 18 s
    (tmp_path / "dialogue.mp4").symlink_to(clips.dialogue_mp4)
    with serve_directory(tmp_path) as base:
        url = video_page(tmp_path, base, "dialogue.mp4", dialogue.duration)
        spec = JobSpec(source=Source(url=url), whisper_model=MODEL, diarize="builtin")
        before = set(standin.jobs)
        events = list(backend(standin, chunk_s=20.0).run(spec))

    remote = events[-1]
    assert isinstance(remote, ResultEvent), remote
    jobs = new_jobs(standin, before)
    assert len(jobs) == 3 and {job.status for job in jobs} == {"COMPLETED"}
    # Each worker gets the link and its range, a few seconds into each neighbour's.
    sources = [job.input["source"] for job in jobs]
    assert {source["url"] for source in sources} == {url}
    assert "start" not in sources[0] and "end" not in sources[-1]
    assert sources[0]["end"] > sources[1]["start"] and sources[1]["end"] > sources[2]["start"]
    assert "source_lang" not in jobs[0].input
    assert [job.input["source_lang"] for job in jobs[1:]] == ["en", "en"]

    # The words of one local run of the file: none lost or doubled where ranges meet.
    local = list(engine.run(JobSpec(source=Source(path=str(dialogue.wav)), whisper_model=MODEL)))
    assert isinstance(local[-1], ResultEvent), local[-1]
    mine, theirs = " ".join(text_of(remote.cues)), " ".join(text_of(local[-1].cues))
    assert wer(dialogue.script, mine) <= wer(dialogue.script, theirs) + 0.05, (mine, theirs)
    for _, sentence in DIALOGUE_EN:
        said = " ".join(words(sentence))
        assert mine.count(said) <= 1, said  # never doubled
        assert said in mine or said not in theirs, said  # never lost where one run hears it
    starts = [cue.start for cue in remote.cues]
    assert starts == sorted(starts) and len({c.id for c in remote.cues}) == len(remote.cues)
    assert remote.duration == pytest.approx(dialogue.duration, abs=0.1)
    assert len(remote.speakers) == 2 and {c.speaker for c in remote.cues} == set(remote.speakers)
    # Streamed cues are all kept (those near a seam wait for the result), then the result's.
    streamed = [cue for e in events if isinstance(e, CuesEvent) for cue in e.cues]
    assert {c.id for c in streamed} == {c.id for c in remote.cues}
    assert streamed[-len(remote.cues) :] == remote.cues


def test_a_seam_goes_to_a_pause_no_cue_crosses_and_each_cue_is_kept_once():
    def cue(id: int, *spans: tuple[float, float]) -> Cue:
        timed = [Word(start=a, end=b, text=f"w{a:g}") for a, b in spans]
        return Cue(id=id, start=spans[0][0], end=spans[-1][1], text="x", words=timed)

    # Part 1 heard up to 25 s, part 2 from 15 s; their even boundary is 20 s. A pause at 19.5
    # lies inside part 2's cue 18-21.5; the pause at 22.5 is crossed by no cue.
    before = [cue(1, (14, 16), (16.2, 18)), cue(2, (18, 19.3), (19.7, 22)), cue(3, (23, 24.9))]
    after = [
        cue(11, (15.2, 16), (16.2, 18)),
        cue(12, (18, 19.3), (19.7, 21.5), (21.6, 22)),
        cue(13, (23, 25)),
    ]
    assert _seam(20.0, before, after) == pytest.approx(22.5)
    results = [
        ResultEvent(cues=before, language="en", duration=25.0),
        ResultEvent(cues=after, language="en", duration=25.0),
    ]
    parts = [audio.Piece(0, 0.0, 20.0), audio.Piece(1, 20.0, 40.0)]
    kept = _seamed([_Part(p.index, p) for p in parts], results)
    assert [c.id for c in kept[0].cues] == [1, 2] and [c.id for c in kept[1].cues] == [13]


def cue_turns(cues: list[Cue], bridge_s: float = 1.0) -> list[Turn]:
    """Speaker turns read from cues: one speaker's consecutive cues less than `bridge_s` apart
    are one turn, so the score measures who speaks, not the gaps cue timing leaves inside a
    sentence."""
    turns: list[Turn] = []
    for cue in cues:
        speaker = cue.speaker or ""
        if turns and turns[-1].speaker == speaker and cue.start - turns[-1].end < bridge_s:
            turns[-1] = Turn(turns[-1].start, cue.end, speaker)
        else:
            turns.append(Turn(cue.start, cue.end, speaker))
    return turns


def test_the_cli_runs_sources_at_once_on_the_endpoint(standin, workers, clips, tmp_path):
    second = tmp_path / "second.wav"
    second.write_bytes(clips.short.wav.read_bytes())
    url = f"{standin.url}/v2/{ENDPOINT}/runsync"  # as pasted: the route is trimmed
    env = {**os.environ, "SUBTIDE_BACKEND_KEY": API_KEY}
    cli = [sys.executable, "-m", "app.cli"]
    out = tmp_path / "out"
    done = subprocess.run(
        [
            *cli,
            "run",
            str(clips.short.wav),
            str(second),
            "--backend",
            url,
            "-j",
            "2",
            "-o",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["second.srt", "short_en.srt"]
    assert "summer" in (out / "second.srt").read_text().lower()
    # The two jobs ran at once, on two workers.
    jobs = list(standin.jobs.values())[-2:]
    assert len({job.worker for job in jobs}) == 2
    assert max(job.started for job in jobs) < min(job.finished for job in jobs)

    check = subprocess.run(
        [*cli, "check", url], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "RunPod serverless endpoint (queue)" in check.stdout and "idle" in check.stdout
    wrong = subprocess.run(
        [*cli, "check", url, "--key", "rpa_wrong"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )
    assert wrong.returncode == 1 and "Read/Write" in wrong.stdout
    assert "rpa_wrong" not in wrong.stdout + wrong.stderr


def test_lost_stream_chunks_are_taken_from_the_status_output(standin, workers, clips):
    standin.drop_stream = 10_000  # /stream returns nothing of this job
    try:
        events = list(backend(standin).run(JobSpec(source=Source(path=str(clips.short.wav)))))
    finally:
        standin.drop_stream = 0

    result = events[-1]
    assert isinstance(result, ResultEvent), result
    assert "summer" in " ".join(text_of(result.cues))
    [cues] = [e for e in events if isinstance(e, CuesEvent)]
    assert cues.cues == result.cues


def test_health_counts_workers(standin, workers):
    health = backend(standin).health()
    assert health.ok and health.device is None and health.version == "serverless"
    assert re.fullmatch(r"\d workers idle, \d running; \d+ jobs queued", health.message)
    with serve_runpod(api_key=API_KEY, endpoint_id=ENDPOINT) as empty:
        message = backend(empty).health().message
    assert message.startswith("no worker running: the first job starts one (cold start")


# --- Cancel, failures, timeouts ------------------------------------------------------------


def test_cancel_stops_every_part_and_the_workers_take_the_next_jobs(standin, workers, clips):
    runner = backend(standin, chunk_s=clips.dialogue.duration / 2.5)
    before = set(standin.jobs)
    events, thread = consume(runner, JobSpec(source=Source(path=str(clips.dialogue.wav))))

    def transcribing() -> bool:
        jobs = new_jobs(standin, before)
        running = len(jobs) == 3 and all(job.status == "IN_PROGRESS" for job in jobs)
        return running and any(getattr(e, "stage", "") == "transcribe" for e in events)

    wait_for(transcribing, 120, "the parts did not start")
    runner.cancel()  # from this thread, as the app's Cancel button does
    thread.join(30)

    assert not thread.is_alive()
    last = events[-1]
    assert isinstance(last, ErrorEvent) and last.code == "cancelled", last
    jobs = new_jobs(standin, before)
    assert len(jobs) == 3 and {job.status for job in jobs} == {"CANCELLED"}
    busy = {job.worker for job in jobs}
    assert len(busy) == 3

    # Each worker stops its part and takes the next job: three parts, held back until all
    # three workers wait for one, so each takes one.
    short = clips.short
    after = set(standin.jobs)
    standin.pause(True)
    try:
        wait_for(lambda: standin.taking >= busy, 60, "a worker did not stop its part")
        runner = backend(standin, chunk_s=short.duration / 2.5)
        # The language given, the parts need not wait for the first one's: all go at once.
        spec = JobSpec(source=Source(path=str(short.wav)), source_lang="en")
        events, thread = consume(runner, spec)
        wait_for(lambda: len(standin.queue) == 3, 30, "the parts were not sent")
    finally:
        standin.pause(False)
    thread.join(60)
    assert isinstance(events[-1], ResultEvent), events[-1]
    again = new_jobs(standin, after)
    assert {job.worker for job in again} == busy and {j.status for j in again} == {"COMPLETED"}


def test_failed_job_reports_the_workers_error_and_hint(standin, workers, media, engine):
    spec = JobSpec(source=Source(url=f"{media}/missing.mp4"))
    events = list(backend(standin).run(spec))
    local = list(engine.run(spec))[-1]

    error = events[-1]
    assert isinstance(error, ErrorEvent) and isinstance(local, ErrorEvent)
    assert error == local and error.code == "source_unavailable" and error.hint

    # Without the streamed Event, the status' error still says what happened.
    standin.drop_stream = 10_000
    try:
        events = list(backend(standin).run(spec))
    finally:
        standin.drop_stream = 0
    error = events[-1]
    assert isinstance(error, ErrorEvent) and error.code == "backend_unavailable"
    assert local.message in error.message and "RunPod console" in (error.hint or "")


def test_execution_timeout_is_explained(standin, workers, clips):
    before = set(standin.jobs)
    runner = backend(standin, execution_timeout_s=1.0)
    events = list(runner.run(_path(clips.dialogue.wav)))

    error = events[-1]
    assert isinstance(error, ErrorEvent), error
    assert error.code == "backend_unavailable" and "execution timeout" in error.message
    assert "execution timeout" in (error.hint or "") and "pod" in (error.hint or "")
    [job] = new_jobs(standin, before)
    assert job.status == "TIMED_OUT"


def test_wrong_key_wrong_endpoint_and_no_endpoint(standin, clips):
    spec = _path(clips.short.wav)
    wrong_key = backend(standin, key="rpa_wrong")
    error = list(wrong_key.run(spec))[-1]
    assert isinstance(error, ErrorEvent) and error.code == "auth"
    assert "refused the key (401)" in error.message
    assert error.hint == wrong_key.target.hint(401) and "Read/Write" in error.hint
    with pytest.raises(AuthError):
        wrong_key.health()

    wrong_id = backend(standin, endpoint="ep-nope")
    error = list(wrong_id.run(spec))[-1]
    assert isinstance(error, ErrorEvent) and error.code == "backend_unavailable"
    assert error.hint == wrong_id.target.hint(404) and "ep-nope" in error.hint
    with pytest.raises(NotFoundError):
        wrong_id.health()

    target = Target.assume(Kind.SERVERLESS, "http://127.0.0.1:9/v2/ep-gone")
    gone = ServerlessBackend(target.url, API_KEY, target=target, retries=1, backoff_s=0.05)
    with pytest.raises(UnreachableError):
        gone.health()
    error = list(gone.run(spec))[-1]
    assert isinstance(error, ErrorEvent) and error.code == "backend_unavailable"
    assert "Could not reach" in error.message


def test_a_bad_file_is_refused_before_anything_is_sent(standin, tmp_path):
    before = set(standin.jobs)
    text = tmp_path / "notes.txt"
    text.write_text("not audio")
    for path in (text, tmp_path / "absent.mp4"):
        error = list(backend(standin).run(_path(path)))[-1]
        assert isinstance(error, ErrorEvent) and error.code == "bad_input"
        assert path.name in error.message and str(tmp_path) not in error.message
    # Audio the caller encoded itself, too big for one request to RunPod.
    big = JobSpec(source=Source(audio_b64=base64.b64encode(bytes(8_000_000)).decode()))
    error = list(backend(standin).run(big))[-1]
    assert isinstance(error, ErrorEvent) and error.code == "bad_input" and "10 MB" in error.message
    assert set(standin.jobs) == before


# --- Lost workers ---------------------------------------------------------------------------


def test_a_lost_worker_is_retried_elsewhere_and_a_second_loss_fails(standin, workers, clips):
    clip = synthesize(DIALOGUE_EN[:6], fixture_dir(), "serverless_retry", gap=0.7)
    runner = backend(standin)

    before = set(standin.jobs)
    events, thread = consume(runner, _path(clip.wav))
    job = _when_transcribing(standin, before)
    first = job.worker
    workers.kill(first)
    thread.join(120)
    result = events[-1]
    assert isinstance(result, ResultEvent), result
    assert text_of(result.cues)[:4] == ["have", "you", "decided", "where"]
    assert job.losses == 1 and job.workers[0] == first and job.workers[-1] != first
    assert standin.health()["jobs"]["retried"] >= 1

    # Transcribed for real again: from the cache the retry could finish before it is seen
    # running, and there would be nothing left to lose.
    workers.forget()
    before = set(standin.jobs)
    events, thread = consume(runner, _path(clip.wav))
    job = _when_transcribing(standin, before)
    workers.kill(job.worker)
    wait_for(lambda: job.attempt == 2 and job.status == "IN_PROGRESS", 30, "no retry")
    workers.kill(job.worker)
    thread.join(60)
    error = events[-1]
    assert isinstance(error, ErrorEvent) and error.code == "backend_unavailable", error
    assert WORKER_LOST in error.message and "RunPod console" in (error.hint or "")
    assert job.status == "FAILED"


def _when_transcribing(standin: StandIn, before: set[str]) -> Job:
    """The one new job, once its worker says it is transcribing (the model is at work)."""

    def transcribing() -> bool:
        jobs = new_jobs(standin, before)
        return bool(jobs) and any(chunk.get("stage") == "transcribe" for chunk in jobs[0].chunks)

    wait_for(transcribing, 120, "the job did not start transcribing")
    return new_jobs(standin, before)[0]


def test_pieces_are_cut_in_the_pause_nearest_each_boundary():
    pauses = [audio.Silence(9.0, 9.6), audio.Silence(11.5, 12.5), audio.Silence(25.0, 26.0)]
    pieces = audio.plan_pieces(30.0, pauses, chunk_s=10.0)
    # 10 → the pause at 9.0–9.6; 20 → no pause within 2 s, so the boundary itself.
    assert [(p.start, p.end) for p in pieces] == [(0.0, 9.3), (9.3, 20.0), (20.0, 30.0)]
    assert audio.plan_pieces(8.0, pauses, chunk_s=10.0) == [audio.Piece(0, 0.0, 8.0)]


def test_labels_are_linked_by_voice_never_within_a_part_and_within_the_counts_given():
    def label(part: int, name: str, *voice: float) -> speakers.Label:
        return speakers.Label(part, name, voice)

    labels = [
        label(0, "SPEAKER_1", 1.0, 0.0),
        label(0, "SPEAKER_2", 0.0, 1.0),
        label(1, "SPEAKER_1", 0.1, 1.0),
        label(1, "SPEAKER_2", 1.0, 0.1),
        label(2, "SPEAKER_1", 0.7, 0.7),  # like neither voice (cosine 0.71)
        label(2, "SPEAKER_2"),  # a worker that gave no voice
    ]
    found = [{(x.part, x.name) for x in group} for group in speakers.link(labels)]
    assert {(0, "SPEAKER_1"), (1, "SPEAKER_2")} in found
    assert {(0, "SPEAKER_2"), (1, "SPEAKER_1")} in found
    assert len(found) == 4
    assert len(speakers.link(labels, max_speakers=3)) == 3
    forced = speakers.link(labels, num_speakers=2)
    assert len(forced) == 2 and all(len({x.part for x in g}) == len(g) for g in forced)
