"""The audio's waveform with a region per cue, as an inline SVG the page links to the player:
a click seeks, a region's edge dragged retimes its cue (the page's script does both)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from engine.protocol import Cue
from engine.waveform import Peaks
from ui.timeline import clock, speaker_colours

# A cue of a second is 40 px wide, room to grab either edge; longer media is drawn narrower,
# so an hour's drawing stays a size a browser scrolls smoothly.
_PX_PER_S = 40.0
_MAX_WIDTH = 40000
_HEIGHT = 88
_AXIS = 16
_EDGE_PX = 6
# A region with no speaker; the speakers' own colours are the timeline's.
_NO_SPEAKER = "#6b7280"
_TICK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800)
_MIN_TICK_PX = 90


def waveform_html(peaks: Peaks, cues: Sequence[Cue], duration: float) -> str:
    """The drawing in a sideways-scrolling box; its scale (px per second) is on the box."""
    span = max(duration, len(peaks.values) / peaks.per_second, *(c.end for c in cues), 1.0)
    scale = min(_PX_PER_S, _MAX_WIDTH / span)
    width = math.ceil(span * scale)
    height = _HEIGHT + _AXIS
    return (
        f'<div class="subtide-wave" data-px-per-s="{scale:.4f}" '
        f'style="overflow-x:auto;overflow-y:hidden">'
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="Waveform and cues" '
        f'data-cues="{len(cues)}" style="display:block;cursor:pointer">'
        f"{_bars(peaks, scale)}{_regions(cues, scale)}{_axis(span, scale)}"
        f'<line class="subtide-playhead" x1="0" x2="0" y1="0" y2="{_HEIGHT}" '
        f'stroke="#dc2626" stroke-width="2"/></svg></div>'
    )


def _bars(peaks: Peaks, scale: float) -> str:
    step = scale / peaks.per_second
    middle = _HEIGHT / 2
    path = "".join(
        f"M{k * step:.1f} {middle - h:.1f}V{middle + h:.1f}"
        for k, value in enumerate(peaks.values)
        for h in (max(value * (middle - 2), 0.5),)
    )
    stroke = max(step * 0.7, 1.0)
    return (
        f'<path d="{path}" stroke="currentColor" stroke-opacity="0.55" '
        f'stroke-width="{stroke:.1f}"/>'
    )


def _regions(cues: Sequence[Cue], scale: float) -> str:
    colours = speaker_colours(cues)
    parts = []
    for cue in cues:
        colour = colours.get(cue.speaker or "", _NO_SPEAKER)
        x, w = cue.start * scale, max((cue.end - cue.start) * scale, 1.0)
        edge = _EDGE_PX / 2
        parts.append(
            f'<g class="subtide-region" data-cue="{cue.id}" data-start="{cue.start:.3f}" '
            f'data-end="{cue.end:.3f}"><title>{cue.id}: {escape(cue.text)}</title>'
            f'<rect class="subtide-span" x="{x:.1f}" y="0" width="{w:.1f}" height="{_HEIGHT}" '
            f'fill="{colour}" fill-opacity="0.2" style="cursor:grab"/>'
            f'<text x="{x + 4:.1f}" y="12" font-size="11" fill="currentColor">{cue.id}</text>'
            f'<rect class="subtide-edge" data-edge="start" x="{x - edge:.1f}" y="0" '
            f'width="{_EDGE_PX}" height="{_HEIGHT}" fill="{colour}" fill-opacity="0.7" '
            f'style="cursor:ew-resize"/>'
            f'<rect class="subtide-edge" data-edge="end" x="{x + w - edge:.1f}" y="0" '
            f'width="{_EDGE_PX}" height="{_HEIGHT}" fill="{colour}" fill-opacity="0.7" '
            f'style="cursor:ew-resize"/></g>'
        )
    return "".join(parts)


def _axis(span: float, scale: float) -> str:
    step = next((s for s in _TICK_STEPS if s * scale >= _MIN_TICK_PX), _TICK_STEPS[-1])
    y = _HEIGHT + _AXIS - 4
    return "".join(
        f'<text x="{t * scale + 2:.1f}" y="{y}" font-size="11" fill="currentColor">'
        f"{clock(t)}</text>"
        f'<line x1="{t * scale:.1f}" x2="{t * scale:.1f}" y1="{_HEIGHT}" y2="{_HEIGHT + 4}" '
        f'stroke="currentColor"/>'
        for t in range(0, math.floor(span) + 1, step)
    )
