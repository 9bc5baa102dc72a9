"""Who speaks when: one row per speaker, one bar per cue, as an inline SVG."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from engine.protocol import Cue

# The ASS export's speaker colours, darkened a little so they read on a white page too.
PALETTE = ("#d4a20c", "#1a9fc4", "#2e9e4f", "#c4449a", "#d9731a", "#4a6fd1", "#8a5cd1", "#7a9a10")
_WIDTH = 1000
_LABEL_WIDTH = 130
_ROW_HEIGHT = 22
_BAR_HEIGHT = 14
_AXIS_HEIGHT = 18


def speaker_colours(cues: Sequence[Cue]) -> dict[str, str]:
    """Each speaker's colour, in the order they first speak: the same on every drawing."""
    speakers = dict.fromkeys(cue.speaker for cue in cues if cue.speaker)
    return {speaker: PALETTE[row % len(PALETTE)] for row, speaker in enumerate(speakers)}


def speaker_timeline(cues: Sequence[Cue], duration: float) -> str:
    """The SVG, or "" when no cue has a speaker (nothing worth drawing)."""
    colours = speaker_colours(cues)
    speakers = list(colours)
    if not speakers:
        return ""
    span = max(duration, max(cue.end for cue in cues), 0.001)
    track = _WIDTH - _LABEL_WIDTH
    height = len(speakers) * _ROW_HEIGHT + _AXIS_HEIGHT
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_WIDTH} {height}" '
        f'width="100%" role="img" aria-label="Speaker timeline" data-speakers="{len(speakers)}">'
    ]
    for row, speaker in enumerate(speakers):
        y = row * _ROW_HEIGHT
        colour = colours[speaker]
        parts.append(
            f'<text x="0" y="{y + _BAR_HEIGHT - 2}" font-size="13" fill="currentColor">'
            f"{escape(speaker)}</text>"
        )
        for cue in (cue for cue in cues if cue.speaker == speaker):
            x = _LABEL_WIDTH + track * cue.start / span
            width = max(track * (cue.end - cue.start) / span, 1.0)
            parts.append(
                f'<rect x="{x:.1f}" y="{y}" width="{width:.1f}" height="{_BAR_HEIGHT}" rx="3" '
                f'fill="{colour}"><title>{escape(cue.text)}</title></rect>'
            )
    axis_y = height - 4
    parts.append(
        f'<text x="{_LABEL_WIDTH}" y="{axis_y}" font-size="11" fill="currentColor">0:00</text>'
        f'<text x="{_WIDTH}" y="{axis_y}" font-size="11" fill="currentColor" '
        f'text-anchor="end">{clock(span)}</text></svg>'
    )
    return "".join(parts)


def clock(seconds: float) -> str:
    """m:ss, for an axis."""
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}:{rest:02d}"
