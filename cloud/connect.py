"""From a pasted URL and key to a Backend, and the report "Check backend" shows."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from cloud.detect import Kind, Target, detect
from cloud.http import HttpBackend
from cloud.serverless import ServerlessBackend
from cloud.transport import Transport, UnreachableError, reach_hint
from engine.protocol import Backend, Health, SubtideError

# How long `reach` waits for a first answer. A backend that is up answers at once (a booting
# worker with 204, a wrong key with 401); the jobs' own requests retry for minutes, which is
# right once the backend has answered but far too long to learn that nothing is there.
REACH_TIMEOUT_S = 30.0


def connect(url: str, api_key: str | None = None) -> Backend:
    """The client for the backend at `url`; a `bad_input` SubtideError if it can be none."""
    return _backend(detect(url), api_key)


def reach(target: Target, api_key: str | None, *, timeout_s: float = REACH_TIMEOUT_S) -> None:
    """Returns as soon as the backend at `target` answers anything over HTTP; raises an
    UnreachableError, once and without retries, when it can't be reached or says nothing for
    `timeout_s` (a server that accepts connections and never answers)."""
    path = "/health" if target.kind is Kind.SERVERLESS else "/ping"
    transport = Transport(target, api_key, timeout=httpx.Timeout(timeout_s), retries=0)
    try:
        # Any status proves someone is there; the job reads what it means.
        transport.client.get(path)
    except httpx.TimeoutException:
        raise UnreachableError(
            f"The {target.kind.label} at {target.url} did not answer within {timeout_s:g} s.",
            reach_hint(target),
        ) from None
    except httpx.TransportError as exc:
        raise transport.unreachable(exc) from None
    finally:
        transport.close()


def _backend(target: Target, api_key: str | None) -> Backend:
    key = (api_key or "").strip() or None
    if target.kind is Kind.SERVERLESS:
        return ServerlessBackend(target.url, key, target=target)
    return HttpBackend(target.url, key, target=target)


@dataclass(frozen=True)
class Check:
    """What a backend URL is and whether it answers: for `subtide check` and the app."""

    url: str
    target: Target | None = None
    health: Health | None = None
    error: SubtideError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.health is not None and self.health.ok

    def lines(self) -> list[str]:
        """The report, one fact per line, most important first."""
        lines = []
        if self.target is not None:
            lines += [f"{self.target.kind.label}: {self.target.url}", self.target.reason]
            if self.target.advice:
                lines.append(f"Advice: {self.target.advice}")
        if self.health is not None:
            health = self.health
            lines.append(f"{'Ready' if health.ok else 'Not ready'}: {health.message}".rstrip(": "))
            if health.device:
                lines.append(f"Device: {health.device}")
            if health.model:
                lines.append(f"Whisper model: {health.model}")
            if health.version:
                lines.append(f"Version: {health.version}")
        if self.error is not None:
            lines.append(f"Error: {self.error.message}")
            if self.error.hint:
                lines.append(f"What to do: {self.error.hint}")
        return lines


def check(url: str, api_key: str | None = None) -> Check:
    """Detects the kind of `url` and asks the backend for its health; never raises."""
    try:
        target = detect(url)
    except SubtideError as exc:
        return Check(url, error=exc)
    try:
        reach(target, api_key)  # a silent server is given up on in seconds, not minutes
        health = _backend(target, api_key).health()
    except SubtideError as exc:
        return Check(url, target, error=exc)
    return Check(url, target, health)
