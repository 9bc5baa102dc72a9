"""HTTP servers on 127.0.0.1 for tests: any handler, and a static file server that answers
Range requests, as downloaders expect."""

from __future__ import annotations

import io
import re
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socketserver import BaseRequestHandler

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def serve_directory(root: Path) -> AbstractContextManager[str]:
    """Serve `root` while the block runs; yields the base URL "http://127.0.0.1:PORT"."""
    return serve(partial(_RangeHandler, directory=str(root)))


@contextmanager
def serve(handler: Callable[..., BaseRequestHandler]) -> Iterator[str]:
    """Run `handler` on 127.0.0.1 while the block runs; yields "http://127.0.0.1:PORT"."""
    server = _QuietServer(("127.0.0.1", 0), handler)
    # A short poll interval keeps shutdown (once per test that starts a server) quick.
    loop = partial(server.serve_forever, poll_interval=0.05)
    thread = threading.Thread(target=loop, name="test-http-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: socket.socket, client_address: tuple[str, int]) -> None:
        # Clients that hang up mid-transfer (a cancelled download) are normal here, not noise.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _RangeHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def end_headers(self) -> None:
        self.send_header("Accept-Ranges", "bytes")
        super().end_headers()

    def send_head(self) -> io.BufferedIOBase | None:
        path = Path(self.translate_path(self.path))
        wanted = _RANGE.fullmatch(self.headers.get("Range", "").strip())
        # A missing or malformed Range (or several ranges) is answered with the whole file.
        if wanted is None or wanted.groups() == ("", "") or not path.is_file():
            return super().send_head()
        size = path.stat().st_size
        span = _span(wanted, size)
        if span is None:
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        first, last = span
        with path.open("rb") as source:
            source.seek(first)
            # Fixtures are small, so the slice is simply read into memory.
            body = io.BytesIO(source.read(last - first + 1))
        self.send_response(HTTPStatus.PARTIAL_CONTENT)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.send_header("Content-Length", str(last - first + 1))
        self.end_headers()
        return body


def _span(wanted: re.Match[str], size: int) -> tuple[int, int] | None:
    """The requested bytes as inclusive (first, last), or None when none of them exist."""
    start, end = wanted.groups()
    if not start:  # "bytes=-N": the last N bytes
        first, last = max(size - int(end), 0), size - 1
    else:
        first, last = int(start), min(int(end), size - 1) if end else size - 1
    if first > last or first >= size:
        return None
    return first, last
