"""A content-addressed cache on disk: transcripts by audio hash, translated batches by their
text, downloads by URL.

Every write goes to a temporary file first and is renamed into place, so a crash never leaves a
half-written entry. Size cap, audio TTL and the cleanup interval follow the CACHE_* settings.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine.asr import DecodeOptions, Segment, TranscriptInfo, float32_bytes
from engine.files import write_atomic
from engine.journal import Journal, segment_from_dict, segment_to_dict
from engine.media import Download

if TYPE_CHECKING:
    import numpy as np

# Bump when the stored transcript layout changes, so old entries are simply missed.
_TRANSCRIPT_VERSION = 1
_STAMP = ".last_cleanup"


@dataclass(frozen=True)
class CacheLimits:
    max_size_mb: float = 5000
    audio_ttl_hours: float = 24
    cleanup_interval_minutes: float = 30


class Cache:
    def __init__(self, root: Path, limits: CacheLimits | None = None) -> None:
        self.root = root
        self.limits = limits or CacheLimits()
        self._transcripts = root / "transcripts"
        self._batches = root / "translations"
        self._audio = root / "audio"
        self._journals = root / "journals"

    @staticmethod
    def transcript_key(audio: np.ndarray, model: str, options: DecodeOptions) -> str:
        digest = hashlib.sha256(float32_bytes(audio))  # a view, not a 230 MB/h copy
        digest.update(json.dumps([_TRANSCRIPT_VERSION, model, asdict(options)]).encode())
        return digest.hexdigest()

    def get_transcript(self, key: str) -> tuple[TranscriptInfo, list[Segment]] | None:
        path = self._transcripts / key[:2] / f"{key}.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            info = TranscriptInfo(**data["info"])
            segments = [segment_from_dict(s) for s in data["segments"]]
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            # A damaged entry is a miss; drop it so it is rebuilt.
            path.unlink(missing_ok=True)
            return None
        path.touch()  # recently used entries survive the size cap longest
        return info, segments

    def put_transcript(self, key: str, info: TranscriptInfo, segments: list[Segment]) -> None:
        data = {"info": asdict(info), "segments": [segment_to_dict(s) for s in segments]}
        write_atomic(self._transcripts / key[:2] / f"{key}.json", json.dumps(data), private=True)

    def journal(self, key: str) -> Journal:
        """The checkpoint of the transcription whose cache key is `key` (see engine.journal)."""
        return Journal(self._journals / key[:2] / f"{key}.jsonl")

    def get_batch(self, key: str) -> list[str] | None:
        """A translated batch: its lines in the order they were sent."""
        path = self._batches / key[:2] / f"{key}.json"
        try:
            lines = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValueError:
            path.unlink(missing_ok=True)
            return None
        if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
            path.unlink(missing_ok=True)
            return None
        path.touch()
        return lines

    def put_batch(self, key: str, lines: list[str]) -> None:
        write_atomic(
            self._batches / key[:2] / f"{key}.json",
            json.dumps(lines, ensure_ascii=False),
            private=True,
        )

    def get_audio(self, url: str) -> Download | None:
        entry = self._audio / _hash(url)
        try:
            meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None
        path = entry / meta.get("file", "")
        if not path.is_file() or self._expired(entry / "meta.json", time.time()):
            return None
        return Download(path=path, title=meta.get("title"))

    def put_audio(self, url: str, download: Download) -> Download:
        """Moves a finished download into the cache and returns where it now lives."""
        entry = self._audio / _hash(url)
        entry.mkdir(parents=True, exist_ok=True)
        target = entry / ("media" + download.path.suffix)
        tmp = entry / f".{target.name}.tmp"
        shutil.move(download.path, tmp)
        os.replace(tmp, target)
        meta = {"url_sha256": _hash(url), "file": target.name, "title": download.title}
        write_atomic(entry / "meta.json", json.dumps(meta), private=True)
        return Download(path=target, title=download.title)

    def maybe_cleanup(self) -> None:
        """Cleans up when the last cleanup is older than the configured interval."""
        stamp = self.root / _STAMP
        interval = self.limits.cleanup_interval_minutes * 60
        with contextlib.suppress(FileNotFoundError):
            if time.time() - stamp.stat().st_mtime < interval:
                return
        self.cleanup()
        self.root.mkdir(parents=True, exist_ok=True)
        stamp.touch()

    def cleanup(self) -> int:
        """Removes expired downloads, then the least recently used entries over the size cap.

        Returns the number of bytes freed.
        """
        now, freed = time.time(), 0
        for entry in _children(self._audio):
            if self._expired(entry / "meta.json", now):
                freed += _remove(entry)
        entries = [
            *_children(self._audio),
            *_files(self._transcripts),
            *_files(self._batches),
            *_files(self._journals, "*.jsonl"),
        ]
        sizes = {e: _size(e) for e in entries}
        total, budget = sum(sizes.values()), self.limits.max_size_mb * 1024 * 1024
        for entry in sorted(entries, key=_mtime):
            if total <= budget:
                break
            total -= sizes[entry]
            freed += _remove(entry)
        return freed

    def _expired(self, meta: Path, now: float) -> bool:
        try:
            age = now - meta.stat().st_mtime
        except FileNotFoundError:
            return True
        return age > self.limits.audio_ttl_hours * 3600


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _children(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []


def _files(folder: Path, pattern: str = "*.json") -> list[Path]:
    return [p for p in folder.rglob(pattern) if p.is_file()] if folder.is_dir() else []


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _mtime(path: Path) -> float:
    with contextlib.suppress(FileNotFoundError):
        return path.stat().st_mtime if path.is_file() else (path / "meta.json").stat().st_mtime
    return 0.0


def _remove(path: Path) -> int:
    size = _size(path)
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    return size
