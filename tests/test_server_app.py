"""The Gradio app as `subtide serve` mounts it, probed from outside as a stranger on the internet
would: logged in with the token, a client names server files as its upload (the file must never
come back, and the refusal must say why without the path); uploads obey the server's limit; and
the login page and the app's config never show the server's LLM settings."""

from __future__ import annotations

import json
import random
import uuid
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import Mount

from app.config import Settings
from app.server import create_app
from engine.protocol import SubtideError
from tests.support.api_server import running, wait_ready
from tests.support.timing import HANG_GUARD_S
from ui.uploads import NOT_UPLOADED, Uploads

TOKEN = "app-token-for-the-probe"
LLM_URL = "http://10.9.8.7:1234/v1"
LLM_MODEL = "secret-model-xyz"
LLM_KEY = "sk-server-key-never-shown"
SECRET_LINE = "the vault code is 7421"
UPLOAD_LIMIT_MB = 0.2
OFFERED = ["bundled:tiny.en", "tiny", "base"]


@dataclass
class Server:
    url: str
    client: httpx.Client  # logged in to the app
    uploads: Path  # Gradio's upload folder for this app
    blocks: Any
    secrets: Path  # server files that no client may read


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    """The server with its app, a token and LLM settings of its own; no Whisper (subtitle files need
    none), and Gradio's uploads in a folder of this module's, so what it stores can be seen."""
    root = tmp_path_factory.mktemp("server-app")
    secrets = root / "server-files"
    secrets.mkdir()
    (secrets / "notes.srt").write_text(f"1\n00:00:00,000 --> 00:00:02,000\n{SECRET_LINE}\n")
    _write_wav(secrets / "voice.wav")
    settings = Settings(
        whisper_model=OFFERED[0],
        whisper_models=",".join(OFFERED[1:]),
        enable_whisper=False,
        cache_dir=root / "cache",
        subtide_auth_token=TOKEN,
        server_api_url=LLM_URL,
        server_model=LLM_MODEL,
        server_api_key=LLM_KEY,
        max_upload_mb=UPLOAD_LIMIT_MB,
        rate_limit_per_minute=0,
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GRADIO_TEMP_DIR", str(root / "gradio"))
        app = create_app(settings)
        with running(app) as url, httpx.Client(base_url=url, timeout=HANG_GUARD_S) as client:
            wait_ready(client)
            login = client.post("/login", data={"username": "subtide", "password": TOKEN})
            assert login.json() == {"success": True}
            yield Server(url, client, root / "gradio", _mounted_blocks(app), secrets)


def _write_wav(path: Path) -> None:
    """Half a second of noise: bytes that come back only if the file itself does."""
    noise = random.Random(7).randbytes(16_000)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes(noise)


def _mounted_blocks(app: Any) -> Any:
    mounted = next(route.app for route in app.routes if isinstance(route, Mount))
    return mounted.get_blocks()


def file_data(path: str | Path) -> dict[str, Any]:
    return {"path": str(path), "meta": {"_type": "gradio.FileData"}}


def run_app(client: httpx.Client, values: dict[str, Any]) -> str:
    """Calls the app's run function through Gradio's queue, as its page does: the form's own
    values, with `values` (by elem_id or label) in their place. Returns the run's raw SSE."""
    config = client.get("/config").json()
    run = next(dep for dep in config["dependencies"] if dep.get("api_name") == "run")
    components = {component["id"]: component["props"] for component in config["components"]}
    data = []
    for component_id in run["inputs"]:
        props = components[component_id]
        named = [key for key in (props.get("elem_id"), props.get("label")) if key in values]
        data.append(values[named[0]] if named else props.get("value"))
    session = uuid.uuid4().hex
    joined = client.post(
        "/gradio_api/queue/join",
        json={"data": data, "fn_index": run["id"], "session_hash": session, "trigger_id": None},
    )
    assert joined.status_code == 200, joined.text
    lines = []
    with client.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}) as sse:
        for line in sse.iter_lines():
            lines.append(line)
            if '"msg":"process_completed"' in line:
                break
    return "\n".join(lines)


def completed(sse: str) -> dict[str, Any]:
    last = sse.rsplit("data: ", 1)[-1]
    message = json.loads(last)
    assert message["msg"] == "process_completed", message
    return message


def served_files(client: httpx.Client, sse: str) -> list[bytes]:
    """Every file the run's answer points at, fetched as the page's players would."""
    found = []
    for part in sse.split('"url":"')[1:]:
        url = part.split('"', 1)[0]
        if "/gradio_api/file=" in url:
            found.append(client.get(url).content)
    return found


@contextmanager
def gradio_check_off(server: Server) -> Iterator[None]:
    """The mounted app as a Gradio that skips its own upload check would run it: only the
    app's handlers stand between a client and the server's files."""
    server.blocks.has_launched = False
    try:
        yield
    finally:
        server.blocks.has_launched = True


def assert_refused_without_leaking(server: Server, sse: str, sent: Path, name: str) -> None:
    secret = server.secrets / name
    assert NOT_UPLOADED in sse
    assert SECRET_LINE not in sse
    assert str(sent) not in sse and str(server.secrets) not in sse
    assert "Traceback" not in sse
    assert secret.read_bytes() not in served_files(server.client, sse)


