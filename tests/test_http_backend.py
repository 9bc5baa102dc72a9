"""HttpBackend against our real server under uvicorn on 127.0.0.1 with the real engine: uploads,
URL jobs, a stream cut by a real TCP proxy and resumed, a cold start, auth, cancel, and a
backend that is not there."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from app.config import Settings
from app.server import ServerOptions, create_app
from cloud.detect import Kind, Target
from cloud.http import HttpBackend, read_sse
from cloud.transport import AuthError, UnreachableError
from engine.pipeline import Engine
from engine.protocol import (
    CuesEvent,
    ErrorEvent,
    Event,
    JobSpec,
    ProgressEvent,
    ResultEvent,
    Source,
    parse_event,
)
from tests.support.api_server import closed_port, running, wait_ready
from tests.support.http_server import serve_directory
from tests.support.tcp_proxy import tcp_proxy
from tests.support.timing import HANG_GUARD_S
from tests.support.wer import wer

pytestmark = pytest.mark.slow

MODEL = "bundled:tiny.en"
# The test server's own access token, made up here.
TOKEN = "test-token-for-the-http-backend"
STARTING = "The backend is starting (cold start)"


@dataclass
class Pod:
    url: str
    media: str  # base URL of the fixture clips
    client: httpx.Client  # straight to the server, with the token


@pytest.fixture(scope="module")
def pod(clips, cache_root) -> Iterator[Pod]:
    """One server for the module, as a pod runs it: a token, the bundled tiny model, private
    URLs allowed (the clips are served on 127.0.0.1), a quick heartbeat."""
    with serve_directory(clips.short_mp4.parent) as media:
        settings = Settings(
            whisper_model=MODEL, cache_dir=cache_root, subtide_allow_private_urls=True
        )
        options = ServerOptions(auth_token=TOKEN, rate_limit_per_minute=0, heartbeat_s=0.5)
        app = create_app(settings, mount_ui=False, server_options=options)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with (
            running(app) as url,
            httpx.Client(base_url=url, headers=headers, timeout=60) as client,
        ):
            wait_ready(client)
            yield Pod(url, media, client)


def backend(url: str, key: str | None = TOKEN, kind: Kind = Kind.HTTP, **options) -> HttpBackend:
    return HttpBackend(url, key, target=Target.assume(kind, url), **options)


def fresh(name: str) -> str:
    """A title no earlier job had: the title is part of Whisper's prompt, so the transcript
    cache misses and the job really runs."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def server_events(pod: Pod, job_id: str) -> list[Event]:
    """Every event of the job, as the server keeps them."""
    with pod.client.stream("GET", f"/api/jobs/{job_id}/events") as response:
        return [parse_event(m.data) for m in read_sse(response.iter_lines())]


def check_run(events: list[Event]) -> ResultEvent:
    """Progress that never goes down, cues before the result, which is last."""
    percents = [e.percent for e in events if isinstance(e, ProgressEvent)]
    assert percents and percents == sorted(percents)
    assert any(isinstance(e, CuesEvent) for e in events)
    assert isinstance(events[-1], ResultEvent), events[-1]
    return events[-1]


def transcript(result: ResultEvent) -> str:
    return " ".join(cue.text for cue in result.cues)


def test_sse_lines_become_messages():
    lines = ["id: 0", "event: progress", "data: {}", "", ": ping", "", "id: 1", "data: a"]
    lines += ["data: b", "", "id: 2", "data: cut off before its blank line"]
    messages = list(read_sse(lines))
    assert [(m.id, m.event, m.data) for m in messages] == [
        (0, "progress", "{}"),
        (1, "message", "a\nb"),
    ]


def test_health_reports_the_server_and_checks_the_key(pod):
    with backend(pod.url) as right:
        health = right.health()
    assert health.ok and health.model == MODEL and health.device == "cpu"
    assert health.version and health.message.startswith("Ready")
    for key in ("wrong-key", None):
        with backend(pod.url, key) as wrong, pytest.raises(AuthError) as refused:
            wrong.health()
        assert "SUBTIDE_AUTH_TOKEN" in refused.value.hint
        assert TOKEN not in refused.value.message


