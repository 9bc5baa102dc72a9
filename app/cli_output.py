"""Where the command line writes a job's files: never over a source of the run, never over a file
the same run wrote for another source. A file left by an earlier run is replaced, as a rerun
expects."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.protocol import RenderedFile

# A file's identity, so that a link, a hard link or another spelling of a path is the same file.
_FileId = tuple[int, int]


class Outputs:
    """Writes the files of each finished job into `folder`; only one thread calls `write`.

    A clash is not refused but written beside under a distinct name (`talk-2.srt`): the job's
    minutes of work are done, refusing would throw them away, and the line on stderr says where
    the files went. The input is never touched."""

    def __init__(self, folder: Path, sources: Iterable[str], say: Callable[[str], None]) -> None:
        self.folder = folder
        self._say = say
        self._sources: dict[_FileId, str] = {}
        for source in sources:
            if "://" not in source and (found := _identity(Path(source).expanduser())):
                self._sources[found] = source
        self._written: dict[_FileId, str] = {}  # file → the source it was written for

    def write(self, label: str, stem: str, files: list[RenderedFile]) -> list[Path]:
        """Writes one job's files, all under one stem (`talk`, else `talk-2`, …) so that they
        keep belonging together; returns their paths."""
        from engine.files import write_atomic

        paths = self.place(label, stem, [file.filename for file in files])
        for path, file in zip(paths, files, strict=True):
            write_atomic(path, file.content)
        self.record(label, paths)
        return paths

    def place(self, label: str, stem: str, filenames: list[str]) -> list[Path]:
        """Where the files `filenames` (each named `stem…`) of the source `label` go; the
        caller writes them, then `record`s them."""
        self.folder.mkdir(parents=True, exist_ok=True)
        paths = [self.folder / name for name in filenames]
        clash = self._clash(paths, label)
        number = 1
        while clash:
            number += 1
            renamed = [self.folder / _renamed(name, stem, number) for name in filenames]
            if not self._clash(renamed, label):
                self._say(f"{label}: {clash}; writing {', '.join(map(str, renamed))} instead")
                return renamed
        return paths

    def record(self, label: str, paths: list[Path]) -> None:
        """`paths` were written for the source `label`: no later source may write over them."""
        for path in paths:
            if found := _identity(path):
                self._written[found] = label

    def _clash(self, paths: list[Path], label: str) -> str | None:
        """Why one of `paths` must not be written for the source `label`, or None."""
        for path in paths:
            found = _identity(path)
            if found in self._sources:
                source = self._sources[found]
                return f"{path} is the source {'itself' if source == label else source}"
            if found in self._written:
                return f"{path} was just written for {self._written[found]}"
        return None


def _identity(path: Path) -> _FileId | None:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def _renamed(filename: str, stem: str, number: int) -> str:
    """`talk.de.srt` as `talk-2.de.srt`: the number goes on the stem, before the language."""
    return f"{stem}-{number}{filename.removeprefix(stem)}"
