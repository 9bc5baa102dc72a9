"""The app's remote mode in a real browser: the page points at our HTTP API under uvicorn (as a
user points it at a RunPod pod), checks it, runs a job there, and remembers the backend."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import cloud
from app.config import Settings
from app.server import ServerOptions, create_app
from engine.pipeline import Engine, EngineOptions
from tests.support.api_server import running, wait_ready
from tests.support.browser import chromium, new_context, serve_app
from tests.support.http_server import serve_directory
from ui.app import UiDefaults, build
from ui.remote import Remote

pytestmark = pytest.mark.slow

MODEL = "bundled:tiny.en"
TOKEN = "server-token-for-the-app"
STORAGE = "subtide-backend"
DONE = "#progress [data-state=done]"


@pytest.fixture(scope="module")
def server(cache_root, tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """A Subtide server with its own cache (so its job records can be counted) and a token."""
    cache = tmp_path_factory.mktemp("server-cache")
    settings = Settings(whisper_model=MODEL, cache_dir=cache, subtide_allow_private_urls=True)
    options = ServerOptions(auth_token=TOKEN, rate_limit_per_minute=0)
    app = create_app(settings, mount_ui=False, server_options=options)
    with running(app) as url, httpx.Client(base_url=url) as client:
        wait_ready(client)
        yield url, cache / "jobs"


@pytest.fixture(scope="module")
def app_url(cache_root) -> Iterator[str]:
    local = Engine(EngineOptions(cache_dir=cache_root, whisper_model=MODEL))
    remote = Remote(cloud.connect, cloud.check)
    blocks = build(lambda: local, remote=remote, defaults=UiDefaults(whisper_model=MODEL))
    with serve_app(blocks) as url:
        yield url


@pytest.fixture(scope="module")
def media(clips) -> Iterator[str]:
    with serve_directory(clips.short_mp4.parent) as url:
        yield url


@pytest.fixture
def page(app_url):
    with chromium() as browser:
        context = new_context(browser)
        page = context.new_page()
        page.goto(app_url)
        page.wait_for_selector("#run")
        yield page
        context.close()


def open_backend(page) -> None:
    if not page.locator("#backend-mode").is_visible():
        page.get_by_text("Backend", exact=True).click()


def choose_remote(page, url: str, key: str) -> None:
    open_backend(page)
    page.get_by_label("Remote (RunPod or a Subtide server)").check()
    page.locator("#backend-url input, #backend-url textarea").fill(url)
    key_box = page.locator("#backend-key input")
    key_box.fill(key)
    key_box.press("Tab")  # saved when the box is left


REPORT = "#backend-report .subtide-backend"


def check(page) -> str:
    """Presses Check backend and returns the new report (not the one shown before)."""
    before = page.locator(REPORT).inner_text() if page.locator(REPORT).count() else ""
    page.click("#check-backend")
    page.wait_for_function(
        f"() => document.querySelector({json.dumps(REPORT)})?.innerText"
        f" && document.querySelector({json.dumps(REPORT)}).innerText !== {json.dumps(before)}"
    )
    return page.locator(REPORT).inner_text()


def test_a_job_runs_on_the_remote_server(page, server, media):
    server_url, records = server
    before = set(records.glob("*.json"))

    choose_remote(page, server_url, "wrong-token")
    report = check(page)
    assert "Subtide server" in report and "SUBTIDE_AUTH_TOKEN" in report
    assert page.locator("#backend-report [data-state=failed]").count() == 1

    choose_remote(page, server_url, TOKEN)
    report = check(page)
    assert page.locator("#backend-report [data-state=ok]").count() == 1, report
    assert "Ready" in report and "Whisper model: bundled:tiny.en" in report

    page.locator("#url input, #url textarea").fill(f"{media}/short_en.mp4")
    page.click("#run")
    page.wait_for_selector(DONE)
    assert page.locator('#cues [data-testid="cell-0-4"]').inner_text().strip()
    # The server ran it: its record is there, and it is the only new one.
    new = set(records.glob("*.json")) - before
    assert len(new) == 1
    record = json.loads(next(iter(new)).read_text())
    assert record["status"] == "done" and record["result"]["cues"]

    # The choice, the URL and the key come back after a reload, from the browser's storage.
    page.reload()
    page.wait_for_selector("#run")
    open_backend(page)
    page.wait_for_function(
        "() => document.querySelector('#backend-key input')?.value === " + json.dumps(TOKEN)
    )
    stored = page.evaluate(f"() => localStorage.getItem({json.dumps(STORAGE)})")
    assert stored and TOKEN not in stored  # encrypted at rest
    assert page.locator("#backend-url input, #backend-url textarea").input_value() == server_url


def test_a_bad_backend_url_is_explained_before_anything_runs(page, media):
    choose_remote(page, "https://api.runpod.ai/v2/", "rpa_x")
    assert "ENDPOINT_ID" in check(page)
    page.locator("#url input, #url textarea").fill(f"{media}/short_en.mp4")
    page.click("#run")
    page.wait_for_selector("#error [data-state=error]")
    assert "ENDPOINT_ID" in page.locator("#error").inner_text()