def test_an_upload_streams_progress_cues_and_result(pod, clips):
    title = fresh("upload")
    job = JobSpec(source=Source(path=str(clips.short_mp4), title=title), formats=["srt", "vtt"])
    with backend(pod.url) as client:
        events = list(client.run(job))
        job_id = client.job_id
    result = check_run(events)
    assert result.title == title
    assert wer(clips.short.script, transcript(result)) < 0.35
    assert {f.format for f in result.files} == {"srt", "vtt"}
    assert events == server_events(pod, job_id)


def test_a_url_job_runs_on_the_server(pod, clips):
    job = JobSpec(source=Source(url=f"{pod.media}/short_en.mp4", title=fresh("url")))
    with backend(pod.url, kind=Kind.POD) as client:
        result = check_run(list(client.run(job)))
    assert wer(clips.short.script, transcript(result)) < 0.35
    assert pod.client.get(f"/api/jobs/{client.job_id}").json()["status"] == "done"


def _run_and_cut(client: HttpBackend, proxy, job: JobSpec) -> list[Event]:
    """Runs `job`; after its second event the proxy lets 300 more bytes through, then cuts
    every connection: mid-stream, most likely in the middle of an event."""
    events = []
    for event in client.run(job):
        events.append(event)
        if len(events) == 2:
            proxy.cut_after(300)
    return events


def test_a_cut_stream_resumes_after_the_last_event_seen(pod):
    job = JobSpec(source=Source(url=f"{pod.media}/short_en.mp4", title=fresh("resume")))
    with tcp_proxy(pod.url) as proxy:
        with backend(proxy.url, reconnect_backoff_s=0.05) as client:
            events = _run_and_cut(client, proxy, job)
            job_id = client.job_id
        sent = b"".join(proxy.requests()).decode("latin-1")
    assert proxy.cuts == 1
    check_run(events)
    # One reconnect, asking for what follows the last whole event it had.
    streams = re.findall(rf"GET /api/jobs/{job_id}/events HTTP/1.1\r\n(.*?)\r\n\r\n", sent, re.S)
    assert len(streams) == 2
    resumed = re.findall(r"(?im)^last-event-id: (\d+)$", streams[1])
    assert len(resumed) == 1 and 1 <= int(resumed[0]) < len(events) - 1
    assert "last-event-id" not in streams[0].lower()
    # Nothing missing, nothing twice: exactly the server's events, ids 0..N in order.
    assert events == server_events(pod, job_id)


def test_when_reconnects_run_out_the_job_record_gives_the_result(pod):
    job = JobSpec(source=Source(url=f"{pod.media}/short_en.mp4", title=fresh("record")))
    with tcp_proxy(pod.url) as proxy, backend(proxy.url, reconnects=0, status_poll_s=0.1) as client:
        events = _run_and_cut(client, proxy, job)
        job_id = client.job_id
    assert proxy.cuts == 1
    notes = [e for e in events if isinstance(e, ProgressEvent) and "Lost the live" in e.message]
    assert len(notes) <= 1  # none when the job had already ended by the first look
    # The cues that streamed before the cut, then the result with all of them.
    assert events[-1] == server_events(pod, job_id)[-1]
    percents = [e.percent for e in events if isinstance(e, ProgressEvent)]
    assert percents == sorted(percents)


