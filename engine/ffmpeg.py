"""Running ffmpeg and ffprobe on a local file, safely. Standard library only, so the remote
clients (cloud/) use it too without the engine's heavy parts."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable
from functools import lru_cache
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
    try:
        return subprocess.run(
            [*head, *input_args(path), *(tail or [])], capture_output=True, check=False
        )
    except FileNotFoundError:
        raise _not_installed() from None


def input_args(path: Path) -> list[str]:
    """ffmpeg's options to read the local file `path` as an input, and only it."""
    # "file:" stops a name like "concat:a|b" being read as a protocol, and the whitelist stops
    # a playlist inside the file (HLS, say) from sending ffmpeg onto the network.
    return ["-protocol_whitelist", "file", "-i", f"file:{path.resolve()}"]


def _not_installed() -> SubtideError:
    return SubtideError(
        "internal", "ffmpeg is not installed", "install ffmpeg (apt-get install ffmpeg)"
    )


def run_with_progress(
    args: list[str],
    duration: float,
    *,
    on_progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """ffmpeg with `args` (inputs, filters, outputs), telling `on_progress` the share (0-1) of
    `duration` seconds it has written, from its `-progress` report. `should_stop` is asked
    at each report: True kills ffmpeg and raises a `cancelled` SubtideError."""
    command = ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-progress", "pipe:1"]
    # stderr goes to a file: a pipe left unread while stdout is read could fill and stall it.
    with tempfile.TemporaryFile() as stderr:
        try:
            process = subprocess.Popen(
                [*command, *args], stdout=subprocess.PIPE, stderr=stderr, cwd=cwd
            )
        except FileNotFoundError:
            raise _not_installed() from None
        with process:
            assert process.stdout is not None
            for line in process.stdout:
                if should_stop and should_stop():
                    process.kill()
                    raise SubtideError("cancelled", "The job was cancelled.")
                key, _, value = line.decode(errors="replace").strip().partition("=")
                # out_time_us is written "N/A" before the first frame.
                if key == "out_time_us" and value.isdigit() and on_progress and duration > 0:
                    on_progress(min(int(value) / 1e6 / duration, 1.0))
            process.wait()
        stderr.seek(0)
        return subprocess.CompletedProcess(process.args, process.returncode, b"", stderr.read())


def has_filters(*names: str) -> bool:
    """Whether the ffmpeg on PATH has every filter in `names` (libass gives "ass" and
    "subtitles"; a build without it has neither)."""
    return set(names) <= _filters(shutil.which("ffmpeg") or "")


@lru_cache(maxsize=4)
def _filters(ffmpeg: str) -> frozenset[str]:
    if not ffmpeg:
        raise _not_installed()
    listing = subprocess.run(
        [ffmpeg, "-hide_banner", "-filters"], capture_output=True, check=False
    ).stdout.decode(errors="replace")
    # Lines look like " ... ass               V->V       Render ASS subtitles ...".
    return frozenset(
        fields[1] for fields in map(str.split, listing.splitlines()) if len(fields) > 2
    )
