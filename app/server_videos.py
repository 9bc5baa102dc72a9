"""The HTTP API's video outputs (`video_soft`, `video_burn` in a job's `formats`).

A job's video is made after the engine's result, from the job's upload or, for a link, its
video, fetched on a thread of its own while the engine works on the sound. It is kept in a
folder of the job's own and served at `GET /api/jobs/{id}/files/{name}` (auth as the rest of
the API): a video is far too big for the event stream, whose result lists it by name and URL.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI
from fastapi.responses import FileResponse

from engine import media, outcome
from engine.formats import file_stem
from engine.protocol import (
    Event,
    JobSpec,
    ProgressEvent,
    ResultEvent,
    SubtideError,
    VideoFile,
    VideoKind,
    VideoOptions,
)
from engine.video import make_video, require_libass, video_filename

_JOB_ID = re.compile(r"[0-9a-f]{32}")
# The share of a job's percent its engine run takes when a video follows: copying streams
# takes seconds, encoding a burned picture takes about as long as transcribing.
_ENGINE_SHARE = {"video_soft": 95.0, "video_burn": 70.0}
_MEDIA_TYPES = {".mkv": "video/x-matroska", ".mp4": "video/mp4"}


class JobVideos:
    """Makes, keeps and forgets the videos of the API's jobs, a folder per job under `root`."""

    def __init__(self, root: Path, *, allow_private: bool) -> None:
        self.root = root
        self._allow_private = allow_private

    def folder(self, job_id: str) -> Path:
        return self.root / job_id

    def forget(self, job_id: str) -> None:
        shutil.rmtree(self.folder(job_id), ignore_errors=True)

    def prune(self, kept: Callable[[str], bool]) -> None:
        """Removes the folders of jobs the server no longer keeps (`kept` says which it does)."""
        for folder in self.root.glob("*") if self.root.is_dir() else []:
            if not kept(folder.name):
                shutil.rmtree(folder, ignore_errors=True)

    def run(
        self, events: Iterator[Event], spec: JobSpec, job_id: str, stopped: Callable[[], bool]
    ) -> Iterator[Event]:
        """The engine's `events` for `spec`, then its videos, the result listing them."""
        kinds = spec.video_kinds
        if not kinds:
            yield from events
            return
        with tempfile.TemporaryDirectory(prefix="subtide-video-") as work:
            try:
                video = self._source_video(spec, Path(work))
                if "video_burn" in kinds:
                    require_libass()
            except SubtideError as exc:
                yield exc.to_event()
                return
            share = min(_ENGINE_SHARE[kind] for kind in kinds)
            result = yield from _scaled(events, share)
            if result is not None:
                yield from self._videos(result, spec, job_id, video, share, stopped)

    def _source_video(self, spec: JobSpec, work: Path) -> Future[Path]:
        """The job's video: its upload, checked now, or its link's, fetched from now on."""
        future: Future[Path] = Future()
        if spec.source.path:
            path = Path(spec.source.path)
            media.probe_video(path)  # no picture: refused before the engine's work
            future.set_result(path)
            return future
        if not spec.source.url:
            raise media.no_video("Upload the video, or give its link, for a video output.")
        url, allow_private = spec.source.url, self._allow_private
        max_height = (spec.video or VideoOptions()).max_height

        def fetch() -> None:
            try:
                found = media.download(
                    url,
                    work,
                    allow_private=allow_private,
                    media_format=media.video_format(max_height),
                )
                future.set_result(found.path)
            except BaseException as exc:  # told when the video is made
                future.set_exception(exc)

        threading.Thread(target=fetch, name="subtide-video-fetch", daemon=True).start()
        return future

    def _videos(
        self,
        result: ResultEvent,
        spec: JobSpec,
        job_id: str,
        video: Future[Path],
        share: float,
        stopped: Callable[[], bool],
    ) -> Iterator[Event]:
        stem = file_stem(spec.source, result.title)
        options = spec.video or VideoOptions()
        step = (100 - share) / len(spec.video_kinds)
        made = []
        try:
            for number, kind in enumerate(spec.video_kinds):
                start = share + number * step
                yield ProgressEvent(stage="finalize", percent=start, message=_doing(kind))
                name = video_filename(stem, kind, options.container)
                path = make_video(
                    kind,
                    video.result(),
                    self.folder(job_id) / name,
                    result.cues,
                    language=result.language,
                    target_langs=outcome.file_targets(spec.target_langs, result),
                    style=spec.style,
                    options=options,
                    title=result.title,
                    should_stop=stopped,
                )
                url = f"/api/jobs/{job_id}/files/{quote(name)}"
                made.append(VideoFile(kind=kind, filename=name, size=path.stat().st_size, url=url))
        except SubtideError as exc:
            yield exc.to_event()
            return
        yield ProgressEvent(stage="finalize", percent=100, message="Done")
        yield result.model_copy(update={"videos": made})


def _scaled(events: Iterator[Event], share: float) -> Generator[Event, None, ResultEvent | None]:
    """The engine's events with their percent scaled into `share`, to their end; returns its
    result (not passed on: the videos go into it first), None when it ended otherwise."""
    result = None
    for event in events:
        if isinstance(event, ResultEvent):
            result = event
            continue
        if isinstance(event, ProgressEvent):
            event = event.model_copy(update={"percent": event.percent * share / 100})
        yield event
    return result


def _doing(kind: VideoKind) -> str:
    return "Burning the subtitles in" if kind == "video_burn" else "Adding the subtitle tracks"


def add_file_routes(
    app: FastAPI, videos: JobVideos, guards: list[Any], not_found: Callable[[], Exception]
) -> None:
    @app.get("/api/jobs/{job_id}/files/{name}", dependencies=guards)
    def file(job_id: str, name: str) -> FileResponse:
        # A plain name of a finished file: never a path, nor a file still being written
        # (engine.files.atomic_path names those with a leading dot).
        plain = name == Path(name).name and not name.startswith(".")
        path = videos.folder(job_id) / name
        if not (_JOB_ID.fullmatch(job_id) and plain and path.is_file()):
            raise not_found()
        media_type = _MEDIA_TYPES.get(path.suffix, "application/octet-stream")
        return FileResponse(path, media_type=media_type, filename=name)
