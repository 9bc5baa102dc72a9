"""`subtide` as a user runs it: a real process in the repository, with its own cache and, when a
test looks for leftovers, its own temporary folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def subtide(
    *args: str, cache: Path, timeout: float = 300, tmp: Path | None = None
) -> subprocess.CompletedProcess:
    """Runs `subtide ARGS` to its end."""
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=ROOT,
        env=_env(cache, tmp),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_subtide(*args: str, cache: Path, tmp: Path | None = None) -> subprocess.Popen:
    """Starts `subtide ARGS`, for a test that signals it while it runs."""
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", *args],
        cwd=ROOT,
        env=_env(cache, tmp),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _env(cache: Path, tmp: Path | None) -> dict[str, str]:
    env = {**os.environ, "CACHE_DIR": str(cache)}
    if tmp is not None:
        env["TMPDIR"] = str(tmp)
    return env
