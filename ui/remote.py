"""The app's Backend section: run here, or on a remote backend the user names.

The UI never imports the remote clients: the app hands it `Remote`, two functions that turn a
URL and a key into a Backend or a report (see app/cli.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from typing import Protocol

from engine.protocol import Backend, Health

LOCAL = "local"
REMOTE = "remote"
BACKEND_MODES = (("This machine", LOCAL), ("Remote (RunPod or a Subtide server)", REMOTE))


class Report(Protocol):
    @property
    def ok(self) -> bool: ...

    def lines(self) -> list[str]: ...


@dataclass(frozen=True)
class Remote:
    connect: Callable[[str, str | None], Backend]
    check: Callable[[str, str | None], Report]
    # From the environment of the machine the app runs on; the key never reaches the page.
    default_url: str | None = None
    default_key: str | None = None

    def key_for(self, url: str, key: str) -> str | None:
        """The key the page gave, else the configured one when the URL is the configured one."""
        if key.strip():
            return key.strip()
        same = self.default_url and url.strip().rstrip("/") == self.default_url.rstrip("/")
        return self.default_key if same else None


def local_lines(health: Health) -> list[str]:
    state = "Ready" if health.ok else "Not ready"
    lines = [f"This machine: {state}" + (f" ({health.message})" if health.message else "")]
    if health.device:
        lines.append(f"Device: {health.device}")
    if health.model:
        lines.append(f"Whisper model: {health.model}")
    return lines


def report_html(ok: bool, lines: list[str]) -> str:
    colour, background = ("#166534", "#f0fdf4") if ok else ("#7f1d1d", "#fef2f2")
    items = "".join(f"<div>{escape(line)}</div>" for line in lines)
    return (
        f'<div class="subtide-backend" data-state="{"ok" if ok else "failed"}" '
        f'style="border:1px solid {colour};background:{background};color:{colour};'
        f'border-radius:8px;padding:8px 12px">{items}</div>'
    )
