"""What a video file holds, read back by ffprobe and ffmpeg: streams, subtitle tracks, frames."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np

from engine.formats import read_srt
from engine.protocol import Cue


def ffprobe_streams(path: Path) -> list[dict]:
    shown = ["-show_entries", "stream=index,codec_type,codec_name,width,height"]
    tags = ["-show_entries", "stream_tags=language,title,handler_name"]
    default = ["-show_entries", "stream_disposition=default"]
    command = ["ffprobe", "-v", "error", "-of", "json", *shown, *tags, *default, str(path)]
    return json.loads(subprocess.run(command, capture_output=True, check=True).stdout)["streams"]


def subtitle_streams(path: Path) -> list[dict]:
    return [s for s in ffprobe_streams(path) if s["codec_type"] == "subtitle"]


def track_cues(path: Path, number: int) -> list[Cue]:
    """Subtitle track `number` of `path` extracted back to SRT by ffmpeg, as cues."""
    command = ["ffmpeg", "-v", "error", "-i", str(path), "-map", f"0:s:{number}", "-f", "srt", "-"]
    return read_srt(subprocess.run(command, capture_output=True, check=True).stdout.decode())


def frame(path: Path, seconds: float) -> np.ndarray:
    """The picture at `seconds`, in grey levels."""
    command = ["ffmpeg", "-v", "error", "-ss", f"{seconds:.3f}", "-i", str(path)]
    command += ["-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "gray", "-"]
    raw = subprocess.run(command, capture_output=True, check=True).stdout
    width, height = (ffprobe_streams(path)[0][key] for key in ("width", "height"))
    return np.frombuffer(raw, np.uint8).reshape(height, width).astype(np.int16)
