"""The HTTP API under real uvicorn on 127.0.0.1, driven by httpx: the job routes, SSE resume,
cancel, auth, refusals, the earlier API's shapes (its errors as text the extension can show, its
batch counts, its speakers), and 20 jobs at once."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from app.config import Settings
from app.server import LegacyRequest, ServerOptions, _legacy_url, create_app
from engine.pipeline import Engine
from tests.support.api_server import closed_port, pinging, running, wait_ready
from tests.support.http_server import serve_directory
from tests.support.openai_server import FakeOpenAI, fake_translation, serve_openai
from tests.support.timing import HANG_GUARD_S
from tests.support.wer import wer

MODEL = "bundled:tiny.en"
LEGACY_STAGES = {"waiting", "downloading", "whisper", "diarization", "translating", "complete"}

# A real model behind the server.
pytestmark = pytest.mark.slow


@dataclass
class Api:
    client: httpx.Client
    media: str  # base URL of the fixture clips
    first_ping: int
    llm: FakeOpenAI
    settings: Settings


@pytest.fixture(scope="module")
def api(clips, cache_root) -> Iterator[Api]:
    """Two engines on the tiny model, private URLs allowed (the clips are served on 127.0.0.1),
    a 1 MB upload limit, a fake LLM, and engines held back so /ping is seen loading."""
    gate = threading.Event()
    with serve_openai() as llm, serve_directory(clips.short_mp4.parent) as media:
        settings = Settings(
            whisper_model=MODEL,
            cache_dir=cache_root,
            subtide_allow_private_urls=True,
            server_api_url=f"{llm.url}/v1",
            server_model="fake-model",
            server_api_key="sk-server-secret",
        )

        def engine() -> Engine:
            gate.wait(30)
            return Engine(settings.engine_options(serves_others=True))

        options = ServerOptions(
            max_upload_mb=1, engine_concurrency=2, rate_limit_per_minute=0, heartbeat_s=0.3
        )
        app = create_app(settings, engine_factory=engine, mount_ui=False, server_options=options)
        with running(app) as url, httpx.Client(base_url=url, timeout=60) as client:
            first_ping = client.get("/ping").status_code
            gate.set()
            wait_ready(client)
            yield Api(client, media, first_ping, llm, settings)


def sse(lines: Iterable[str]) -> Iterator[dict[str, str]]:
    """SSE messages as {id, event, data} dicts; comments as {"comment": text}."""
    fields: dict[str, str] = {}
    for line in lines:
        if line.startswith(":"):
            yield {"comment": line[1:].strip()}
        elif line:
            key, _, value = line.partition(":")
            fields[key] = value.removeprefix(" ")
        elif fields:
            yield fields
            fields = {}


def events(client: httpx.Client, job_id: str, last_id: int | None = None) -> list[dict]:
    headers = {"Last-Event-ID": str(last_id)} if last_id is not None else {}
    with client.stream("GET", f"/api/jobs/{job_id}/events", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return [m for m in sse(response.iter_lines()) if "comment" not in m]


def submit_url(api: Api, name: str = "short_en.mp4", **spec: Any) -> str:
    body = {"source": {"url": f"{api.media}/{name}"}, **spec}
    response = api.client.post("/api/jobs", json=body)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def check_stream(messages: list[dict]) -> dict:
    """Ids 0..N in order, percent never down, cues before the result; returns the result."""
    assert [int(m["id"]) for m in messages] == list(range(len(messages)))
    data = [json.loads(m["data"]) for m in messages]
    assert [m["event"] for m in messages] == [d["type"] for d in data]
    percents = [d["percent"] for d in data if d["type"] == "progress"]
    assert percents == sorted(percents)
    assert any(d["type"] == "cues" for d in data)
    assert data[-1]["type"] == "result", data[-1]
    return data[-1]


def transcript(result: dict) -> str:
    return " ".join(cue["text"] for cue in result["cues"])


def test_ping_is_204_while_loading_then_200(api):
    assert api.first_ping == 204
    assert api.client.get("/ping").json() == {"status": "ok"}
    health = api.client.get("/health").json()
    assert health["status"] == "ok"
    features = health["features"]
    assert features.pop("decoding").startswith("cpu (int8), ")
    assert features == {"model": MODEL, "diarization": True, "translation": True}
    assert health["queue"] == {"waiting": 0, "running": 0}
    assert "version" in health and "gpu" in health


def test_a_job_by_url_streams_progress_cues_and_result(api, clips):
    job_id = submit_url(api, formats=["srt", "json"])
    result = check_stream(events(api.client, job_id))
    assert wer(clips.short.script, transcript(result)) < 0.35
    assert {f["format"] for f in result["files"]} == {"srt", "json"}
    status = api.client.get(f"/api/jobs/{job_id}").json()
    assert status["status"] == "done" and status["position"] is None
    assert status["result"]["cues"] == result["cues"]


def test_an_upload_runs_as_a_server_side_file(api, clips):
    files = {"file": ("short clip.mp4", clips.short_mp4.read_bytes(), "video/mp4")}
    data = {"job": json.dumps({"formats": ["vtt"]})}
    response = api.client.post("/api/jobs", files=files, data=data)
    assert response.status_code == 202, response.text
    result = check_stream(events(api.client, response.json()["id"]))
    assert wer(clips.short.script, transcript(result)) < 0.35
    assert result["title"] == "short clip"
    assert result["files"][0]["filename"].endswith(".vtt")


def test_a_dropped_stream_resumes_without_gaps_or_duplicates(api):
    job_id = submit_url(api)
    with api.client.stream("GET", f"/api/jobs/{job_id}/events") as response:
        first = []
        for message in sse(response.iter_lines()):
            if "id" in message:
                first.append(message)
            if len(first) == 3:
                break  # the client hangs up mid-stream
    rest = events(api.client, job_id, last_id=int(first[-1]["id"]))
    check_stream(first + rest)
    assert first + rest == events(api.client, job_id)
    # Resuming after the end gives nothing more and returns at once.
    assert events(api.client, job_id, last_id=len(first + rest) - 1) == []


def test_cancel_a_queued_and_a_running_job(api, clips):
    def upload(path, name: str) -> str:
        files = {"file": (name, path.read_bytes(), "video/mp4")}
        return api.client.post("/api/jobs", files=files).json()["id"]

    # Fresh titles (the Whisper prompt) miss the transcript cache, so these jobs take a while.
    long_jobs = [upload(clips.dialogue_mp4, f"long-{uuid.uuid4().hex}.mp4") for _ in range(2)]
    waiting = submit_url(api)
    assert api.client.get(f"/api/jobs/{waiting}").json()["position"] == 1
    with api.client.stream("GET", f"/api/jobs/{waiting}/events") as response:
        quiet = next(m for m in sse(response.iter_lines()) if "comment" in m)
    assert quiet == {"comment": "ping"}  # the heartbeat while nothing happens
    assert api.client.delete(f"/api/jobs/{waiting}").json()["status"] == "cancelled"
    last = json.loads(events(api.client, waiting)[-1]["data"])
    assert last["type"] == "error" and last["code"] == "cancelled"

    target = long_jobs[0]
    while api.client.get(f"/api/jobs/{target}").json()["status"] == "queued":
        time.sleep(0.02)
    # Answered while a job runs (its latency is bench/server_load.py's).
    assert api.client.get("/ping", timeout=HANG_GUARD_S).status_code == 200
    api.client.delete(f"/api/jobs/{target}")
    last = json.loads(events(api.client, target)[-1]["data"])
    assert last["code"] == "cancelled"
    assert api.client.get(f"/api/jobs/{target}").json()["status"] == "cancelled"
    api.client.delete(f"/api/jobs/{long_jobs[1]}")
    events(api.client, long_jobs[1])
    assert api.client.delete(f"/api/jobs/{'0' * 32}").status_code == 404


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert "Traceback" not in response.text and "sk-" not in response.text
    return response.json()["error"]


def test_bad_requests_get_clear_errors_and_the_server_stays_healthy(api, clips):
    post = api.client.post
    headers = {"Content-Type": "application/json"}
    assert "JSON" in _error(post("/api/jobs", content=b"{nope", headers=headers), 400)["message"]
    leaky = {"source": {"url": f"{api.media}/x"}, "translation": {"api_key": "sk-leak"}, "x": 1}
    assert "x: Extra inputs" in _error(post("/api/jobs", json=leaky), 422)["message"]
    local = {"source": {"path": "/etc/passwd"}}
    assert "upload" in _error(post("/api/jobs", json=local), 400)["hint"].lower()
    metadata = {"source": {"url": "http://169.254.169.254/latest/meta-data/"}}
    assert "Refusing" in _error(post("/api/jobs", json=metadata), 400)["message"]
    huge = {"file": ("big.mp4", b"\0" * 2_000_000, "video/mp4")}
    assert _error(post("/api/jobs", files=huge), 413)["code"] == "too_large"
    text = {"file": ("notes.mp4", b"just some text\n" * 100, "video/mp4")}
    assert "not a media file" in _error(post("/api/jobs", files=text), 400)["message"]
    no_file = {"job": json.dumps({"formats": ["srt"]})}
    assert _error(post("/api/jobs", data=no_file, files={"x": ("a", b"a")}), 400)
    assert api.client.get("/ping").status_code == 200
    assert api.client.get("/health").json()["status"] == "ok"


def test_auth_guards_the_api_and_the_app_but_not_ping(clips, cache_root):
    settings = Settings(whisper_model=MODEL, cache_dir=cache_root)
    options = ServerOptions(auth_token="s3cret-token", rate_limit_per_minute=2)
    app = create_app(settings, server_options=options)
    with running(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        assert client.get("/ping").status_code in (200, 204)
        assert client.get("/health").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
            denied = client.get(f"/api/jobs/{'0' * 32}", headers=headers)
            assert _error(denied, 401)["code"] == "auth"
            assert denied.headers["WWW-Authenticate"] == "Bearer"
        good = {"Authorization": "Bearer s3cret-token"}
        assert _error(client.get(f"/api/jobs/{'0' * 32}", headers=good), 404)
        # The rate limit counts every submission, refused or not.
        for _ in range(2):
            assert client.post("/api/jobs", headers=good, content=b"{").status_code == 400
        limited = client.post("/api/jobs", headers=good, content=b"{")
        assert _error(limited, 429)["code"] == "rate_limited"
        assert int(limited.headers["Retry-After"]) > 0
        # The earlier routes: the same guards, their refusals as text.
        for route in ("/api/process", "/api/stream"):
            denied = _earlier_error(client.post(route, json={"video_id": "abc"}), 401)
            assert denied["code"] == "auth" and "SUBTIDE_AUTH_TOKEN" in denied["error"]
            busy = _earlier_error(client.post(route, headers=good, json={}), 429)
            assert busy["code"] == "rate_limited" and "Try again in" in busy["error"]
        # The Gradio app is mounted and asks for the login.
        assert client.get("/config").status_code == 401
        login = client.post("/login", data={"username": "subtide", "password": "s3cret-token"})
        assert login.status_code == 200
        assert client.get("/config").status_code == 200


def test_the_earlier_routes_use_captions_unless_whisper_is_forced(api, clips, tmp_path):
    _captioned_page(tmp_path, clips.short_mp4, lines=3)
    with serve_directory(tmp_path) as site:
        body = {"video_url": f"{site}/page.html", "target_lang": "en"}
        captions = api.client.post("/api/process", json=body).json()
        whisper = api.client.post("/api/process", json={**body, "force_whisper": True}).json()
    assert captions["source"] == "youtube_manual"
    assert [s["text"] for s in captions["subtitles"]] == ["Line 1", "Line 2", "Line 3"]
    assert captions["subtitles"][0]["start"] == 1000 and captions["subtitles"][0]["end"] == 1900
    assert whisper["source"] == "whisper"
    assert wer(clips.short.script, " ".join(s["text"] for s in whisper["subtitles"])) < 0.2


def _legacy(response: httpx.Response) -> list[dict]:
    assert response.headers["content-type"].startswith("text/event-stream")
    lines = [line for line in response.text.split("\n\n") if line and not line.startswith(":")]
    assert all(line.startswith("data: ") and "\n" not in line for line in lines)
    return [json.loads(line.removeprefix("data: ")) for line in lines]


def _check_subtitle(item: dict, speakers: bool) -> None:
    """Times in ms; `speaker` a label when the job labels speakers, and no key otherwise (the
    page shows any speaker that is not undefined, a null one included)."""
    assert set(item) - {"speaker"} == {"start", "end", "text", "translatedText"}
    assert isinstance(item["start"], int) and isinstance(item["end"], int)
    assert item["start"] < item["end"]
    assert ("speaker" in item) is speakers, item
    assert not speakers or (isinstance(item["speaker"], str) and item["speaker"])


def _check_batches(items: list[dict]) -> list[dict]:
    """The subtitle batches, numbered from 1, each total at least its number, as the page
    shows them ("current/total batches", current/total as its percent); returns them."""
    batches = [i for i in items if i.get("stage") == "subtitles"]
    assert batches
    for number, batch in enumerate(batches, start=1):
        info = batch["batchInfo"]
        assert info["current"] == number and info["total"] >= number >= 1, info
        assert batch["message"] == f"Batch {number}/{info['total']} ready"
        assert 0 < round(number / info["total"] * 100) <= 100
    return batches


def _earlier_error(response: httpx.Response, status: int) -> dict:
    """An error of the earlier routes as the extension reads it: `error` one string, the
    message then the hint; the fields beside it. Returns the body."""
    assert response.status_code == status, response.text
    assert "Traceback" not in response.text and "sk-" not in response.text
    body = response.json()
    hint = body.get("hint")
    assert isinstance(body["error"], str) and body["code"] and body["message"], body
    assert body["error"] == (f"{body['message']} — {hint}" if hint else body["message"])
    return body


def test_the_earlier_stream_route(api):
    body = {"video_id": "abc123", "video_url": f"{api.media}/short_en.mp4", "target_lang": "es"}
    sse_accept = {"Accept": "text/event-stream"}
    items = _legacy(api.client.post("/api/stream", json=body, headers=sse_accept))
    progress = [i for i in items if "percent" in i]
    assert {i["stage"] for i in progress} <= LEGACY_STAGES
    assert [i["percent"] for i in progress] == sorted(i["percent"] for i in progress)
    assert all(
        isinstance(i["percent"], int) and isinstance(i["eta"], str) for i in progress if "eta" in i
    )
    batches = _check_batches(items)
    streamed = [s for b in batches for s in b["subtitles"]]
    result = items[-1]["result"]
    assert result["source"] == "whisper" and result["translated"] is True
    assert streamed == result["subtitles"]
    for item in result["subtitles"]:
        # /api/stream never labels speakers: labels would hold its stream back.
        _check_subtitle(item, speakers=False)
        # The fake LLM marks what it translated; line breaks are redone for the translation.
        assert item["translatedText"].split() == fake_translation(item["text"], "Spanish").split()

    refused = _earlier_error(api.client.post("/api/stream", content=b"{", headers=sse_accept), 400)
    assert refused["error"].startswith("Invalid JSON in request body — ")
    metadata = {"video_id": "x", "video_url": "http://169.254.169.254/", "target_lang": "es"}
    assert "Refusing" in _earlier_error(api.client.post("/api/stream", json=metadata), 400)["error"]


def test_the_earlier_stream_route_counts_a_captioned_videos_batches_exactly(api, clips, tmp_path):
    """Captions give every cue at once: the total is counted, and the last batch is the total."""
    _captioned_page(tmp_path, clips.short_mp4, lines=40)
    with serve_directory(tmp_path) as site:
        body = {"video_url": f"{site}/page.html", "target_lang": "de"}
        items = _legacy(api.client.post("/api/stream", json=body))
    batches = _check_batches(items)
    assert batches[-1]["batchInfo"]["total"] == len(batches)
    assert sum(len(b["subtitles"]) for b in batches) == 40
    assert items[-1]["result"]["source"] == "youtube_manual"


def test_the_earlier_process_route(api):
    body = {"video_id": "abc123", "video_url": f"{api.media}/short_en.mp4", "target_lang": "es"}
    streamed = _legacy(
        api.client.post("/api/process", json=body, headers={"Accept": "text/event-stream"})
    )
    assert not any(i.get("stage") == "subtitles" for i in streamed)
    assert streamed[-1]["result"]["translated"] is True
    # The server's diarization is on (ENABLE_DIARIZATION's default): whole runs label speakers.
    assert api.settings.enable_diarization
    for item in streamed[-1]["result"]["subtitles"]:
        _check_subtitle(item, speakers=True)
    plain = api.client.post("/api/process", json=body)
    assert plain.headers["content-type"] == "application/json"
    assert plain.json() == streamed[-1]["result"]
    youtube = LegacyRequest(video_id="dQw4w9WgXcQ", force_refresh=True)
    assert _legacy_url(youtube) == "https://www.youtube.com/watch?v=dQw4w9WgXcQ"
    missing = _earlier_error(api.client.post("/api/process", json={"target_lang": "es"}), 400)
    assert missing["message"] == "video_id is required" and "video_url" in missing["hint"]


def test_the_earlier_process_route_without_diarization_has_no_speaker_key(api, cache_root):
    settings = api.settings.model_copy(update={"enable_diarization": False})
    options = ServerOptions(rate_limit_per_minute=0)
    app = create_app(settings, mount_ui=False, server_options=options)
    body = {"video_id": "abc123", "video_url": f"{api.media}/short_en.mp4", "target_lang": "es"}
    with running(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        wait_ready(client)
        result = client.post("/api/process", json=body).json()
    assert result["subtitles"]
    for item in result["subtitles"]:
        _check_subtitle(item, speakers=False)


@pytest.mark.parametrize("route", ["/api/process", "/api/stream"])
def test_every_refusal_of_the_earlier_routes_is_text_the_extension_can_show(api, route):
    post = api.client.post
    source = {"video_id": "abc123", "video_url": f"{api.media}/short_en.mp4"}
    headers = {"Content-Type": "application/json"}
    # The request itself.
    assert "JSON" in _earlier_error(post(route, content=b"{nope", headers=headers), 400)["error"]
    assert "video_url" in _earlier_error(post(route, json={}), 400)["error"]
    assert _earlier_error(post(route, json={"video_id": "a/b"}), 400)["hint"]
    assert _earlier_error(post(route, json={**source, "force_whisper": "maybe"}), 400)
    assert _earlier_error(post(route, json={**source, "target_lang": "e$"}), 400)["hint"]
    # The job limits: a target that is no language.
    unknown = _earlier_error(post(route, json={**source, "target_lang": "xx"}), 400)
    assert "not a language" in unknown["message"] and "ISO 639-1" in unknown["hint"]
    # The earlier API's own body limit, and the upload limit every route shares.
    padded = {**source, "padding": "z" * 70_000}
    assert _earlier_error(post(route, json=padded), 413)["code"] == "too_large"
    upload = {"file": ("big.mp4", b"\0" * 1_100_000, "video/mp4")}
    assert "1 MB" in _earlier_error(post(route, files=upload), 413)["message"]
    # Other methods and other paths.
    wrong = _earlier_error(api.client.get(route), 405)
    assert wrong["code"] == "method_not_allowed" and "POST" in wrong["error"]
    assert _earlier_error(post(f"{route}/extra", json=source), 404)["code"] == "not_found"
    # Our own API keeps its shape.
    ours = api.client.post("/api/jobs", content=b"{nope", headers=headers)
    assert ours.status_code == 400 and isinstance(ours.json()["error"], dict)
    assert api.client.get("/health").json()["status"] == "ok"


async def _job(client: httpx.AsyncClient, url: str) -> list[dict]:
    created = await client.post("/api/jobs", json={"source": {"url": url}})
    async with client.stream("GET", f"/api/jobs/{created.json()['id']}/events") as response:
        lines = [line async for line in response.aiter_lines()]
    return [m for m in sse(lines) if "comment" not in m]


async def _jobs_at_once(base: str, url: str, count: int) -> list[list[dict]]:
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        return await asyncio.gather(*(_job(client, url) for _ in range(count)))


def test_twenty_jobs_at_once_all_finish_and_ping_is_answered_meanwhile(api):
    reference = transcript(check_stream(events(api.client, submit_url(api))))
    base = str(api.client.base_url).rstrip("/")
    # The pings' timeout is the hang guard; how fast they are: bench/responsiveness.py.
    with pinging(base, HANG_GUARD_S) as pings:
        started = time.monotonic()
        streams = asyncio.run(_jobs_at_once(base, f"{api.media}/short_en.mp4", 20))
        finished = time.monotonic()
    assert all(transcript(check_stream(stream)) == reference for stream in streams)
    data = [json.loads(m["data"]) for stream in streams for m in stream]
    assert any("position" in d.get("message", "") for d in data if d.get("stage") == "queued")
    assert pings and all(ping.status == "200" for ping in pings)
    meanwhile = [p for p in pings if started <= p.sent and p.answered <= finished]
    assert meanwhile, (started, finished, pings[:3], pings[-3:])


def test_the_earlier_routes_tell_failed_jobs_and_unexpected_errors_as_text(tmp_path):
    """A job that fails: a string on /api/process's JSON answer and in /api/stream's stream,
    {message, type, hint} in /api/process's (the earlier shapes); a server error: a string."""

    def broken() -> Engine:
        raise OSError("no such model")

    settings = Settings(
        whisper_model=MODEL,
        cache_dir=tmp_path,
        subtide_allow_private_urls=True,
        server_api_url=f"http://127.0.0.1:{closed_port()}/v1",
        server_model="fake-model",
    )
    options = ServerOptions(rate_limit_per_minute=0)
    app = create_app(settings, engine_factory=broken, mount_ui=False, server_options=options)

    def explode() -> None:
        raise RuntimeError("an unforeseen failure")

    # A route under an earlier path that fails as no route should: the last-resort handler.
    app.router.routes.insert(0, APIRoute("/api/stream/explode", explode, methods=["POST"]))
    source = f"http://127.0.0.1:{closed_port()}/talk.mp4"
    body = {"video_id": "abc123", "video_url": source, "target_lang": "es"}
    sse_accept = {"Accept": "text/event-stream"}
    with running(app) as url, httpx.Client(base_url=url, timeout=HANG_GUARD_S) as client:
        deadline = time.monotonic() + HANG_GUARD_S
        while client.get("/ping").status_code == 204 and time.monotonic() < deadline:
            time.sleep(0.02)
        failed = _earlier_error(client.post("/api/process", json=body), 503)
        assert failed["code"] == "model_unavailable" and "server log" in failed["error"]
        nested = _legacy(client.post("/api/process", json=body, headers=sse_accept))[-1]
        assert nested == {
            "error": {"message": failed["message"], "type": failed["code"], "hint": failed["hint"]}
        }
        streamed = _legacy(client.post("/api/stream", json=body))[-1]
        assert streamed["error"] == failed["error"] and streamed["code"] == failed["code"]
        internal = _earlier_error(client.post("/api/stream/explode"), 500)
        assert internal["code"] == "internal" and "unforeseen" not in internal["error"]


