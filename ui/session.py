"""One finished job as the page keeps it, and the files rendered from it.

Each render writes a folder of its own, so two handlers of one page (an edit and a switch of
the preview) never write the same file at once; Gradio copies what it serves, by content.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from engine.edits import CueList, Edit
from engine.formats import render, render_files
from engine.languages import language_name
from engine.media import no_video
from engine.protocol import Cue, Format, Style, VideoKind, VideoOptions
from engine.video import make_video, video_filename
from engine.waveform import Peaks

EXPORT_FORMATS: tuple[Format, ...] = ("srt", "vtt", "ass", "txt", "json")
SOURCE_VIEW = "source"
_DUAL_PREFIX = "dual:"


@dataclass(frozen=True)
class Subtitles:
    """What the editor, the preview and the downloads are made from: the cue list, which every
    edit goes through (engine.edits), and what names and plays them."""

    edits: CueList
    targets: tuple[str, ...]
    stem: str  # file names for the downloads, from the title
    title: str | None
    video: Path | None  # the playable preview, if there is one
    folder: Path  # this job's own files, removed with the session
    peaks: Peaks | None = None  # the audio's outline, for the waveform

    @property
    def cues(self) -> tuple[Cue, ...]:
        return self.edits.cues

    @property
    def language(self) -> str:
        return self.edits.language

    @property
    def style(self) -> Style:
        return self.edits.style

    @property
    def duration(self) -> float:
        return self.edits.duration or 0.0

    def apply(self, edit: Edit) -> Subtitles:
        """These subtitles after `edit`; a SubtideError says why one is refused."""
        return replace(self, edits=self.edits.apply(edit))

    def restyled(self, **style: object) -> Subtitles:
        """These subtitles rendered with other style settings (labels, dual); the cues and
        their undo history stay as they are."""
        edits = replace(self.edits, style=self.style.model_copy(update=style))
        return replace(self, edits=edits)

    def exports(self) -> list[str]:
        """Every download, from the current cues: one file per format and language.

        Paths as text: gr.File takes nothing else for a list of files."""
        out = _revision(self.folder)
        files = render_files(
            self.cues,
            EXPORT_FORMATS,
            stem=self.stem,
            language=self.language,
            target_langs=self.targets,
            style=self.style,
            title=self.title,
            duration=self.duration,
        )
        for file in files:
            (out / file.filename).write_text(file.content, encoding="utf-8")
        return [str(out / file.filename) for file in files]

    def video_file(
        self,
        kind: VideoKind,
        view: str,
        on_progress: Callable[[float], None],
        should_stop: Callable[[], bool],
    ) -> Path:
        """The video with the current cues: every language as a track (soft), or burned in
        as the preview shows them (`view`: the original, a translation, or both)."""
        if self.video is None:
            raise no_video("Run a video file or a video link to get a video with subtitles.")
        lang, dual_with = _view_langs(view)
        style = self.style.model_copy(update={"dual": True}) if dual_with else self.style
        return make_video(
            kind,
            self.video,
            _revision(self.folder) / video_filename(self.stem, kind),
            self.cues,
            language=self.language,
            target_langs=self.targets,
            style=style,
            options=VideoOptions(burn_lang=dual_with or lang or self.language),
            title=self.title,
            on_progress=on_progress,
            should_stop=should_stop,
        )

    def preview_vtt(self, view: str) -> Path:
        """The track the player shows for a view: the source, a translation, or both."""
        lang, dual_with = _view_langs(view)
        text = render(
            "vtt",
            self.cues,
            lang=lang,
            dual_with=dual_with,
            style=self.style,
            language=self.language,
        )
        path = _revision(self.folder) / "preview.vtt"
        path.write_text(text, encoding="utf-8")
        return path


def view_choices(targets: tuple[str, ...]) -> list[tuple[str, str]]:
    """The subtitle tracks the preview can switch between."""
    return [
        ("Original", SOURCE_VIEW),
        *((language_name(lang), lang) for lang in targets),
        *((f"Dual: original + {language_name(lang)}", _DUAL_PREFIX + lang) for lang in targets),
    ]


def _view_langs(view: str) -> tuple[str | None, str | None]:
    if view.startswith(_DUAL_PREFIX):
        return None, view.removeprefix(_DUAL_PREFIX)
    return (None if view == SOURCE_VIEW else view), None


def _revision(folder: Path) -> Path:
    out = folder / uuid.uuid4().hex[:12]
    out.mkdir(parents=True)
    return out


# A job's files are kept this long after it started: as long as Gradio keeps the uploads and
# the files it served (the app's delete_cache), so a page left open a day still works.
JOB_FILES_MAX_AGE_S = 86400.0


class Workspace:
    """A temporary folder per job, under one root for the app. A job's folder goes with its
    page's session, or with the next job of that page; those no session holds (a script's
    /transcribe, a page never closed) go once they are `max_age_s` old, as new jobs start."""

    def __init__(self, max_age_s: float = JOB_FILES_MAX_AGE_S) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="subtide-ui-"))
        self.max_age_s = max_age_s
        # Also runs at interpreter exit, so a stopped app leaves no files behind.
        weakref.finalize(self, shutil.rmtree, self.root, ignore_errors=True)

    def new_job(self) -> Path:
        self._prune()
        return _revision(self.root)

    def _prune(self) -> None:
        oldest = time.time() - self.max_age_s
        for folder in self.root.iterdir():
            try:
                if folder.stat().st_mtime < oldest:
                    shutil.rmtree(folder, ignore_errors=True)
            except FileNotFoundError:  # a session's end removed it meanwhile
                continue

    @staticmethod
    def discard(subtitles: Subtitles | None) -> None:
        """Removes a job's files once its session ends or a new job replaces it."""
        if subtitles is not None:
            shutil.rmtree(subtitles.folder, ignore_errors=True)
