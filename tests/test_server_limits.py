"""What one request may cost a server on the open internet: the job limits (Whisper models,
target languages, glossary, description, JSON size), one upload limit for every route (the
mounted app's included), a slow-upload deadline, and proxy headers believed only from the
configured addresses; on the earlier API's routes, every refusal as the text its extension
shows. Through `subtide serve`'s app under real uvicorn, run as `serve` runs it, with the Gradio
app mounted and a token."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.server import ServerOptions, create_app
from tests.support.api_server import closed_port, running, wait_ready
from tests.support.openai_server import FakeOpenAI, serve_openai
from tests.support.ssrf import redirect, site
from tests.support.timing import HANG_GUARD_S, JOB_HANG_GUARD_S

MODEL = "bundled:tiny.en"
TOKEN = "limits-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
UPLOAD_LIMIT = 200_000


@dataclass
class Server:
    url: str
    client: httpx.Client
    llm: FakeOpenAI


def limited_settings(cache: Any, llm_url: str, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "whisper_model": MODEL,
        "whisper_models": "small, bundled:base",
        "cache_dir": cache,
        "server_api_url": f"{llm_url}/v1",
        "server_model": "fake-model",
        "server_api_key": "sk-server-secret",
        "subtide_auth_token": TOKEN,
        "max_upload_mb": UPLOAD_LIMIT / 1e6,
        "max_json_kb": 4,
        "max_target_langs": 3,
        "max_glossary_chars": 200,
        "max_description_chars": 100,
        "upload_timeout_seconds": 1,
        "upload_min_kb_per_second": 10,
        "rate_limit_per_minute": 0,
        # Accepted jobs fetch from a closed port on 127.0.0.1 and fail at once.
        "subtide_allow_private_urls": True,
        **changes,
    }
    return Settings(**values)


@pytest.fixture(scope="module")
def server(cache_root) -> Iterator[Server]:
    with serve_openai() as llm:
        settings = limited_settings(cache_root, llm.url)
        options = ServerOptions.from_settings(settings)
        app = create_app(settings, server_options=options)
        with (
            running(app, **options.uvicorn_options()) as url,
            httpx.Client(base_url=url, timeout=HANG_GUARD_S, headers=AUTH) as client,
        ):
            wait_ready(client)
            # The app's routes want its session cookie; the API wants the token.
            login = client.post("/login", data={"username": "subtide", "password": TOKEN})
            assert login.status_code == 200
            yield Server(url, client, llm)


def job(**fields: Any) -> dict[str, Any]:
    return {"source": {"url": f"http://127.0.0.1:{closed_port()}/talk.mp4"}, **fields}


def refused(response: httpx.Response, status: int) -> dict[str, str]:
    """The fields of a refusal: under `error` on our API; beside it on the earlier routes,
    where `error` is the text the extension shows (the message, then the hint)."""
    assert response.status_code == status, response.text
    assert "Traceback" not in response.text
    body = response.json()
    if not isinstance(body["error"], str):
        error = body["error"]
        assert error["message"]
        return error
    assert body["message"] and body["hint"]
    assert body["error"] == f"{body['message']} — {body['hint']}"
    return body


def test_a_job_within_the_limits_is_accepted(server):
    within = job(
        target_langs=["de", "pt-BR", "es-419"],
        glossary={"Subtide": "Subtide"},
        description="A talk about subtitles.",
        whisper_model="small",
    )
    assert server.client.post("/api/jobs", json=within).status_code == 202


def test_a_model_the_server_does_not_offer_gets_one_answer_whatever_it_names(server, tmp_path):
    (tmp_path / "model.bin").write_bytes(b"not a model")
    asked = ["/etc", "etc", str(tmp_path), "~/.cache", "org/some-model", "large-v3", "giant"]
    answers = {
        json.dumps(refused(server.client.post("/api/jobs", json=job(whisper_model=m)), 400))
        for m in asked
    }
    # One answer for all: nothing in it tells which folders exist or what the hub has.
    assert len(answers) == 1
    error = json.loads(answers.pop())
    assert "does not offer" in error["message"] and "small" in error["hint"]
    assert not any(m in error["message"] for m in asked)


def test_too_many_or_unknown_target_languages_are_refused_before_any_llm_request(server):
    server.llm.reset()
    many = refused(
        server.client.post("/api/jobs", json=job(target_langs=["de", "fr", "it", "ja"])), 400
    )
    assert "at most 3" in many["message"]
    made_up = [f"de-{a}{b}" for a in "QX" for b in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"][:100]
    assert (
        "region"
        in refused(server.client.post("/api/jobs", json=job(target_langs=made_up)), 400)["message"]
    )
    assert (
        "not a language"
        in refused(server.client.post("/api/jobs", json=job(target_langs=["xx"])), 400)["message"]
    )
    # The same language spelled twice is one target.
    twice = job(target_langs=["pt-BR", "pt_br", "PT-br", "de", "fr"])
    assert server.client.post("/api/jobs", json=twice).status_code == 202
    assert server.llm.requests == []


def test_a_glossary_or_description_larger_than_the_limit_is_413(server):
    glossary = {f"term {n}": f"Begriff {n}" for n in range(20)}
    error = refused(
        server.client.post("/api/jobs", json=job(target_langs=["de"], glossary=glossary)), 413
    )
    assert error["code"] == "too_large" and "at most 200" in error["message"]
    description = refused(server.client.post("/api/jobs", json=job(description="x" * 101)), 413)
    assert "at most 100" in description["message"]


def test_a_json_body_has_its_own_small_limit(server):
    big = job(glossary={"a": "b"}, description="y" * 50, formats=["srt"] * 1000)
    error = refused(server.client.post("/api/jobs", json=big), 413)
    assert "4 KB" in error["message"] and "upload" in error["hint"]
    # Sent in chunks without a length, it is cut as soon as it passes the limit.
    chunks = iter(
        [
            b'{"source": {"url": "http://example.com/a.mp4"}, "formats": [',
            b'"srt", ' * 2000,
            b'"srt"]}',
        ]
    )
    refused(
        server.client.post(
            "/api/jobs", content=chunks, headers={"Content-Type": "application/json"}
        ),
        413,
    )
    # The job part of an upload too.
    files = {"file": ("clip.mp4", b"\0" * 100, "video/mp4")}
    part = refused(server.client.post("/api/jobs", files=files, data={"job": json.dumps(big)}), 413)
    assert "4 KB" in part["message"]


def test_the_earlier_routes_413_names_its_limit(server):
    body = {"video_id": "abc", "target_lang": "de", "padding": "z" * 70_000}
    response = server.client.post("/api/process", json=body)
    assert response.status_code == 413
    assert "66 KB" in response.json()["error"]


@pytest.mark.parametrize("route", ["/api/process", "/api/stream"])
def test_the_earlier_routes_refuse_as_text_with_the_app_mounted(server, route):
    """The app mounted at "/" answers no request of these paths: 404, 405 and 401 come in
    the earlier shape, as do the job limits."""
    error = refused(server.client.get(route), 405)
    assert error["code"] == "method_not_allowed" and "POST" in error["hint"]
    assert refused(server.client.put(f"{route}/x"), 404)["code"] == "not_found"
    anonymous = httpx.post(f"{server.url}{route}", json={"video_id": "abc"}, timeout=HANG_GUARD_S)
    assert refused(anonymous, 401)["code"] == "auth"
    source = {"video_id": "abc", "video_url": job()["source"]["url"]}
    region = refused(server.client.post(route, json={**source, "target_lang": "de-QX"}), 400)
    assert "region" in region["message"] and "ISO 3166" in region["error"]


@pytest.mark.parametrize("route", ["/api/jobs", "/gradio_api/upload", "/api/stream"])
def test_one_upload_limit_for_every_route(server, route):
    files = {
        "files" if "gradio" in route else "file": (
            "big.wav",
            b"\0" * (UPLOAD_LIMIT + 1),
            "audio/wav",
        )
    }
    error = refused(server.client.post(route, files=files), 413)
    assert error["code"] == "too_large" and "200 KB" in error["message"]
    # The earlier route's in its shape: the text the extension shows.
    assert route != "/api/stream" or "200 KB" in error["error"]


def test_an_upload_without_a_length_is_cut_at_the_limit(server):
    def body() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="files"; filename="a.wav"\r\n\r\n'
        for _ in range(100):
            yield b"\0" * 10_000

    headers = {"Content-Type": "multipart/form-data; boundary=b"}
    refused(server.client.post("/gradio_api/upload", content=body(), headers=headers), 413)


def test_a_trickled_upload_is_stopped(server):
    """1 byte every 0.2 s, for a body that says it has 1000: stopped after about the 1 s the
    server's settings give, with 408, on the API, on the app's upload route and on the earlier
    API (in its shape)."""
    for path in ("/api/jobs", "/gradio_api/upload", "/api/process"):
        reply = _trickle(server, path)
        assert reply.startswith(b"HTTP/1.1 408"), reply
        body = json.loads(reply.partition(b"\r\n\r\n")[2])
        if path == "/api/process":  # the text the extension shows: the message, then the hint
            assert body["error"].startswith("The upload arrived too slowly")
            assert "faster connection" in body["error"]
        else:
            assert "too slowly" in body["error"]["message"]


def _trickle(server: Server, path: str) -> bytes:
    """The server's whole reply to a body trickled a byte at a time."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=HANG_GUARD_S) as sock:
        cookies = "; ".join(f"{k}={v}" for k, v in server.client.cookies.items())
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Cookie: {cookies}\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 1000\r\n\r\n"
        )
        part = 'Content-Disposition: form-data; name="files"; filename="a.wav"'
        sock.sendall(f"{head}--b\r\n{part}\r\n\r\n".encode())
        started = time.monotonic()
        reply = b""
        while not reply and time.monotonic() - started < HANG_GUARD_S:
            try:
                sock.sendall(b"x")
            except OSError:
                break  # the server closed the connection after answering
            sock.settimeout(0.2)
            try:
                reply = sock.recv(4096)
            except TimeoutError:
                continue
        # The rest of the answer, until the server closes the connection.
        sock.settimeout(HANG_GUARD_S)
        while reply and (chunk := _recv(sock)):
            reply += chunk
        return reply


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(4096)
    except OSError:  # reset: the server closed with our trickled bytes unread
        return b""


