"""A transcription's checkpoint: its segments appended to a file on disk as they are decoded,
so a job that dies (a kill, a restart, a closed laptop) is transcribed again only from where
it stopped. `engine.cache.Cache.journal` names the file after the transcript's cache key (the
audio's hash, the model, the options); a finished transcription becomes the cache entry.

The file is JSON lines: a header (the transcript's info), then one line per segment. A line is
written with one `write` to a file opened for appending, so a crash leaves at most a torn last
line, which reading ignores.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.asr import Segment, TranscriptInfo
from engine.protocol import Word

# 2: a seek names a speech chunk (engine.speech_chunks); 3: the first chunk after its head.
# A seek means something only in the plan it was made in: a journal of another starts over.
_VERSION = 3


@dataclass(frozen=True)
class Checkpoint:
    """What a journal holds that need not be decoded again: the segments of every decoding
    window known to be whole, and the window to decode from (its `seek`); `at` is that point
    in seconds of the source, as the user sees it."""

    info: TranscriptInfo
    segments: list[Segment]
    seek: int
    at: float


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def checkpoint(self) -> Checkpoint | None:
        """Where to resume, or None when nothing whole was journaled."""
        info, segments = self._read()
        if info is None or not segments:
            return None
        # The last window's segments may be cut short by the crash: it is decoded again.
        last_seek = segments[-1].seek
        whole = [s for s in segments if s.seek != last_seek]
        if not whole:
            return None
        return Checkpoint(info, whole, last_seek, whole[-1].end)

    def start(self, info: TranscriptInfo, keep: list[Segment]) -> None:
        """Begins the file anew with `info` and the segments already known."""
        self.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        lines = [{"version": _VERSION, "info": asdict(info)}, *map(segment_to_dict, keep)]
        tmp.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
        os.replace(tmp, self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)

    def append(self, segment: Segment) -> None:
        if self._fd is not None:
            os.write(self._fd, (json.dumps(segment_to_dict(segment)) + "\n").encode())

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)

    def _read(self) -> tuple[TranscriptInfo | None, list[Segment]]:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except (FileNotFoundError, UnicodeDecodeError):
            return None, []
        try:
            header = json.loads(lines[0])
            if header.get("version") != _VERSION:
                return None, []
            info = TranscriptInfo(**header["info"])
        except (IndexError, ValueError, KeyError, TypeError):
            return None, []
        segments = []
        for line in lines[1:]:
            try:
                segments.append(segment_from_dict(json.loads(line)))
            except (ValueError, KeyError, TypeError):
                break  # a torn last line: what follows a bad line can't be trusted either
        return info, segments


def segment_to_dict(segment: Segment) -> dict:
    data = asdict(segment)
    data["words"] = [w.model_dump() for w in segment.words]
    return data


def segment_from_dict(data: dict) -> Segment:
    data = dict(data)
    words = tuple(Word(**w) for w in data.pop("words"))
    return Segment(words=words, **data)