def test_a_server_whose_model_fails_to_load_says_so(tmp_path):
    def broken() -> Engine:
        raise OSError("no such model")

    settings = Settings(whisper_model=MODEL, cache_dir=tmp_path)
    options = ServerOptions(keep_jobs=1)
    app = create_app(settings, engine_factory=broken, mount_ui=False, server_options=options)
    with running(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        deadline = time.monotonic() + HANG_GUARD_S
        while (ping := client.get("/ping")).status_code == 204 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ping.status_code == 503  # unhealthy: the load balancer sends no work here
        first, second = (
            client.post("/api/jobs", json={"source": {"audio_b64": "AAAA"}}).json()["id"]
            for _ in range(2)
        )
        last = json.loads(events(client, second)[-1]["data"])
        assert last["code"] == "model_unavailable" and "no such model" not in last["message"]
        assert client.get("/health").json()["status"] == "failed"
        # Only the newest finished job is kept, in memory and on disk.
        assert client.get(f"/api/jobs/{first}").status_code == 404
        assert [p.stem for p in (tmp_path / "jobs").glob("*.json")] == [second]
    # A restarted server still knows how it ended.
    app = create_app(settings, engine_factory=broken, mount_ui=False, server_options=options)
    with running(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        record = client.get(f"/api/jobs/{second}").json()
        assert record["status"] == "failed" and record["error"]["code"] == "model_unavailable"


def _captioned_page(folder: Path, video: Path, lines: int) -> None:
    """page.html in `folder`: the video with an English track of `lines` one-second cues."""
    (folder / "clip.mp4").write_bytes(video.read_bytes())
    cues = [f"00:00:{n:02}.000 --> 00:00:{n:02}.900\nLine {n}\n" for n in range(1, lines + 1)]
    (folder / "en.vtt").write_text("WEBVTT\n\n" + "\n".join(cues))
    track = '<track kind="subtitles" src="en.vtt" srclang="en">'
    (folder / "page.html").write_text(f'<video src="clip.mp4">{track}</video>')
