"""Our HTTP API (app.server) under real uvicorn on 127.0.0.1, in a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn


@contextmanager
def running(app: Any) -> Iterator[str]:
    """Serve `app` while the block runs; yields its base URL once uvicorn has started (its
    lifespan has begun loading the models, which may not be done yet)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
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
