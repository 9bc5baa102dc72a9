"""Subtitle files for tests, written the way an editor saves them."""

from __future__ import annotations

from pathlib import Path


def numbered_srt(folder: Path, count: int) -> Path:
    """`talk.srt`: `count` English cues, "Line 1." to "Line N.", two seconds apart."""
    blocks = [
        f"{i}\n00:00:{2 * i - 2:02d},000 --> 00:00:{2 * i - 1:02d},500\nLine {i}.\n"
        for i in range(1, count + 1)
    ]
    path = folder / "talk.srt"
    path.write_text("\n".join(blocks), encoding="utf-8")
    return path