def test_a_cold_start_is_shown_then_the_job_runs(clips, cache_root):
    """A server whose models are still loading: /ping says 204 until its engine is built (held
    back until the client has shown the cold start, so the test sees it every time)."""
    loaded = threading.Event()
    settings = Settings(whisper_model=MODEL, cache_dir=cache_root)

    def engine() -> Engine:
        loaded.wait(60)
        return Engine(settings.engine_options(serves_others=True))

    app = create_app(settings, engine_factory=engine, mount_ui=False)
    job = JobSpec(source=Source(path=str(clips.short_mp4)))
    events: list[Event] = []
    with running(app) as url, backend(url, kind=Kind.LOAD_BALANCER, ping_interval_s=0.1) as client:
        for event in client.run(job):
            events.append(event)
            if isinstance(event, ProgressEvent) and event.message.startswith(STARTING):
                if not loaded.is_set():
                    health = client.health()
                    assert not health.ok and "Loading" in health.message
                loaded.set()
    assert isinstance(events[0], ProgressEvent) and events[0].message.startswith(STARTING)
    starting = [e for e in events if getattr(e, "message", "").startswith(STARTING)]
    assert events[: len(starting)] == starting  # the wait comes first, then the job
    check_run(events)


def test_a_wrong_or_missing_key_gets_an_auth_error_with_the_fix(pod, clips):
    job = JobSpec(source=Source(path=str(clips.short_mp4)))
    for key in ("wrong-key", None):
        with backend(pod.url, key) as client:
            events = list(client.run(job))
        assert len(events) == 1 and isinstance(events[0], ErrorEvent)
        assert events[0].code == "auth" and "backend key field" in events[0].hint
    with backend(pod.url, "wrong-key", kind=Kind.LOAD_BALANCER) as client:
        [error] = client.run(job)
    assert error.code == "auth" and "RunPod API key" in error.hint


def test_cancel_from_another_thread_ends_the_job(pod, clips):
    job = JobSpec(source=Source(path=str(clips.dialogue_mp4), title=fresh("cancel")))
    events: list[Event] = []
    transcribing = threading.Event()

    with backend(pod.url) as client:

        def consume() -> None:
            for event in client.run(job):
                events.append(event)
                if isinstance(event, ProgressEvent) and event.stage == "transcribe":
                    transcribing.set()

        worker = threading.Thread(target=consume)
        worker.start()
        assert transcribing.wait(120), events[-1:]
        client.cancel()
        worker.join(60)
        assert not worker.is_alive()
    last = events[-1]
    assert isinstance(last, ErrorEvent) and last.code == "cancelled"
    assert not any(isinstance(e, ResultEvent) for e in events)
    assert pod.client.get(f"/api/jobs/{client.job_id}").json()["status"] == "cancelled"


def test_an_unreachable_backend_fails_quickly_with_advice():
    url = f"http://127.0.0.1:{closed_port()}"
    job = JobSpec(source=Source(url="https://example.com/video.mp4"))
    started = time.monotonic()
    with backend(url, retries=1, backoff_s=0.05) as client:
        [error] = client.run(job)
        with pytest.raises(UnreachableError):
            client.health()
    # Hang guard: a refused connection is not waited on (idle, well under a second).
    assert time.monotonic() - started < HANG_GUARD_S
    assert error.code == "backend_unavailable" and url in error.message
    assert "subtide serve" in error.hint


def test_a_server_whose_model_failed_says_so(tmp_path):
    def broken() -> Engine:
        raise OSError("no such model")

    settings = Settings(whisper_model=MODEL, cache_dir=tmp_path)
    app = create_app(settings, engine_factory=broken, mount_ui=False)
    job = JobSpec(source=Source(url="https://example.com/video.mp4"))
    with running(app) as url, backend(url, ping_interval_s=0.05) as client:
        events = list(client.run(job))
    error = events[-1]
    assert isinstance(error, ErrorEvent) and error.code == "backend_unavailable"
    assert "failed to load" in error.message and "logs" in error.hint
    assert "no such model" not in error.message


def test_the_servers_refusals_and_a_missing_file_are_clear(pod, tmp_path):
    metadata = JobSpec(source=Source(url="http://169.254.169.254/latest/meta-data/"))
    missing = JobSpec(source=Source(path=str(tmp_path / "nope.mp4")))
    with backend(pod.url) as client:
        [refused] = client.run(metadata)
        [absent] = client.run(missing)
    assert refused.code == "unsupported_source" and "Refusing" in refused.message, refused
    assert absent.code == "bad_input" and "nope.mp4" in absent.message
