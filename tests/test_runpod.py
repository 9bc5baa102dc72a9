"""The serverless handler in the runpod SDK's real worker loop, against a stand-in for RunPod's
control plane (tests/support/runpod_standin.py), and in the SDK's own dev server."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import wave
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.protocol import ErrorEvent, ResultEvent, parse_event
from tests.support.http_server import serve_directory
from tests.support.runpod_standin import TERMINAL, StandIn, serve_runpod
from tests.support.runpod_workers import WorkerPool, wait_for
from tests.support.synth import DIALOGUE_EN, Clip, synthesize

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ENDPOINT = "ep-test"


def _env(cache_root: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")}
    env.update(
        CACHE_DIR=str(cache_root),
        WHISPER_MODEL="bundled:tiny.en",
        SUBTIDE_ALLOW_PRIVATE_URLS="true",
        HF_HUB_OFFLINE="1",
        # The SDK's start-up checks open a connection to a public DNS server: not from tests.
        RUNPOD_SKIP_AUTO_SYSTEM_CHECKS="true",
    )
    env.update(extra)
    return env


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def media(clips) -> Iterator[str]:
    with serve_directory(clips.short_mp4.parent) as url:
        yield url


@pytest.fixture(scope="module")
def standin() -> Iterator[StandIn]:
    with serve_runpod(api_key="rpa_test", endpoint_id=ENDPOINT) as server:
        yield server


@pytest.fixture(scope="module")
def worker(standin, cache_root, tmp_path_factory) -> Iterator[Path]:
    """One worker started the way the image starts it; yields its log file."""
    # The SDK keeps its job list in `.runpod_jobs.pkl` in the working directory.
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    env = _env(cache_root, {"MODE": "serverless", **standin.worker_env(ENDPOINT)})
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["bash", str(ROOT / "runpod" / "start.sh")],
            env=env,
            cwd=log.parent,
            stdout=out,
            stderr=out,
        )
    try:
        yield log
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def client(standin, worker) -> Iterator[httpx.Client]:
    headers = {"Authorization": "Bearer rpa_test"}
    base = f"{standin.url}/v2/{ENDPOINT}"
    with httpx.Client(base_url=base, headers=headers, timeout=120) as http:
        yield http


def _follow(client: httpx.Client, job_id: str, timeout_s: float = 60) -> tuple[list, dict]:
    """Reads `/stream` until the job ends; returns the streamed chunks and the final `/status`."""
    chunks: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        page = client.get(f"/stream/{job_id}").raise_for_status().json()
        chunks += [item["output"] for item in page["stream"]]
        if page["status"] in TERMINAL:
            return chunks, client.get(f"/status/{job_id}").raise_for_status().json()
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not end in {timeout_s} s")


def _result(output: list[dict]) -> ResultEvent:
    events = [parse_event(item) for item in output]
    assert isinstance(events[-1], ResultEvent), events[-1]
    return events[-1]


def test_url_job_streams_events_and_completes(standin, client, media):
    # Faults a real control plane has: a failed job-take and a lost stream post.
    standin.fail_get_job = 1
    standin.drop_stream = 1
    spec = {"source": {"url": f"{media}/short_en.mp4"}, "formats": ["srt", "vtt"]}
    job = client.post("/run", json={"input": spec}).raise_for_status().json()
    assert job["status"] == "IN_QUEUE"

    chunks, status = _follow(client, job["id"])

    assert status["status"] == "COMPLETED", status
    result = _result(status["output"])
    assert result.cues and "summer" in " ".join(c.text for c in result.cues).lower()
    assert {f.format for f in result.files} == {"srt", "vtt"}
    # The aggregated output holds every Event; the stream lost only the dropped one.
    assert len(chunks) == len(status["output"]) - 1
    assert chunks[-1] == status["output"][-1]


def test_bad_input_fails_with_our_message(client):
    job = client.post("/run", json={"input": {"source": {"url": "x"}, "formats": ["doc"]}})
    chunks, status = _follow(client, job.json()["id"])

    assert status["status"] == "FAILED"
    assert "formats.0" in status["error"] and "Invalid job input" in status["error"]
    assert "(send {'input': {...}}" in status["error"]  # the hint, in /status too
    error = parse_event(chunks[-1])
    assert isinstance(error, ErrorEvent) and error.code == "bad_input"


def test_path_source_is_refused(client):
    body = {"input": {"source": {"path": "/etc/passwd"}}}
    status = client.post("/runsync", json=body).raise_for_status().json()
    assert status["status"] == "FAILED"
    assert "source.path" in status["error"]


def test_a_video_output_is_refused_with_the_reason(client, media):
    body = {"input": {"source": {"url": f"{media}/short_en.mp4"}, "formats": ["video_soft"]}}
    status = client.post("/runsync", json=body).raise_for_status().json()
    assert status["status"] == "FAILED"
    assert "video_soft can't be made on RunPod serverless" in status["error"]
    assert "does not fit in its job payloads" in status["error"]


def test_the_worker_holds_jobs_to_its_limits(client):
    """A serverless worker spends its owner's LLM key and GPU like a pod: the same limits."""
    for asked, words in (
        ({"whisper_model": "/etc"}, "does not offer"),
        (
            {
                "target_langs": [
                    f"de-{c}"
                    for c in ["AT", "CH", "DE", "LU", "LI", "BE", "IT", "NA", "DK", "FR", "PL"]
                ]
            },
            "at most",
        ),
        ({"target_langs": ["en-QQ"]}, "region"),
    ):
        body = {"input": {"source": {"url": "http://example.com/a.mp4"}, **asked}}
        status = client.post("/runsync", json=body).raise_for_status().json()
        assert status["status"] == "FAILED" and words in status["error"], status


