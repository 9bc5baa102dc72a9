"""The serverless handler in the runpod SDK's real worker loop, against a stand-in for RunPod's
control plane (tests/support/runpod_standin.py), and in the SDK's own dev server."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.protocol import ErrorEvent, ResultEvent, parse_event
from tests.support.http_server import serve_directory
from tests.support.runpod_standin import TERMINAL, StandIn, serve_runpod

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
    error = parse_event(chunks[-1])
    assert isinstance(error, ErrorEvent) and error.code == "bad_input"


def test_path_source_is_refused(client):
    body = {"input": {"source": {"path": "/etc/passwd"}}}
    status = client.post("/runsync", json=body).raise_for_status().json()
    assert status["status"] == "FAILED"
    assert "source.path" in status["error"]


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


def test_cancel_stops_the_job_and_the_worker_takes_the_next(standin, client, media, clips, worker):
    spec = {"source": {"url": f"{media}/{clips.dialogue_mp4.name}"}}
    job_id = client.post("/run", json={"input": spec}).json()["id"]
    deadline = time.monotonic() + 60
    while not client.get(f"/stream/{job_id}").json()["stream"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cancelled = client.post(f"/cancel/{job_id}").raise_for_status().json()
    assert cancelled["status"] == "CANCELLED"

    audio = base64.b64encode(clips.short.wav.read_bytes()).decode()
    body = {"input": {"source": {"audio_b64": audio}}}
    status = client.post("/runsync", json=body).raise_for_status().json()

    assert status["status"] == "COMPLETED", status
    assert _result(status["output"]).cues
    assert client.get(f"/status/{job_id}").json()["status"] == "CANCELLED"
    assert standin.jobs[job_id].done_posts == 0  # the SDK stopped the job before its end
    assert f"job {job_id} stopped by RunPod; cancelling the engine" in worker.read_text()


def test_execution_timeout_and_health(standin, client, media, clips):
    # A title of its own (it is the prompt, so part of the transcript's cache key): the cancelled
    # job above may have finished transcribing this clip, and a cached transcript is too quick.
    source = {"url": f"{media}/{clips.dialogue_mp4.name}", "title": "Timeout"}
    body = {"input": {"source": source}, "policy": {"executionTimeout": 300}}
    job_id = client.post("/run", json=body).json()["id"]
    _, status = _follow(client, job_id)
    assert status["status"] == "TIMED_OUT"

    health = client.get("/health").raise_for_status().json()
    assert (
        health["jobs"]["completed"] >= 2
        and health["workers"]["idle"] + health["workers"]["running"] == 1
    )


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
