"""HTTP servers on 127.0.0.1 for tests: any handler, and a static file server that answers
Range requests, as downloaders expect (or, when told, ignores them), and counts what it sends."""

from __future__ import annotations

import io
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socketserver import BaseRequestHandler

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_BLOCK = 64 * 1024


@dataclass
class Traffic:
    """What a served directory sent: body bytes handed to the clients' connections (a client
    that hangs up stops the count), and the Range header of each request ("" when none)."""

    bytes_sent: int = 0
    ranges: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, sent: int) -> None:
        with self._lock:
            self.bytes_sent += sent


def serve_directory(
    root: Path, *, traffic: Traffic | None = None, ranges: bool = True, rate: float = 0.0
) -> AbstractContextManager[str]:
    """Serve `root` while the block runs; yields the base URL "http://127.0.0.1:PORT".
    `traffic` is filled in as files are sent; `ranges=False` stands for a server that ignores
    Range and always sends the whole file; `rate` (bytes per second, 0: no limit) for a slow
    one."""
    handler = _RangeHandler if ranges else _FileHandler
    traffic = traffic or Traffic()
    return serve(partial(handler, directory=str(root), traffic=traffic, rate=rate))


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


class _FileHandler(SimpleHTTPRequestHandler):
    """Whole files only: a Range header is ignored, as some servers do."""

    def __init__(self, *args: object, traffic: Traffic, rate: float, **kwargs: object) -> None:
        self.traffic, self.rate = traffic, rate  # before the base class handles the request
        super().__init__(*args, **kwargs)

    def setup(self) -> None:
        # A small send buffer: what is counted is about what reached the client, not what sat
        # in this server's own buffer when the client hung up.
        self.request.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _BLOCK)
        super().setup()

    def log_message(self, format: str, *args: object) -> None:
        pass

    def send_head(self) -> io.BufferedIOBase | None:
        self.traffic.ranges.append(self.headers.get("Range", ""))
        return self.head()

    def head(self) -> io.BufferedIOBase | None:
        return super().send_head()

    def copyfile(self, source: io.BufferedIOBase, outputfile: io.BufferedIOBase) -> None:
        # Block by block, so a client that hangs up stops the count where it stopped reading.
        while block := source.read(_BLOCK):
            outputfile.write(block)
            self.traffic.add(len(block))
            if self.rate:
                time.sleep(len(block) / self.rate)


class _RangeHandler(_FileHandler):
    def end_headers(self) -> None:
        self.send_header("Accept-Ranges", "bytes")
        super().end_headers()

    def head(self) -> io.BufferedIOBase | None:
        path = Path(self.translate_path(self.path))
        wanted = _RANGE.fullmatch(self.headers.get("Range", "").strip())
        # A missing or malformed Range (or several ranges) is answered with the whole file.
        if wanted is None or wanted.groups() == ("", "") or not path.is_file():
            return super().head()
        size = path.stat().st_size
        span = _span(wanted, size)
        if span is None:
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        first, last = span
        body = path.open("rb")
        body.seek(first)
        self.send_response(HTTPStatus.PARTIAL_CONTENT)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.send_header("Content-Length", str(last - first + 1))
        self.end_headers()
        return _Slice(body, last - first + 1)


class _Slice(io.RawIOBase):
    """The next `length` bytes of an open file, read as they are sent."""

    def __init__(self, file: io.BufferedIOBase, length: int) -> None:
        self._file, self._left = file, length

    def read(self, size: int = -1) -> bytes:
        wanted = self._left if size < 0 else min(size, self._left)
        data = self._file.read(wanted)
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._file.close()
        super().close()


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