STOPPED = re.compile(r"job (\S+): engine stopped ([0-9.]+) s after the stop")
STOPPING = re.compile(r"^(\S+ \S+) INFO subtide.runpod: job (\S+): .*; stopping the engine$", re.M)


def _stop_latencies(log: Path) -> dict[str, float]:
    """Per job, the seconds the engine took to stop once the worker heard of the stop, as the
    worker itself measured and logged them."""
    return {m[1]: float(m[2]) for m in STOPPED.finditer(log.read_text())}


def _stop_latency(log: Path, job_id: str) -> float:
    wait_for(lambda: job_id in _stop_latencies(log), 30, f"job {job_id}: the engine did not stop")
    return _stop_latencies(log)[job_id]


def _heard(log: Path) -> dict[str, float]:
    """Per job, when (time.time()) the worker's handler heard of its stop, by the worker's log
    (in local time, as `timestamp` reads it)."""
    return {
        m[2]: datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S.%f").timestamp()
        for m in STOPPING.finditer(log.read_text())
    }


def _transcripts(cache_root: Path) -> set[Path]:
    return set((cache_root / "transcripts").rglob("*.json"))


@pytest.fixture(scope="module")
def long_clip(clips) -> Clip:
    """About 90 s of speech, beside the clips `media` serves: long enough to cancel mid-way."""
    return synthesize(DIALOGUE_EN * 2, clips.short_mp4.parent, "dialogue_long", gap=0.7)


def test_cancel_reaches_the_engine_at_once(
    standin, client, media, clips, worker, long_clip, cache_root
):
    """Issue 16: the worker hears of a cancel at once (its event loop is never blocked), stops
    the engine then, caches nothing of the job, and takes the next job as soon as the engine
    has stopped."""
    before = _transcripts(cache_root)
    spec = {"source": {"url": f"{media}/{long_clip.wav.name}"}}
    heard, stopped = [], []
    for _ in range(5):
        job_id = client.post("/run", json={"input": spec}).json()["id"]
        deadline = time.monotonic() + 60
        # Cancelled while it transcribes: once its first cues have come.
        while not any(chunk.get("type") == "cues" for chunk in _chunks(standin, job_id)):
            assert time.monotonic() < deadline, "no cues came"
            time.sleep(0.05)
        cancelled = client.post(f"/cancel/{job_id}").raise_for_status().json()
        assert cancelled["status"] == "CANCELLED"
        stopped.append(_stop_latency(worker, job_id))
        job = standin.jobs[job_id]
        assert job.done_posts == 0  # the SDK stopped the job before its end
        assert job.stop_sent is not None
        heard.append(_heard(worker)[job_id] - job.stop_sent)

    audio = base64.b64encode(clips.short.wav.read_bytes()).decode()
    status = client.post("/runsync", json={"input": {"source": {"audio_b64": audio}}}).json()
    assert status["status"] == "COMPLETED", status
    assert _result(status["output"]).cues
    # Nothing of a cancelled job was cached: only the short clip's transcript is new.
    assert len(_transcripts(cache_root) - before) <= 1
    print(f"stop handed over → handler heard it (s): {sorted(heard)}")
    print(f"handler heard it → engine stopped (s), the worker's clock: {sorted(stopped)}")
    # The handler's part, on one machine's clock: the SDK's loop was free to hear the stop
    # (it was blocked 1.8-2.2 s between events before). The median: a busy CI may stall one.
    assert statistics.median(heard) < 0.5, heard
    # The bound: the model's process is killed within 1 s of the stop (the median: a
    # busy CI may stall one; a window it would otherwise finish takes 1-3 s on a CPU).
    assert statistics.median(stopped) < 1.0, stopped
    assert max(stopped) < 10, stopped  # a hang guard


def _chunks(standin: StandIn, job_id: str) -> list[Any]:
    with standin.changed:
        return list(standin.jobs[job_id].chunks)


