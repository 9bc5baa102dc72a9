"""The progress line and the error box, as small HTML fragments.

Each carries `data-state` (and the progress `data-percent`), so a browser test waits on the
state the page shows rather than on wording.
"""

from __future__ import annotations

from html import escape
from typing import Literal

from engine.protocol import ProgressEvent, Stage

State = Literal["idle", "running", "done", "failed", "cancelled"]

STAGE_LABELS: dict[Stage, str] = {
    "queued": "Starting",
    "download": "Downloading",
    "decode": "Reading the audio",
    "transcribe": "Transcribing",
    "diarize": "Finding speakers",
    "translate": "Translating",
    "finalize": "Finishing",
}
_BAR_COLOURS: dict[State, str] = {
    "idle": "#9ca3af",
    "running": "#f97316",
    "done": "#16a34a",
    "failed": "#dc2626",
    "cancelled": "#9ca3af",
}


def progress_html(event: ProgressEvent, elapsed: float) -> str:
    eta = f" · about {_duration(event.eta_s)} left" if event.eta_s else ""
    return _progress(
        "running",
        event.percent,
        STAGE_LABELS[event.stage],
        f"{event.percent:.0f}%{eta} · {_duration(elapsed)} so far",
        event.message,
    )


def done_html(cue_count: int, elapsed: float, note: str = "") -> str:
    return _progress("done", 100, "Done", f"{cue_count} cues in {_duration(elapsed)}", note)


def status_html(state: State, title: str, percent: float, detail: str = "") -> str:
    """A line without live figures: ready, stopped, loading the preview."""
    return _progress(state, percent, title, "", detail)


def cancelled_html(kept: int = 0) -> str:
    # The same text from the Cancel button and from the job's own end, whichever lands last.
    done = f"The {kept} cues done so far are below and in the downloads. " if kept else ""
    return _progress("cancelled", 0, "Cancelled", "", f"{done}Press Run to start again.")


def error_html(message: str, hint: str | None) -> str:
    hint_html = f'<p style="margin:4px 0 0">{escape(hint)}</p>' if hint else ""
    return (
        '<div data-state="error" role="alert" style="border:1px solid #dc2626;'
        'background:#fef2f2;color:#7f1d1d;border-radius:8px;padding:10px 14px">'
        f'<strong class="subtide-error-message">{escape(message)}</strong>{hint_html}</div>'
    )


def warning_html(lines: list[str]) -> str:
    """Facts about a finished job the user must see, such as translations that are missing."""
    items = "".join(f'<li class="subtide-warning">{escape(line)}</li>' for line in lines)
    return (
        '<div data-state="warning" role="status" style="border:1px solid #d97706;'
        'background:#fffbeb;color:#78350f;border-radius:8px;padding:10px 14px">'
        f'<ul style="margin:0;padding-left:1.2em">{items}</ul></div>'
    )


def _progress(state: State, percent: float, title: str, figures: str, message: str) -> str:
    width = min(max(percent, 0.0), 100.0)
    return (
        f'<div class="subtide-progress" data-state="{state}" data-percent="{width:.0f}">'
        '<div style="display:flex;justify-content:space-between;gap:8px">'
        f"<strong>{escape(title)}</strong><span>{escape(figures)}</span></div>"
        '<div style="background:#e5e7eb;border-radius:4px;height:8px;margin:6px 0">'
        f'<div style="width:{width:.1f}%;background:{_BAR_COLOURS[state]};height:8px;'
        'border-radius:4px"></div></div>'
        f'<div style="min-height:1.4em;opacity:.8">{escape(message)}</div></div>'
    )


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"
