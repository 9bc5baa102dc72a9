"""An httpx client whose connections go only to addresses the URL guard judged.

For the LLM URL a job gives: it was judged when the job began, but the connection would resolve
the name again, and a name that answers a public address first and a private one later (DNS
rebinding) would turn translation requests into requests into the server's own network. Here
each connection resolves through the guard and connects to an address it judged; TLS still
sends and verifies the host name. No proxy from the environment and no redirects: either would
lead past the pin.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from engine.protocol import SubtideError
from engine.url_guard import UrlGuard


class _JudgedBackend(httpcore.SyncBackend):
    def __init__(self, guard: UrlGuard) -> None:
        self._guard = guard

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            answers = self._guard.addresses(host, port)
        except SubtideError as exc:
            raise httpcore.ConnectError(exc.message) from None
        last: Exception | None = None
        for *_, sockaddr in answers:
            try:
                # A numeric address: the socket connects to it without another lookup.
                return super().connect_tcp(
                    sockaddr[0], port, timeout, local_address, socket_options
                )
            except httpcore.ConnectError as exc:
                last = exc
        raise last or httpcore.ConnectError(f"Could not connect to {host}")


class _PinnedTransport(httpx.HTTPTransport):
    def __init__(self, guard: UrlGuard) -> None:
        super().__init__(trust_env=False)
        # httpx takes no network backend of its own: its pool is rebuilt with one. The
        # transport's mapping of httpcore's errors to httpx's, which the OpenAI SDK reads, stays.
        self._pool = httpcore.ConnectionPool(
            ssl_context=self._pool._ssl_context,
            network_backend=_JudgedBackend(guard),
        )


def guarded_client(guard: UrlGuard, timeout: float) -> httpx.Client:
    """A client for URLs a stranger gave: every connection judged by `guard`."""
    return httpx.Client(
        transport=_PinnedTransport(guard),
        timeout=timeout,
        trust_env=False,
        follow_redirects=False,
    )
