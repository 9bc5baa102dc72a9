"""Running ffmpeg and ffprobe on a local file, safely. Standard library only, so the remote
clients (cloud/) use it too without the engine's heavy parts."""

from __future__ import annotations

import subprocess
from pathlib import Path

from engine.protocol import SubtideError


def require_file(path: Path) -> None:
    """A clear error for a missing or empty file, naming it by its base name only."""
    if not path.exists():
        raise SubtideError("bad_input", f"File not found: {path.name}")
    if path.is_file() and path.stat().st_size == 0:
        raise SubtideError("bad_input", f"{path.name} is empty (0 bytes)")


def run_on(
    head: list[str], path: Path, tail: list[str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """`head` (ffmpeg or ffprobe and its options), `path` as the input, then `tail`."""
    # "file:" stops a name like "concat:a|b" being read as a protocol, and the whitelist stops
    # a playlist inside the file (HLS, say) from sending ffmpeg onto the network.
    source = ["-protocol_whitelist", "file", "-i", f"file:{path.resolve()}"]
    try:
        return subprocess.run([*head, *source, *(tail or [])], capture_output=True, check=False)
    except FileNotFoundError:
        raise SubtideError(
            "internal", "ffmpeg is not installed", "install ffmpeg (apt-get install ffmpeg)"
        ) from None