def test_execution_timeout_stops_the_engine_and_health(standin, client, media, clips, worker):
    # A title of its own (it is the prompt, so part of the transcript's cache key): a cached
    # transcript is too quick to time out.
    source = {"url": f"{media}/{clips.dialogue_mp4.name}", "title": "Timeout"}
    body = {"input": {"source": source}, "policy": {"executionTimeout": 1500}}
    job_id = client.post("/run", json=body).json()["id"]
    _, status = _follow(client, job_id)
    assert status["status"] == "TIMED_OUT"
    assert _stop_latency(worker, job_id) < 10  # a hang guard; the bound is asserted above

    health = client.get("/health").raise_for_status().json()
    assert (
        health["jobs"]["completed"] >= 2
        and health["workers"]["idle"] + health["workers"]["running"] == 1
    )


def test_an_upload_that_is_not_media_fails_whole(client):
    """/status carries the message and its hint, and names no temporary file."""
    audio = base64.b64encode(b"this is a text file, not a recording").decode()
    body = {"input": {"source": {"audio_b64": audio, "title": "notes"}}}
    status = client.post("/runsync", json=body).raise_for_status().json()

    assert status["status"] == "FAILED", status
    assert status["error"].startswith("The uploaded file is not an audio or video file")
    assert "(Check that it plays" in status["error"]
    assert "upload-" not in status["error"]


def test_the_hub_test_input_comes_back_with_cues(client):
    """.runpod/tests.json's own input, as RunPod's Hub sends it: its speech must give cues."""
    hub = json.loads((ROOT / ".runpod" / "tests.json").read_text())
    for test in hub["tests"]:
        assert len(json.dumps(test["input"])) < 100_000
        status = client.post("/runsync", json={"input": test["input"]}).json()
        assert status["status"] == "COMPLETED", status
        result = _result(status["output"])
        assert "summer" in " ".join(cue.text for cue in result.cues).lower()


def test_a_job_that_requires_cues_fails_without_them(client):
    silence = io.BytesIO()
    with wave.open(silence, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(b"\0\0" * 16000)
    audio = base64.b64encode(silence.getvalue()).decode()
    body = {"input": {"source": {"audio_b64": audio}, "require_cues": True}}
    status = client.post("/runsync", json=body).raise_for_status().json()

    assert status["status"] == "FAILED", status
    assert "none came back" in status["error"] and "WHISPER_MODEL" in status["error"]


def test_the_worker_logs_no_subtitle_text(worker):
    """The SDK logs at INFO, not at its default DEBUG, which prints every chunk."""
    text = worker.read_text().lower()
    assert "summer" not in text and "kettle" not in text
    assert "stream output" not in text


def test_a_worker_told_to_stop_stops_its_job_unfinished(media, long_clip, cache_root, tmp_path):
    """SIGTERM: the SDK alone would finish the running job first, however long; the worker stops
    the engine and leaves the job unanswered, for RunPod to give to another worker."""
    with serve_runpod(endpoint_id="ep-shutdown") as other:
        pool = WorkerPool(other, "ep-shutdown", tmp_path)
        pool.ensure(["w1"])
        try:
            job = other.submit({"input": {"source": {"url": f"{media}/{long_clip.wav.name}"}}})
            wait_for(lambda: any(c.get("type") == "cues" for c in job.chunks), 60, "no cues")
            pool.processes["w1"].send_signal(signal.SIGTERM)
            # The worker exits (its engine thread with it) once its SDK's open polls return.
            pool.processes["w1"].wait(timeout=30)
        finally:
            pool.stop()
        assert job.id in _heard(pool.logs["w1"])
        assert job.done_posts == 0 and job.status == "IN_PROGRESS"


def test_client_api_needs_the_key(standin):
    response = httpx.get(f"{standin.url}/v2/{ENDPOINT}/health")
    assert response.status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert httpx.post(f"{standin.url}/v2/{ENDPOINT}/run", headers=wrong).status_code == 401


def test_sdk_dev_server_smoke(clips, cache_root, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, str(ROOT / "runpod" / "handler.py"), "--rp_serve_api"]
    command += ["--rp_api_port", str(port)]
    process = subprocess.Popen(
        command,
        env=_env(cache_root, {}),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://localhost:{port}"
        audio = base64.b64encode(clips.short.wav.read_bytes()).decode()
        deadline = time.monotonic() + 60
        while True:
            try:
                job = httpx.post(f"{base}/run", json={"input": {"source": {"audio_b64": audio}}})
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the dev server did not start"
                time.sleep(0.3)
        # The dev server runs a job when its status is first read.
        status = httpx.post(f"{base}/status/{job.json()['id']}", timeout=120).json()
        assert status["status"] == "COMPLETED", status
        assert _result(status["output"]).cues
    finally:
        _stop(process)


def test_start_script_rejects_unknown_mode():
    done = subprocess.run(
        ["bash", str(ROOT / "runpod" / "start.sh")],
        env={**os.environ, "MODE": "bogus"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "unknown MODE 'bogus'" in done.stderr
