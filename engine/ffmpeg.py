"""Running ffmpeg and ffprobe on a local file, safely. Standard library only, so the remote
clients (cloud/) use it too without the engine's heavy parts."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from engine.protocol import SubtideError


def require_file(path: Path, kind: str = "media file") -> None:
    """A clear error for a path that is not a readable, non-empty regular file, naming it by
    its base name only. A named pipe or a device is refused up front: reading one would wait
    for a writer forever."""
    name = path.name or str(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise SubtideError(
            "bad_input", f"File not found: {name}", hint="Check the path and the file name."
        ) from None
    except OSError as exc:
        raise SubtideError("bad_input", f"Cannot read {name}: {exc.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise SubtideError(
            "bad_input", f"{name} is a folder, not a {kind}.", hint=f"Give a {kind} inside it."
        )
    if not stat.S_ISREG(info.st_mode):
        raise SubtideError(
            "bad_input",
            f"{name} is a {_special_kind(info.st_mode)}, not a {kind}.",
            hint="Save the stream to a file first, then give that file.",
        )
    if info.st_size == 0:
        raise SubtideError(
            "bad_input", f"{name} is empty (0 bytes)", hint="Copy or download it again."
        )
    if not os.access(path, os.R_OK):
        raise SubtideError(
            "bad_input", f"Cannot read {name}: permission denied", hint="Check its permissions."
        )


def _special_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "named pipe"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "device"


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
