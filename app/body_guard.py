"""One limit on request bodies for every route of the server, the mounted app's included.

A body larger than the upload limit is refused with 413 (by its Content-Length before a byte is
read, or as soon as it passes the limit), and a body that arrives too slowly with 408: a client
that trickles a byte a second would otherwise hold a connection, and its memory, for ever. The
time allowed grows with what arrives (like Apache's mod_reqtimeout), so a large upload over a
slow but honest line is never cut.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.formparsers import MultiPartException

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Any  # Callable[[], Awaitable[Message]]
Send = Any  # Callable[[Message], Awaitable[None]]
# (path, code, message, hint) -> the JSON body of an error: the app's own shape, which may
# differ by route (app.server.error_body).
ErrorBody = Callable[[str, str, str, "str | None"], dict[str, Any]]


def plain_error_body(_path: str, code: str, message: str, hint: str | None) -> dict[str, Any]:
    """The body for an app that names no shape of its own: one for every path."""
    return {"error": {"code": code, "message": message, "hint": hint}}


class BodyRefused(MultiPartException):
    """Raised to the app in place of the rest of a refused body. A MultiPartException because
    that is what makes Starlette's and Gradio's upload parsers delete the part they stored
    (a client that merely leaves would have them keep it)."""


@dataclass(frozen=True)
class BodyLimits:
    max_bytes: int
    # Time for the whole body: `timeout_s`, plus a second per `min_bytes_per_s` received.
    timeout_s: float
    min_bytes_per_s: float


@dataclass
class _Refusal:
    status: int
    code: str
    message: str
    hint: str


class BodyGuard:
    """ASGI middleware: refuses a request body that is too large or too slow."""

    def __init__(
        self, app: Any, limits: BodyLimits, error_body: ErrorBody = plain_error_body
    ) -> None:
        self._app, self._limits, self._error_body = app, limits, error_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        if _declared_length(scope) > self._limits.max_bytes:
            await self._answer(scope, send, self._too_large())
            return
        await _GuardedRequest(self, receive, send).run(scope)

    async def _answer(self, scope: Scope, send: Send, refusal: _Refusal) -> None:
        # The body has the shape of the route refused.
        body = self._error_body(route_path(scope), refusal.code, refusal.message, refusal.hint)
        await _answer(send, refusal.status, body)

    def _too_large(self) -> _Refusal:
        limit = size_label(self._limits.max_bytes)
        return _Refusal(
            413,
            "too_large",
            f"The upload is larger than this server's limit of {limit}.",
            "Send a shorter clip, or only its audio (Opus or MP3).",
        )

    def _too_slow(self) -> _Refusal:
        return _Refusal(
            408,
            "upload_timeout",
            "The upload arrived too slowly and was stopped.",
            "Try again on a faster connection, or send only the audio (Opus or MP3).",
        )


class _GuardedRequest:
    """One request: its body read against the limits, its answer replaced by a refusal."""

    def __init__(self, guard: BodyGuard, receive: Receive, send: Send) -> None:
        self._guard, self._receive, self._send = guard, receive, send
        self._limits = guard._limits
        # On the event loop's clock, which asyncio.timeout_at reads.
        self._deadline = asyncio.get_running_loop().time() + self._limits.timeout_s
        self._received = 0
        self._body_done = False
        self._refusal: _Refusal | None = None
        self._started = False

    async def run(self, scope: Scope) -> None:
        try:
            await self._guard._app(scope, self._receive_guarded, self._send_guarded)
        except Exception:
            # The app gave up on the body we refused; the refusal below answers.
            if self._refusal is None:
                raise
        if self._refusal and not self._started:
            await self._guard._answer(scope, self._send, self._refusal)

    async def _receive_guarded(self) -> Message:
        if self._refusal:
            raise BodyRefused(self._refusal.message)
        if self._body_done:  # only the client leaving is left to hear: no clock on that
            return await self._receive()
        try:
            # asyncio.timeout, not wait_for: no task per chunk of a large upload.
            async with asyncio.timeout_at(self._deadline):
                message = await self._receive()
        except TimeoutError:
            self._refusal = self._guard._too_slow()
            raise BodyRefused(self._refusal.message) from None
        if message["type"] == "http.request":
            size = len(message.get("body", b""))
            self._received += size
            self._deadline += size / self._limits.min_bytes_per_s
            self._body_done = not message.get("more_body", False)
            if self._received > self._limits.max_bytes:
                self._refusal = self._guard._too_large()
                raise BodyRefused(self._refusal.message)
        return message

    async def _send_guarded(self, message: Message) -> None:
        if self._refusal:
            return  # the app's answer to a body it never got whole; ours goes instead
        self._started = self._started or message["type"] == "http.response.start"
        await self._send(message)


def route_path(scope: Scope) -> str:
    """The request's path as the app's routes see it, behind a proxy's prefix (root_path) or
    not."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _declared_length(scope: Scope) -> int:
    for name, value in scope.get("headers", []):
        if name == b"content-length" and value.isdigit():
            return int(value)
    return 0


async def _answer(send: Send, status: int, error: dict[str, Any]) -> None:
    body = json.dumps(error).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        # The rest of the body is never read: the connection can't carry another request.
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def size_label(limit: int) -> str:
    """2000000 -> "2 MB", 65536 -> "66 KB": a limit as a person reads it, never "0 MB"."""
    if limit >= 1_000_000:
        return f"{limit / 1e6:g} MB" if limit % 100_000 == 0 else f"{limit / 1e6:.1f} MB"
    return f"{max(1, round(limit / 1000))} KB"
