"""Our HTTP API (app.server) under real uvicorn on 127.0.0.1: in a thread, or in a process of
its own that a test can kill as a pod is killed."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import uvicorn

from tests.support.cli import ROOT

if TYPE_CHECKING:
    from fastapi import FastAPI


@contextmanager
def running(app: Any, **uvicorn_options: Any) -> Iterator[str]:
    """Serve `app` while the block runs; yields its base URL once uvicorn has started (its
    lifespan has begun loading the models, which may not be done yet). `uvicorn_options`: as
    `subtide serve` runs it (ServerOptions.uvicorn_options())."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", **uvicorn_options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def app_from_environment() -> FastAPI:
    """The API as `subtide serve` builds it from the environment, without the Gradio app (its
    import alone takes seconds): for `uvicorn --factory` in a process of its own."""
    from app.config import Settings
    from app.server import create_app

    return create_app(Settings(), mount_ui=False)


class ServerProcess:
    """`app_from_environment` under uvicorn, in a process group of its own (the server and any
    process it starts), with `environment` added to this process's."""

    def __init__(self, environment: dict[str, str]) -> None:
        port = closed_port()
        self.url = f"http://127.0.0.1:{port}"
        factory = "tests.support.api_server:app_from_environment"
        command = [sys.executable, "-m", "uvicorn", factory, "--factory", "--port", str(port)]
        self._process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--log-level", "warning"],
            cwd=ROOT,
            env={**os.environ, **environment},
            start_new_session=True,
        )

    def wait_listening(self, seconds: float) -> None:
        """Until the server answers at all (its models may still be loading)."""
        deadline = time.monotonic() + seconds
        while True:
            assert self._process.poll() is None, "the server exited"
            try:
                httpx.get(f"{self.url}/ping", timeout=1)
                return
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server never answered"
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL to the whole group, as when a pod is taken back: nothing gets to clean up."""
        with contextlib.suppress(ProcessLookupError):  # the group is gone already
            os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait()


@contextmanager
def server_process(environment: dict[str, str], seconds: float) -> Iterator[ServerProcess]:
    """A ServerProcess that answers within `seconds`; killed when the block ends, if alive."""
    server = ServerProcess(environment)
    try:
        server.wait_listening(seconds)
        yield server
    finally:
        server.kill()


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (it was just free)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(client: httpx.Client, seconds: float = 60) -> None:
    """Waits until the server's /ping says 200: its models are loaded."""
    deadline = time.monotonic() + seconds
    while client.get("/ping").status_code != 200:
        assert time.monotonic() < deadline, "the server never became ready"
        time.sleep(0.05)


# Each line: the status (or "timeout"), then when the ping was sent and answered, by the
# monotonic clock, which on Linux is one clock for every process.
_PINGER = """
import sys, time, httpx
with httpx.Client(base_url=sys.argv[1], timeout=float(sys.argv[2])) as client:
    while True:
        sent = time.monotonic()
        try:
            status = client.get("/ping").status_code
        except httpx.TimeoutException:
            status = "timeout"
        print(status, sent, time.monotonic(), flush=True)
        time.sleep(0.02)
"""


@dataclass(frozen=True)
class Ping:
    status: str  # "200", "204", ... or "timeout"
    sent: float  # time.monotonic()
    answered: float

    @classmethod
    def parse(cls, line: str) -> Ping:
        status, sent, answered = line.split()
        return cls(status, float(sent), float(answered))


@contextmanager
def pinging(base_url: str, timeout: float) -> Iterator[list[Ping]]:
    """Pings `/ping` every 20 ms while the block runs, from another process as a load
    balancer's pings come (this process's threads don't skew them). The block starts after the
    first answer; the list holds every ping once the block has ended."""
    process = subprocess.Popen(
        [sys.executable, "-c", _PINGER, base_url, str(timeout)], stdout=subprocess.PIPE, text=True
    )
    pings: list[Ping] = []
    try:
        pings.append(Ping.parse(process.stdout.readline()))  # type: ignore[union-attr]
        yield pings
    finally:
        process.terminate()
        pings.extend(Ping.parse(line) for line in process.communicate()[0].splitlines())
