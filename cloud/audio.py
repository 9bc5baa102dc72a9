"""A local file made ready to travel inside a JSON payload: probed, cut at pauses, compressed.

Remote backends never see a client's path. The file's audio is decoded with ffmpeg, cut where
someone stops talking when it is long, and each piece is encoded as 16 kHz mono Opus (what
Whisper hears anyway, at a small fraction of the size) and base64'd for a JSON body. RunPod's
`/run` takes at most 10 MB per request, so every piece is sized to stay well under that.

Every failure a user can cause is a `bad_input` SubtideError naming the file by its base name,
so a machine path never reaches a message.
"""

from __future__ import annotations

import base64
import json
import math
import re
import wave
from dataclasses import dataclass
from pathlib import Path

from engine.ffmpeg import require_file, run_on
from engine.protocol import SubtideError

SAMPLE_RATE = 16000
# Opus at 24 kbit/s is transparent enough for speech recognition at 16 kHz mono;
# "constrained" VBR keeps the size near the nominal rate, so a piece's size is predictable.
OPUS_BITRATE = 24_000
# libopus' effort, 0-10: 10 (its default) takes four times as long as 5 for no gain Whisper can
# hear at this rate (about 1.6 s against 0.4 s for 160 s of audio on one core).
OPUS_EFFORT = 5
# RunPod refuses /run bodies over 10 MB; the audio keeps 3 MB clear of it for the rest of the
# job (glossary, description) and for JSON and HTTP framing.
RUNPOD_PAYLOAD_LIMIT = 10_000_000
AUDIO_PAYLOAD_BUDGET = 7_000_000
# The Ogg pages and the encoder's rate control add a few percent over the nominal bitrate.
_OPUS_OVERHEAD = 1.06
# A pause is this much quieter than full scale for at least this long (a breath is shorter).
SILENCE_DB = -35
MIN_SILENCE_S = 0.3
# How far a cut may move from its even boundary to reach a pause, as a share of a piece's
# length: pieces then last between 0.6 and 1.4 times the even length.
CUT_SLACK = 0.2

_SILENCE_START = re.compile(r"silence_start:\s*(-?[\d.]+)")
_SILENCE_END = re.compile(r"silence_end:\s*(-?[\d.]+)")


@dataclass(frozen=True)
class Silence:
    start: float
    end: float

    @property
    def middle(self) -> float:
        return (self.start + self.end) / 2


@dataclass(frozen=True)
class Piece:
    """A span of the file, in seconds from its start."""

    index: int
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


def b64_bytes_per_second(bitrate: int = OPUS_BITRATE) -> float:
    """What one second of encoded audio costs in a JSON payload (base64 adds a third)."""
    return bitrate / 8 * _OPUS_OVERHEAD * 4 / 3


def max_payload_seconds(budget: int = AUDIO_PAYLOAD_BUDGET, bitrate: int = OPUS_BITRATE) -> float:
    """The longest audio one payload can carry."""
    return budget / b64_bytes_per_second(bitrate)


def max_chunk_s(budget: int = AUDIO_PAYLOAD_BUDGET, bitrate: int = OPUS_BITRATE) -> float:
    """The longest target piece length whose pieces, moved to pauses, still fit one payload."""
    return max_payload_seconds(budget, bitrate) / (1 + 2 * CUT_SLACK)


def probe_duration(path: Path) -> float:
    """The file's length in seconds (0.0 when its container does not say); refuses files
    without audio."""
    require_file(path)
    command = ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams"]
    result = run_on(command, path)
    if result.returncode != 0:
        raise SubtideError(
            "bad_input",
            f"{path.name} is not an audio or video file ffmpeg can read (corrupt or unsupported)",
        )
    data = json.loads(result.stdout or b"{}")
    streams = data.get("streams") or []
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    if not audio:
        raise SubtideError("bad_input", f"{path.name} has no audio track")
    candidates = [data.get("format", {}).get("duration"), *(s.get("duration") for s in audio)]
    known = [seconds for seconds in map(_seconds, candidates) if seconds > 0]
    return known[0] if known else 0.0