@pytest.mark.parametrize("name", ["notes.srt", "voice.wav"])
@pytest.mark.parametrize("via", ["path", "path out of the upload folder"])
@pytest.mark.parametrize("check", ["Gradio's", "the handlers'"])
def test_a_server_file_named_as_the_upload_is_refused(server, name, via, check):
    path = server.secrets / name
    if via != "path":
        server.uploads.mkdir(exist_ok=True)
        path = server.uploads / ".." / "server-files" / name
    if check == "Gradio's":
        sse = run_app(server.client, {"upload": file_data(path)})
        # Refused before the run function starts, as a message the page shows.
        assert completed(sse)["success"] is False
    else:
        with gradio_check_off(server):
            sse = run_app(server.client, {"upload": file_data(path)})
        assert completed(sse)["success"] is True  # the page shows the error in its own box
    assert_refused_without_leaking(server, sse, path, name)


@pytest.mark.parametrize("name", ["notes.srt", "voice.wav"])
def test_the_file_route_serves_no_server_file(server, name):
    secret = server.secrets / name
    answer = server.client.get(f"/gradio_api/file={secret}")
    assert answer.status_code == 403
    assert secret.read_bytes() not in answer.content


def test_an_upload_within_the_limit_is_stored_and_can_be_used(server):
    srt = b"1\n00:00:00,000 --> 00:00:02,000\nA small upload works.\n"
    stored = server.client.post("/gradio_api/upload", files={"files": ("mine.srt", srt)})
    assert stored.status_code == 200, stored.text
    [path] = stored.json()
    assert Path(path).resolve().is_relative_to(server.uploads.resolve())
    sse = run_app(server.client, {"upload": file_data(path)})
    assert completed(sse)["success"] is True
    assert "A small upload works." in sse
    assert NOT_UPLOADED not in sse


def _stored(server: Server) -> set[Path]:
    return {path for path in server.uploads.rglob("*") if path.is_file()}


def test_an_upload_over_the_limit_is_refused_and_nothing_is_stored(server):
    before = _stored(server)
    big = b"x" * int(UPLOAD_LIMIT_MB * 1e6 * 1.5)
    answer = server.client.post("/gradio_api/upload", files={"files": ("big.srt", big)})
    assert answer.status_code == 413
    assert _stored(server) == before


def test_an_upload_without_a_length_cut_at_the_limit_leaves_nothing(server):
    before = _stored(server)
    boundary = "subtide-probe"

    def body() -> Iterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="big.srt"'
            "\r\nContent-Type: application/octet-stream\r\n\r\n"
        ).encode()
        for _ in range(int(UPLOAD_LIMIT_MB * 1e6 * 1.5) // 65_536):
            yield b"y" * 65_536
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    answer = server.client.post("/gradio_api/upload", content=body(), headers=headers)
    assert answer.status_code == 413
    assert _stored(server) == before


def test_no_page_shows_the_servers_llm_settings(server):
    with httpx.Client(base_url=server.url, timeout=HANG_GUARD_S) as stranger:
        login_page = stranger.get("/")
        assert login_page.status_code == 200
        config_refused = stranger.get("/config")
    assert config_refused.status_code == 401
    pages = [login_page.text, config_refused.text]
    pages += [server.client.get(path).text for path in ("/", "/config", "/gradio_api/info")]
    for page in pages:
        for secret in (LLM_URL, "10.9.8.7", LLM_MODEL, LLM_KEY):
            assert secret not in page


def test_the_llm_boxes_start_empty_and_mean_the_servers_own(server):
    components = server.client.get("/config").json()["components"]
    boxes = {c["props"].get("label"): c["props"] for c in components}
    for label in ("API base URL", "Model"):
        assert boxes[label]["value"] == ""
        assert boxes[label]["placeholder"] == "the server's own"


def test_only_the_offered_whisper_models_can_be_picked(server):
    components = server.client.get("/config").json()["components"]
    [dropdown] = [c["props"] for c in components if c["props"].get("label") == "Whisper model"]
    assert [value for _, value in dropdown["choices"]] == ["", *OFFERED]
    assert dropdown["allow_custom_value"] is False
    srt = b"1\n00:00:00,000 --> 00:00:02,000\nHello.\n"
    [path] = server.client.post("/gradio_api/upload", files={"files": ("m.srt", srt)}).json()
    sse = run_app(server.client, {"upload": file_data(path), "Whisper model": "large-v3"})
    assert completed(sse)["success"] is False


def test_only_what_the_upload_route_answered_passes_the_check(tmp_path):
    uploads = Uploads()
    stored = tmp_path / "gradio" / "abc" / "clip.mp4"
    uploads.record(json.dumps([str(stored)]).encode())
    uploads.check(None)
    uploads.check(str(stored))
    uploads.check(str(stored.parent / ".." / "abc" / "clip.mp4"))
    beside = stored.parent / "copied-by-gradio.mp4"
    for other in ("/etc/passwd", beside, stored.parent / ".." / ".." / "x.srt"):
        with pytest.raises(SubtideError, match=NOT_UPLOADED) as refused:
            uploads.check(str(other))
        assert str(other) not in f"{refused.value.message} {refused.value.hint}"
