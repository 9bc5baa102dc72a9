"""The shared HTTP layer of the remote clients, against a real server on 127.0.0.1 that
answers from a script of statuses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from cloud.detect import Kind, Target
from cloud.transport import AuthError, BackendError, NotFoundError, Transport, UnreachableError
from tests.support.api_server import closed_port
from tests.support.http_server import serve


class Script:
    """The statuses to answer, in order (then 200), and what was asked."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.seen: list[tuple[str, str | None]] = []


@pytest.fixture
def script() -> Iterator[tuple[Script, str]]:
    state = Script()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.answer()

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.answer()

        def answer(self) -> None:
            state.seen.append((self.command, self.headers.get("Authorization")))
            status = state.statuses.pop(0) if state.statuses else 200
            body = json.dumps({"error": f"status {status}"}).encode()
            self.send_response(status)
            if status in (429, 503):
                self.send_header("Retry-After", "0")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serve(Handler) as url:
        yield state, url


def _transport(url: str, kind: Kind = Kind.SERVERLESS, key: str | None = "rpa_key") -> Transport:
    return Transport(Target.assume(kind, url), key, retries=3, backoff_s=0.01)


def test_transient_failures_are_retried(script):
    state, url = script
    state.statuses = [503, 502, 429]
    response = _transport(url).request("GET", "/status/x")
    assert response.status_code == 200
    assert [auth for _, auth in state.seen] == ["Bearer rpa_key"] * 4


def test_a_post_is_repeated_only_when_surely_not_acted_on(script):
    state, url = script
    state.statuses = [429, 500]
    with pytest.raises(BackendError) as caught:
        _transport(url).request("POST", "/run", idempotent=False, json={})
    assert len(state.seen) == 2  # the 429 again, the 500 not: it may have started a job
    assert "500" in caught.value.message and "status 500" in caught.value.message


def test_retries_end_in_a_clear_error(script):
    state, url = script
    state.statuses = [503] * 10
    with pytest.raises(BackendError) as caught:
        _transport(url).request("GET", "/health")
    assert caught.value.code == "backend_unavailable"
    assert len(state.seen) == 4


@pytest.mark.parametrize(
    ("status", "error", "code"),
    [
        (401, AuthError, "auth"),
        (403, AuthError, "auth"),
        (404, NotFoundError, "backend_unavailable"),
    ],
)
def test_refusals_carry_the_guides_advice(script, status, error, code):
    state, url = script
    state.statuses = [status]
    with pytest.raises(error) as caught:
        _transport(url).request("GET", "/health")
    assert caught.value.code == code
    assert caught.value.hint == Target.assume(Kind.SERVERLESS, url).hint(status)
    assert "rpa_key" not in caught.value.message + caught.value.hint
    assert len(state.seen) == 1


def test_no_key_sends_no_authorization(script):
    state, url = script
    _transport(url, Kind.HTTP, key=None).request("GET", "/health")
    assert state.seen == [("GET", None)]


def test_a_closed_port_is_unreachable():
    with pytest.raises(UnreachableError) as caught:
        _transport(f"http://127.0.0.1:{closed_port()}", Kind.HTTP).request("GET", "/ping")
    assert "subtide serve" in caught.value.hint
