"""What an SSRF probe needs: HTTP sites on 127.0.0.1 that record every request they receive, and
a resolver that answers host names as a test says (DNS rebinding included).

A site that "received no request" is a claim about `Site.requests`; a test that relies on it
should also show that the same route does reach the site when nothing is refused.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from tests.support.http_server import serve


@dataclass
class Reply:
    body: bytes = b""
    content_type: str = "application/octet-stream"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


def redirect(location: str) -> Reply:
    return Reply(status=302, headers={"Location": location})


class Site:
    """Fixed replies by path; every request's path (with its query) is kept, in order, and
    beside it the request's headers."""

    def __init__(self, routes: dict[str, Reply]) -> None:
        self.routes = routes
        self.requests: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.url = ""

    @property
    def port(self) -> int:
        return int(urlsplit(self.url).port or 0)


@contextmanager
def site(
    routes: dict[str, Reply] | None = None, *, tls: ssl.SSLContext | None = None
) -> Iterator[Site]:
    """A recording site on 127.0.0.1 while the block runs; `routes` may be filled in later.
    With `tls` (a server context) it speaks HTTPS."""
    recorder = Site(routes if routes is not None else {})
    with serve(partial(_Handler, site=recorder, tls=tls)) as url:
        recorder.url = url.replace("http:", "https:") if tls else url
        yield recorder


class _Handler(BaseHTTPRequestHandler):
    def __init__(self, *args: Any, site: Site, tls: ssl.SSLContext | None) -> None:
        self.site, self.tls = site, tls  # before the base class handles the request
        super().__init__(*args)

    def setup(self) -> None:
        if self.tls:
            self.request = self.tls.wrap_socket(self.request, server_side=True)
        super().setup()

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._answer(with_body=True)

    def do_HEAD(self) -> None:
        self._answer(with_body=False)

    def _answer(self, *, with_body: bool) -> None:
        self.site.headers.append(dict(self.headers.items()))
        self.site.requests.append(self.path)
        reply = self.site.routes.get(urlsplit(self.path).path, Reply(b"not found", status=404))
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if with_body:
            self.wfile.write(reply.body)


class Resolver:
    """socket.getaddrinfo for the names a test lists: each lookup of a name is answered with the
    next of its addresses (the last one repeats). Other names, and IP literals, go to the system.
    Every lookup is recorded, so a test can show which answers the guard was given."""

    def __init__(self, names: dict[str, list[str]]) -> None:
        self._names = names
        self.lookups: list[str] = []

    def __call__(
        self, host: str, port: int | None, family: int = 0, type: int = 0, proto: int = 0
    ) -> list[tuple[Any, ...]]:
        answers = self._names.get(host)
        earlier = self.lookups.count(host)
        self.lookups.append(host)
        address = host if answers is None else answers[min(earlier, len(answers) - 1)]
        return socket.getaddrinfo(address, port, family, type, proto)
