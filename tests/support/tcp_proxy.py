"""A TCP proxy on 127.0.0.1 that injects network faults: it forwards every connection to a
target and can cut all open connections, now or once a number of bytes has gone to clients.

It records what clients sent on each connection, so a test can see the requests that really
went out (a resumed stream's `Last-Event-ID`, say).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from urllib.parse import urlsplit

_CHUNK = 16 * 1024
# Enough of each connection's requests to read their headers; an upload's body is not needed.
_RECORD_BYTES = 256 * 1024


class _Connection:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client, self.upstream = client, upstream
        self.sent = bytearray()  # what the client sent, up to _RECORD_BYTES
        self._pumps = 2
        self._lock = threading.Lock()

    def pump_done(self) -> bool:
        """True for the second of the two directions to finish: the connection is over."""
        with self._lock:
            self._pumps -= 1
            return self._pumps == 0

    def close(self) -> None:
        for sock in (self.client, self.upstream):
            # shutdown wakes the pump threads blocked in recv; close alone would not.
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class TcpProxy:
    def __init__(self, target_url: str) -> None:
        parts = urlsplit(target_url)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._lock = threading.Lock()
        self._open: list[_Connection] = []
        self._all: list[_Connection] = []
        self._budget: int | None = None  # bytes still to pass to clients before a cut
        self.cuts = 0
        self._thread = threading.Thread(target=self._accept, name="tcp-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def cut(self) -> None:
        """Closes every open connection, both ways, now."""
        with self._lock:
            doomed, self._open = self._open, []
            self._budget = None
            self.cuts += 1
        for connection in doomed:
            connection.close()

    def cut_after(self, n_bytes: int) -> None:
        """Lets `n_bytes` more reach clients (over all connections), then cuts them all, once."""
        with self._lock:
            self._budget = n_bytes

    def requests(self) -> list[bytes]:
        """What the clients sent, one entry per connection, in order of connection."""
        with self._lock:
            return [bytes(connection.sent) for connection in self._all]

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            doomed, self._open = self._open, []
        for connection in doomed:
            connection.close()
        self._thread.join(timeout=5)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # the listener was closed
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()  # the client sees the refusal as a dropped connection
                continue
            upstream.settimeout(None)
            connection = _Connection(client, upstream)
            with self._lock:
                self._open.append(connection)
                self._all.append(connection)
            for pump in (self._upstream, self._downstream):
                threading.Thread(target=self._pump, args=(pump, connection), daemon=True).start()

    def _pump(self, direction: Callable[[_Connection], None], connection: _Connection) -> None:
        direction(connection)
        if connection.pump_done():
            with self._lock:
                if connection in self._open:
                    self._open.remove(connection)
            connection.close()

    def _upstream(self, connection: _Connection) -> None:
        while data := _recv(connection.client):
            room = _RECORD_BYTES - len(connection.sent)
            if room > 0:
                connection.sent += data[:room]
            if not _send(connection.upstream, data):
                return
        _half_close(connection.upstream)

    def _downstream(self, connection: _Connection) -> None:
        while data := _recv(connection.upstream):
            allowed, cut_now = self._take(len(data))
            if not _send(connection.client, data[:allowed]):
                return
            if cut_now:
                self.cut()
                return
        _half_close(connection.client)

    def _take(self, size: int) -> tuple[int, bool]:
        """How many of `size` bytes may pass, and whether the budget is spent with them."""
        with self._lock:
            if self._budget is None:
                return size, False
            allowed = min(size, self._budget)
            self._budget -= allowed
            return allowed, self._budget == 0


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(_CHUNK)
    except OSError:
        return b""


def _send(sock: socket.socket, data: bytes) -> bool:
    try:
        sock.sendall(data)
        return True
    except OSError:
        return False


def _half_close(sock: socket.socket) -> None:
    """Passes an orderly end of one direction on (HTTP keeps the other open)."""
    with suppress(OSError):
        sock.shutdown(socket.SHUT_WR)


@contextmanager
def tcp_proxy(target_url: str) -> Iterator[TcpProxy]:
    """A proxy to `target_url`'s host and port while the block runs."""
    proxy = TcpProxy(target_url)
    try:
        yield proxy
    finally:
        proxy.close()
