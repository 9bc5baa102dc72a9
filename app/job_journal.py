"""The HTTP API's jobs on disk, so a server that dies (a spot instance taken back, an
out-of-memory kill, `kill -9`) comes back with its queue and every job's events.

One folder per job under the journal's root:

- `job.json`: the JobSpec as submitted, the upload's path and when it was submitted; written to
  a temporary file and renamed, so it is whole or absent. It may hold the client's own LLM key
  (the rerun needs it), so it is readable by the server's user only.
- `events.jsonl`: the job's Events, one JSON line each, in order: line n is SSE event id n.
  Each line is one `write` to a file opened with O_APPEND, so a crash leaves at most a torn last
  line; reading drops it and cuts it off, so the next line starts on a line of its own.
- `cancelled`: there once a DELETE came. A running job ends only when its engine reaches its
  next step; a server killed before that must not run the job again.

The journal's `.lock` is held (flock) while a server uses it, and the kernel lets go of it when
the process dies however it dies. A second server started on the same cache dir finds it held
and journals nothing: otherwise each would run the other's jobs again when it restarts.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from engine.files import write_atomic
from engine.protocol import Event, JobSpec, parse_event

log = logging.getLogger(__name__)

_SPEC = "job.json"
_EVENTS = "events.jsonl"
_CANCELLED = "cancelled"


@dataclass(frozen=True)
class JournaledJob:
    id: str
    spec: JobSpec
    upload: Path | None
    submitted_ns: int
    events: list[Event]
    cancelled: bool
    # When its last event was written: for an ended job, when it ended.
    written: float


class JobJournal:
    def __init__(self, root: Path, lock_fd: int) -> None:
        self.root = root
        self._lock_fd = lock_fd

    @classmethod
    def open(cls, root: Path) -> JobJournal | None:
        """The journal under `root`, or None while another server holds it."""
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            log.warning(
                "another server uses the job journal in %s: this one's jobs won't outlive it",
                root,
            )
            return None
        return cls(root, fd)

    def close(self) -> None:
        """Lets another server take the journal over (this one is stopping)."""
        os.close(self._lock_fd)

    def add(self, job_id: str, spec: JobSpec, upload: Path | None) -> None:
        record = {
            "spec": spec.model_dump(mode="json"),
            "upload": str(upload) if upload else None,
            "submitted_ns": time.time_ns(),
        }
        write_atomic(self.root / job_id / _SPEC, json.dumps(record), private=True)

    def append(self, job_id: str, event: Event) -> None:
        line = event.model_dump_json().encode() + b"\n"
        fd = os.open(self.root / job_id / _EVENTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            written = os.write(fd, line)
        finally:
            os.close(fd)
        if written != len(line):  # a full disk: the next read cuts the line off
            raise OSError(f"wrote {written} of {len(line)} bytes to job {job_id}'s journal")

    def cancel(self, job_id: str) -> None:
        (self.root / job_id / _CANCELLED).touch()

    def remove(self, job_id: str) -> None:
        shutil.rmtree(self.root / job_id, ignore_errors=True)

    def jobs(self) -> list[JournaledJob]:
        """Every job on disk, in the order they were submitted. A folder without a readable
        `job.json` (a crash while the job was being added) is removed."""
        found = []
        for folder in self.root.iterdir():
            if not folder.is_dir():
                continue
            job = _read(folder)
            if job is None:
                log.warning("dropping job %s from the journal: its spec is unreadable", folder.name)
                shutil.rmtree(folder, ignore_errors=True)
            else:
                found.append(job)
        return sorted(found, key=lambda job: job.submitted_ns)


def _read(folder: Path) -> JournaledJob | None:
    try:
        record = json.loads((folder / _SPEC).read_text("utf-8"))
        spec = JobSpec.model_validate(record["spec"])
        submitted_ns = int(record["submitted_ns"])
    except (OSError, ValueError, KeyError, TypeError):  # ValidationError is a ValueError
        return None
    events_file = folder / _EVENTS
    # Before reading: cutting off a torn line would make it now.
    written = events_file.stat().st_mtime if events_file.exists() else 0.0
    return JournaledJob(
        id=folder.name,
        spec=spec,
        upload=Path(record["upload"]) if record.get("upload") else None,
        submitted_ns=submitted_ns,
        events=_read_events(events_file),
        cancelled=(folder / _CANCELLED).exists(),
        written=written,
    )


def _read_events(path: Path) -> list[Event]:
    """The log's events up to its first torn or unreadable line, which is cut off with all
    after it: ids go on from the last event kept, and a later append starts a fresh line."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    *lines, _torn = data.split(b"\n")
    events: list[Event] = []
    kept = 0
    for line in lines:
        try:
            events.append(parse_event(line))
        except ValidationError:
            break
        kept += len(line) + 1
    if kept < len(data):
        log.warning("cut %d torn bytes off %s", len(data) - kept, path)
        os.truncate(path, kept)
    return events