def test_forwarded_headers_are_believed_only_from_configured_addresses(cache_root):
    """Rotating X-Forwarded-For does not escape the rate limit unless the connecting address
    is a configured proxy."""
    with serve_openai() as llm:
        for trusted, expected in (("", 429), ("127.0.0.1", 202)):
            settings = limited_settings(
                cache_root, llm.url, rate_limit_per_minute=2, forwarded_allow_ips=trusted
            )
            options = ServerOptions.from_settings(settings)
            app = create_app(settings, server_options=options, mount_ui=False)
            with (
                running(app, **options.uvicorn_options()) as url,
                httpx.Client(base_url=url, timeout=HANG_GUARD_S, headers=AUTH) as client,
            ):
                statuses = [
                    client.post(
                        "/api/jobs", json=job(), headers={"X-Forwarded-For": f"203.0.113.{n}"}
                    ).status_code
                    for n in range(3)
                ]
            assert statuses == [202, 202, expected]


def test_a_link_that_redirects_to_a_metadata_address_is_refused_at_that_hop(server):
    """The server's own jobs fetch through the pinned, per-hop guard: the redirect's target is
    refused before any connection (a connection to it would time out, not be refused)."""
    with site() as page:
        page.routes["/talk.mp4"] = redirect("http://169.254.169.254/latest/meta-data/")
        body = {"source": {"url": f"{page.url}/talk.mp4"}}
        job_id = server.client.post("/api/jobs", json=body).json()["id"]
        deadline = time.monotonic() + JOB_HANG_GUARD_S  # a hang guard, not a speed bound
        while (status := server.client.get(f"/api/jobs/{job_id}").json())["status"] in (
            "queued",
            "running",
        ):
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert status["status"] == "failed"
    assert "Refusing to download from 169.254.169.254" in status["error"]["message"]
    assert page.requests == ["/talk.mp4"]
