"""A relay on 127.0.0.1 through which ffmpeg reads one remote media file by byte ranges.

ffmpeg seeks in a file over HTTP with Range requests, so a time range of a long video costs
about its own bytes. But ffmpeg resolves host names and connects by itself, outside the URL
guard (engine.url_guard). So ffmpeg is given only this relay's address, and the relay forwards
each byte range ffmpeg asks for to `open_range`: a fetch the caller made safe (engine.media
builds it on the link's guarded yt-dlp session, which judges the host of every redirect hop and
connects only to addresses it judged).

ffmpeg asks for everything from a byte on and hangs up once it has what it needs (or when it
seeks: it then asks again from elsewhere). So the relay asks the media's server for that in
chunks that start small and grow, and asks for the next only once ffmpeg has taken in the last:
what is fetched stays close to what ffmpeg reads, whether a header or a long range.

The relay binds 127.0.0.1 only, answers one random path and nothing else, never redirects, and
logs nothing: the media's URL may carry tokens. An error upstream reaches ffmpeg as a bare 502;
the error itself is kept in `error` for the caller to report.
"""

from __future__ import annotations

import re
import secrets
import select
import socket
import struct
import threading
from collections.abc import Callable, Mapping
from functools import partial
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

try:  # how much of what a socket sent its reader has not taken in yet (Linux, where workers run)
    from fcntl import ioctl
    from termios import TIOCOUTQ
except ImportError:  # Windows: the relay then fetches a chunk further ahead
    ioctl = None  # type: ignore[assignment]

_ASKED = re.compile(r"bytes=(\d+)-(\d*)")
_ANSWERED = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_BLOCK = 64 * 1024
# The first chunk of each read (a header or an index often needs no more), and the largest
# (what may be fetched past the point where ffmpeg stops reading).
_FIRST_CHUNK = 32 * 1024
_MAX_CHUNK = 1024 * 1024
# The relay's send buffer toward ffmpeg: small, so the relay is held back as soon as ffmpeg
# stops reading, rather than filling a large buffer with bytes it will never read. ffmpeg's
# receive buffer is bounded too (see engine.media), or it would take in megabytes unasked.
_SEND_BUFFER = 64 * 1024
_POLL_S = 0.005
# How long ffmpeg, having taken in all it was sent, is given to hang up before more is fetched:
# it reads a little past the end of a range before it knows it is done.
_GRACE_S = 0.05


class Upstream(Protocol):
    """An open answer from the media's server (yt-dlp's Response has this shape)."""

    status: int
    headers: Mapping[str, str]

    def read(self, amt: int) -> bytes: ...

    def close(self) -> None: ...


# Opens bytes `first` to `last` (inclusive) of the media.
OpenRange = Callable[[int, int], Upstream]


class RelayError(Exception):
    """The media's server answered in a way a seeking reader can't use."""


