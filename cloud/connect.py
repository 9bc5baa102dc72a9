"""From a pasted URL and key to a Backend, and the report "Check backend" shows."""

from __future__ import annotations

from dataclasses import dataclass

from cloud.detect import Kind, Target, detect
from cloud.http import HttpBackend
from cloud.serverless import ServerlessBackend
from engine.protocol import Backend, Health, SubtideError


def connect(url: str, api_key: str | None = None) -> Backend:
    """The client for the backend at `url`; a `bad_input` SubtideError if it can be none."""
    return _backend(detect(url), api_key)


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
        health = _backend(target, api_key).health()
    except SubtideError as exc:
        return Check(url, target, error=exc)
    return Check(url, target, health)