def decode_with_silences(path: Path, wav: Path) -> tuple[float, list[Silence]]:
    """Decodes the file's audio to a 16 kHz mono WAV at `wav` and finds its pauses, in one
    ffmpeg pass; returns the exact duration and the pauses.

    Pieces are cut from the WAV, not the original: seeking in PCM is exact to the sample, so
    the offsets that shift each piece's cue times back are exact too."""
    detect = f"silencedetect=noise={SILENCE_DB}dB:duration={MIN_SILENCE_S}"
    head = ["ffmpeg", "-nostdin", "-nostats", "-hide_banner", "-v", "info"]
    tail = ["-vn", "-sn", "-dn", "-af", detect, "-ac", "1", "-ar", str(SAMPLE_RATE)]
    tail += ["-c:a", "pcm_s16le", "-f", "wav", "-y", f"file:{wav}"]
    result = run_on(head, path, tail)
    stderr = result.stderr.decode(errors="replace")
    if result.returncode != 0:
        raise SubtideError("bad_input", f"Could not decode the audio of {path.name}")
    with wave.open(str(wav), "rb") as reader:
        duration = reader.getnframes() / reader.getframerate()
    if duration <= 0:
        raise SubtideError("bad_input", f"{path.name} contains no audio samples")
    return duration, parse_silences(stderr, duration)


def parse_silences(log: str, duration: float) -> list[Silence]:
    """The pauses ffmpeg's silencedetect reported; one still open at the end runs to the end."""
    silences: list[Silence] = []
    start: float | None = None
    for line in log.splitlines():
        if found := _SILENCE_START.search(line):
            start = max(float(found[1]), 0.0)
        elif (found := _SILENCE_END.search(line)) and start is not None:
            silences.append(Silence(start, min(float(found[1]), duration)))
            start = None
    if start is not None and start < duration:
        silences.append(Silence(start, duration))
    return silences


def plan_pieces(duration: float, silences: list[Silence], chunk_s: float) -> list[Piece]:
    """Pieces of about `chunk_s` seconds: the file is split evenly, then each cut moves to the
    nearest pause within CUT_SLACK of a piece's length, so no word is cut in two. Where no
    pause is near, the cut stays on its even boundary."""
    count = max(1, math.ceil(duration / chunk_s - 1e-9))
    length = duration / count
    cuts = [0.0]
    for k in range(1, count):
        target = k * length
        pause = nearest_pause(silences, target, CUT_SLACK * length)
        cuts.append(round(target if pause is None else pause, 3))
    cuts.append(duration)
    return [Piece(i, cuts[i], cuts[i + 1]) for i in range(count)]


def nearest_pause(silences: list[Silence], target: float, window: float) -> float | None:
    """The point to cut at in the pause nearest `target` (its middle, kept within `window` of
    the target), or None when no pause reaches into the window."""
    low, high = target - window, target + window
    reachable = [s for s in silences if s.end >= low and s.start <= high]
    if not reachable:
        return None

    def distance(silence: Silence) -> tuple[float, float]:
        outside = max(silence.start - target, target - silence.end, 0.0)
        return outside, -(silence.end - silence.start)  # then the longer pause

    best = min(reachable, key=distance)
    return min(max(best.middle, low, best.start), high, best.end)


def encode_opus(
    path: Path, *, start: float = 0.0, duration: float | None = None, bitrate: int = OPUS_BITRATE
) -> bytes:
    """The audio of `path` (from `start`, for `duration` seconds) as 16 kHz mono Opus in Ogg."""
    head = ["ffmpeg", "-nostdin", "-v", "error"]
    if start > 0:
        head += ["-ss", f"{start:.3f}"]
    if duration is not None:
        head += ["-t", f"{duration:.3f}"]
    tail = ["-vn", "-sn", "-dn", "-ac", "1", "-ar", str(SAMPLE_RATE), "-c:a", "libopus"]
    tail += ["-b:a", str(bitrate), "-vbr", "constrained", "-compression_level", str(OPUS_EFFORT)]
    tail += ["-f", "ogg", "pipe:1"]
    result = run_on(head, path, tail)
    if result.returncode != 0 or not result.stdout:
        raise SubtideError("bad_input", f"Could not compress the audio of {path.name}")
    return result.stdout


def to_b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _seconds(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0