class RangeRelay:
    """Serves the media behind `open_range` at `url` while the block runs.

    `max_chunk` (bytes; 0: the relay's own limit) bounds each request, as yt-dlp's HTTP
    downloader does for sites that slow down long requests. `suffix` (the media's extension)
    ends the path, a hint for ffmpeg's format probing. `until`, set by the caller, is the byte
    where a read is expected to end (0: not known): no chunk runs past it, so a read that stops
    near it fetches little more.
    """

    def __init__(self, open_range: OpenRange, *, max_chunk: int = 0, suffix: str = "") -> None:
        self.open_range = open_range
        self.max_chunk = min(max_chunk or _MAX_CHUNK, _MAX_CHUNK)
        self.size = 0  # the media's, once `seekable` has asked
        self.until = 0
        self.error: BaseException | None = None
        self.stopping = threading.Event()
        self._open: set[Upstream] = set()
        self._lock = threading.Lock()
        name = re.sub(r"[^A-Za-z0-9]", "", suffix)
        self.path = f"/{secrets.token_urlsafe(16)}/media" + (f".{name}" if name else "")
        self.url = ""  # set once the relay listens

    def __enter__(self) -> RangeRelay:
        self._server = _Server(("127.0.0.1", 0), partial(_Handler, relay=self))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}{self.path}"
        # A short poll interval: the relay stops as soon as the decode ends.
        loop = partial(self._server.serve_forever, poll_interval=0.05)
        self._thread = threading.Thread(target=loop, name="media-relay", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        # A handler may be waiting on the media's server: its answer is closed under it.
        with self._lock:
            for reply in list(self._open):
                reply.close()
        self._thread.join(timeout=5)

    def seekable(self) -> bool:
        """Whether the media's server answers byte ranges and states the media's size (else
        ffmpeg could only read the media from its start); learns that size. Asks for one byte."""
        reply = self.open_range(0, 0)
        try:
            span = _span(reply, 0)
        finally:
            reply.close()
        self.size = span[1] if span and span[1] is not None else 0
        return self.size > 0

    def chunk(self, first: int, last: int, length: int) -> tuple[Upstream, int]:
        """Bytes from `first` on, `length` of them at most and none past `last`: the open
        answer and how many bytes it holds."""
        reply = self.open_range(first, min(first + length - 1, last))
        with self._lock:
            self._open.add(reply)
        span = _span(reply, first)
        if span is None:
            self.close(reply)
            raise RelayError("the server answered other bytes than it was asked for")
        return reply, span[0] - first + 1

    def length_at(self, position: int, wanted: int) -> int:
        """How much to ask for at `position`: `wanted` up to the relay's limit, and not past
        `until`; a read that goes on from `until` starts small again."""
        if position == self.until:
            return _FIRST_CHUNK
        length = min(max(wanted, _FIRST_CHUNK), self.max_chunk)
        return min(length, self.until - position) if position < self.until else length

    def close(self, reply: Upstream) -> None:
        with self._lock:
            self._open.discard(reply)
        reply.close()

    def failed(self, error: BaseException) -> None:
        with self._lock:
            self.error = self.error or error


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # ffmpeg hangs up on every seek and at the range's end: nothing to report


class _Handler(BaseHTTPRequestHandler):
    def __init__(self, *args: Any, relay: RangeRelay) -> None:
        self.relay = relay  # before the base class handles the request
        super().__init__(*args)

    def setup(self) -> None:
        self.request.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SEND_BUFFER)
        super().setup()

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path != self.relay.path:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        size = self.relay.size
        first, last = _asked(self.headers.get("Range", ""), size)
        if first > last:
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Content-Range", f"bytes */{size}")
            self.end_headers()
            return
        length = self.relay.length_at(first, _FIRST_CHUNK)
        try:
            reply, held = self.relay.chunk(first, last, length)
        except Exception as error:  # the media's server: kept for the caller, a 502 to ffmpeg
            self.relay.failed(error)
            self.send_error(HTTPStatus.BAD_GATEWAY)
            return
        self.send_response(HTTPStatus.PARTIAL_CONTENT)
        if kind := reply.headers.get("Content-Type"):
            self.send_header("Content-Type", kind)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(last - first + 1))
        self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.end_headers()
        self._send_body(reply, held, first, last)

    def _send_body(self, reply: Upstream, held: int, first: int, last: int) -> None:
        """Sends chunk after chunk, each twice the last (see `RangeRelay.length_at`), until
        ffmpeg has all it asked for or hangs up."""
        position, length = first, held
        try:
            while True:
                copied = self._copy(reply)
                self.relay.close(reply)
                position += copied
                if copied < held:
                    raise RelayError("the server stopped sending the media")
                if position > last:
                    return
                if not self._taken_in():
                    return  # ffmpeg hung up, or the relay stops
                length = self.relay.length_at(position, length * 2)
                reply, held = self.relay.chunk(position, last, length)
        except (BrokenPipeError, ConnectionResetError):
            pass  # ffmpeg has what it wanted: it seeks elsewhere, or the range is decoded
        except Exception as error:
            self.relay.failed(error)
        finally:
            self.relay.close(reply)

    def _taken_in(self) -> bool:
        """Waits until ffmpeg has taken in all the relay sent, and a moment more; False when
        it hangs up first (it moved elsewhere or is done) or the relay stops."""
        while _unsent(self.request) and not self._hung_up(_POLL_S):
            pass
        return not self._hung_up(_GRACE_S)

    def _hung_up(self, wait_s: float) -> bool:
        """Whether ffmpeg closes its end within `wait_s` (or the relay stops)."""
        readable, _, _ = select.select([self.request], [], [], wait_s)
        gone = bool(readable) and not self.request.recv(1, socket.MSG_PEEK)
        return gone or self.relay.stopping.is_set()

    def _copy(self, reply: Upstream) -> int:
        copied = 0
        while block := reply.read(_BLOCK):
            self.wfile.write(block)
            copied += len(block)
        return copied


def _asked(header: str, size: int) -> tuple[int, int]:
    """The first and last byte ffmpeg asks for (it asks for one range at most, else the
    whole media) within the media's `size`."""
    wanted = _ASKED.fullmatch(header.strip())
    if wanted is None:
        return 0, size - 1
    last = int(wanted.group(2)) if wanted.group(2) else size - 1
    return int(wanted.group(1)), min(last, size - 1)


def _span(reply: Upstream, first: int) -> tuple[int, int | None] | None:
    """(last byte, media size or None) of a 206 answer that starts at `first`, else None."""
    if reply.status != HTTPStatus.PARTIAL_CONTENT:
        return None
    stated = _ANSWERED.fullmatch((reply.headers.get("Content-Range") or "").strip())
    if stated is None or int(stated.group(1)) != first:
        return None
    size = stated.group(3)
    return int(stated.group(2)), None if size == "*" else int(size)


def _unsent(sock: socket.socket) -> int:
    """Bytes sent on `sock` that its reader has not taken in yet; 0 where the system can't
    tell."""
    if ioctl is None:
        return 0
    try:
        return struct.unpack("i", ioctl(sock.fileno(), TIOCOUTQ, bytes(4)))[0]
    except OSError:  # a system where the call is for terminals only
        return 0
