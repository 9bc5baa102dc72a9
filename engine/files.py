"""Writing files so that readers never see half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def write_atomic(path: Path, data: str | bytes, *, private: bool = False) -> None:
    """Writes to a temporary file beside `path`, then renames it into place. The file gets
    the permissions open() would give it (the umask's), or, `private`, its owner's alone:
    for the app's own state (caches, journals, uploads), which may hold what others should
    not read."""
    with atomic_path(path, private=private) as tmp:
        if isinstance(data, str):
            with tmp.open("w", encoding="utf-8", newline="") as out:
                out.write(data)
        else:
            tmp.write_bytes(data)


@contextmanager
def atomic_path(path: Path, *, private: bool = False) -> Iterator[Path]:
    """A temporary path beside `path` (same suffix, so a program that picks its output format
    by the name still does) for the caller, or a program it runs, to write; renamed into place
    when the block ends, removed if it fails. Permissions as in `write_atomic`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    tmp = Path(name)
    try:
        if not private:
            os.fchmod(fd, 0o666 & ~_umask())
        os.close(fd)
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
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
