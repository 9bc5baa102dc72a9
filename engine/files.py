"""Writing files so that readers never see half of one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: str | bytes, *, private: bool = False) -> None:
    """Writes to a temporary file beside `path`, then renames it into place. The file gets
    the permissions open() would give it (the umask's), or, `private`, its owner's alone:
    for the app's own state (caches, journals, uploads), which may hold what others should
    not read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        if not private:
            os.fchmod(fd, 0o666 & ~_umask())
        if isinstance(data, str):
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
                out.write(data)
        else:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process's umask, read without setting it where Linux tells it (setting it, even
    back, races with other threads creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
