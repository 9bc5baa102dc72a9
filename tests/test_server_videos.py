"""Video outputs over the HTTP API (issue 20): `video_soft` / `video_burn` in a job's formats,
for an upload and a link; the file is listed in the result and served, behind the API's auth,
at /api/jobs/{id}/files/{name}, never inside the event stream."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.config import Settings
from app.server import ServerOptions, create_app
from engine.pipeline import Engine
from tests.support.api_server import running, wait_ready
from tests.support.http_server import serve_directory

MODEL = "bundled:tiny.en"
TOKEN = "video-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

pytestmark = pytest.mark.slow  # a real model behind the server


@pytest.fixture(scope="module")
def api(clips, cache_root) -> Iterator[tuple[httpx.Client, str]]:
    """The API with a token, on the tiny model; yields its client and the clips' base URL."""
    settings = Settings(whisper_model=MODEL, cache_dir=cache_root, subtide_allow_private_urls=True)

    def engine() -> Engine:
        return Engine(settings.engine_options(serves_others=True))

    options = ServerOptions(auth_token=TOKEN, rate_limit_per_minute=0, heartbeat_s=0.3)
    app = create_app(settings, engine_factory=engine, mount_ui=False, server_options=options)
    with (
        serve_directory(clips.short_mp4.parent) as media,
        running(app) as url,
        httpx.Client(base_url=url, timeout=120) as client,
    ):
        wait_ready(client)
        yield client, media


def events(client: httpx.Client, job_id: str) -> list[dict]:
    with client.stream("GET", f"/api/jobs/{job_id}/events", headers=AUTH) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line.startswith("data:")]
    return [json.loads(line.removeprefix("data:")) for line in lines]


def streams(data: bytes, folder: Path) -> list[tuple[str, str]]:
    path = folder / "served"
    path.write_bytes(data)
    command = ["ffprobe", "-v", "error", "-of", "json", "-show_entries"]
    command += ["stream=codec_type,codec_name:stream_tags=language", str(path)]
    probed = json.loads(subprocess.run(command, capture_output=True, check=True).stdout)
    return [(s["codec_type"], s["codec_name"]) for s in probed["streams"]]


def test_an_upload_gets_a_soft_subtitled_video_served_behind_auth(api, clips, tmp_path):
    client, _ = api
    files = {"file": ("short clip.mp4", clips.short_mp4.read_bytes(), "video/mp4")}
    data = {"job": json.dumps({"formats": ["srt", "video_soft"]})}
    response = client.post("/api/jobs", files=files, data=data, headers=AUTH)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    stream = events(client, job_id)
    percents = [e["percent"] for e in stream if e["type"] == "progress"]
    assert percents == sorted(percents) and percents[-1] == 100
    result = stream[-1]
    assert result["type"] == "result", result
    assert [f["format"] for f in result["files"]] == ["srt"]
    (video,) = result["videos"]
    assert video["kind"] == "video_soft" and video["filename"] == "short clip.subtitled.mkv"
    assert video["url"] == f"/api/jobs/{job_id}/files/short%20clip.subtitled.mkv"
    # Listed by name, never carried: no event is anywhere near the video's size.
    assert max(len(json.dumps(e)) for e in stream) < video["size"]

    served = client.get(video["url"], headers=AUTH)
    assert served.status_code == 200 and len(served.content) == video["size"]
    assert served.headers["content-type"] == "video/x-matroska"
    kinds = streams(served.content, tmp_path)
    assert kinds == [("video", "h264"), ("audio", "aac"), ("subtitle", "ass")]

    assert client.get(video["url"]).status_code == 401
    # Percent-encoded, so the client sends the dots as they are and the route gets them.
    for name in ("other.mkv", "%2E%2E", "%2E%2E%2Fjobs", ".short%20clip.subtitled.mkv"):
        assert client.get(f"/api/jobs/{job_id}/files/{name}", headers=AUTH).status_code == 404
    assert client.get(f"/api/jobs/{'0' * 32}/files/x.mkv", headers=AUTH).status_code == 404


def test_a_link_gets_a_burned_video_fetched_beside_the_job(api, tmp_path):
    client, media = api
    body = {
        "source": {"url": f"{media}/short_en.mp4"},
        "formats": ["video_burn"],
        "video": {"max_height": 144},
    }
    response = client.post("/api/jobs", json=body, headers=AUTH)
    assert response.status_code == 202, response.text
    result = events(client, response.json()["id"])[-1]
    assert result["type"] == "result", result
    (video,) = result["videos"]
    assert video["filename"] == "short_en.burned.mp4"
    served = client.get(video["url"], headers=AUTH)
    assert served.status_code == 200
    assert streams(served.content, tmp_path) == [("video", "h264"), ("audio", "aac")]


def test_an_upload_without_video_is_refused_with_the_reason(api, clips):
    client, _ = api
    files = {"file": ("talk.wav", clips.short.wav.read_bytes(), "audio/wav")}
    data = {"job": json.dumps({"formats": ["video_soft"]})}
    response = client.post("/api/jobs", files=files, data=data, headers=AUTH)
    assert response.status_code == 202, response.text
    error = events(client, response.json()["id"])[-1]
    assert error["type"] == "error" and error["code"] == "bad_input"
    assert error["message"] == "this source has no video; use the subtitle files"
