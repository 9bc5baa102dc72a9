"""The page's event handlers: run a job and stream it to the page, edit, switch the preview.

The run handler yields one list per update, in `SCREEN` order, with `gr.skip()` for every part
of the page it leaves alone, so a progress tick does not resend the whole table.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, wait
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import gradio as gr

from engine import outcome
from engine.edits import CueList, SetTimes
from engine.formats import file_stem
from engine.languages import same_language
from engine.protocol import (
    RETRY_HINT,
    Backend,
    Cue,
    DiarizeMode,
    ErrorEvent,
    JobSpec,
    ProgressEvent,
    ResultEvent,
    SubtideError,
    VideoKind,
)
from engine.waveform import Peaks, peaks
from ui import table as cue_table
from ui.editor import EditorInput
from ui.jobs import JobRunner
from ui.options import ASR_TRACK, SOURCE_NOTES, Form, media_kind, track_choices
from ui.remote import REMOTE, Remote, local_lines, report_html
from ui.session import SOURCE_VIEW, Subtitles, Workspace, view_choices
from ui.status import (
    cancelled_html,
    done_html,
    error_html,
    progress_html,
    status_html,
    warning_html,
)
from ui.timeline import speaker_timeline
from ui.uploads import Uploads
from ui.waveform import waveform_html

log = logging.getLogger(__name__)
PreviewFetcher = Callable[[str, Path], Path | None]
SCREEN = (
    "run",
    "progress",
    "caption_track",
    "error",
    "table",
    "video",
    "audio",
    "view",
    "timeline",
    "waveform",
    "downloads",
    "session",
)
# Seconds between page updates while the backend is quiet: the elapsed time keeps moving, and
# the page sees a Cancel within this time whatever the backend does.
HEARTBEAT_S = 1.0


def screen(**parts: Any) -> list[Any]:
    """One update of the page: the parts named, in `SCREEN` order; the rest left as they are."""
    assert parts.keys() <= set(SCREEN), parts.keys() - set(SCREEN)
    return [parts.get(name, gr.skip()) for name in SCREEN]


class Handlers:
    def __init__(
        self,
        local: Backend,
        fetch_preview: PreviewFetcher | None,
        workspace: Workspace,
        uploads: Uploads,
        remote: Remote | None = None,
    ) -> None:
        self.local = local
        self.uploads = uploads
        self.remote = remote
        self.runner = JobRunner()
        self.fetch_preview = fetch_preview
        self.workspace = workspace
        # Each page's latest job, for Cancel to keep what it had done.
        self.runs: dict[str, _Run] = {}

    def run(
        self,
        url: str | None,
        file: str | None,
        targets: list[str] | None,
        caption_track: str | None,
        source_lang: str | None,
        whisper_model: str | None,
        force_asr: bool,
        recue: bool,
        speakers: DiarizeMode,
        num_speakers: float | None,
        llm_url: str | None,
        llm_model: str | None,
        llm_key: str | None,
        about: str | None,
        glossary: str | None,
        max_chars: float,
        max_lines: float,
        dual: bool,
        speaker_labels: bool,
        backend_mode: str,
        backend_url: str | None,
        backend_key: str | None,
        session: Subtitles | None,
        request: gr.Request,
    ) -> Iterator[list[Any]]:
        form = Form.of(
            url,
            file,
            targets,
            caption_track,
            source_lang,
            whisper_model,
            force_asr,
            recue,
            speakers,
            num_speakers,
            llm_url,
            llm_model,
            llm_key,
            about,
            glossary,
            max_chars,
            max_lines,
            dual,
            speaker_labels,
        )
        try:
            self.uploads.check(form.file)
            job = form.job()
            backend = self._backend(job, backend_mode, backend_url or "", backend_key or "")
        except SubtideError as exc:
            yield _failed(exc.to_event(), 0.0)
            return
        self.workspace.discard(session)
        run = _Run(self, backend, job, form, self.workspace.new_job(), request.session_hash)
        self.runs[request.session_hash] = run
        try:
            yield from run.follow()
        finally:
            # A cancelled or closed run stays for Cancel to find (either may come first);
            # an ended one has nothing to keep.
            if run.ended and self.runs.get(request.session_hash) is run:
                del self.runs[request.session_hash]

    def transcribe(
        self,
        url: str | None,
        targets: list[str] | None,
        source_lang: str | None,
        whisper_model: str | None,
        force_asr: bool,
        recue: bool,
        speakers: DiarizeMode,
        num_speakers: float | None,
        llm_url: str | None,
        llm_model: str | None,
        llm_key: str | None,
        about: str | None,
        glossary: str | None,
        max_chars: float,
        max_lines: float,
        dual: bool,
        speaker_labels: bool,
        # Last, with its default: a page's box always holds a value, an upload may hold none.
        file: str | None = None,
        request: gr.Request | None = None,
    ) -> tuple[list[str], list[dict[str, Any]]]:
        """Subtitles for a link or an uploaded file: every download (SRT, VTT, ASS, TXT,
        JSON per language) and the cues. Runs on this app's own backend; a failure raises."""
        form = Form.of(
            url,
            file,
            targets,
            None,
            source_lang,
            whisper_model,
            force_asr,
            recue,
            speakers,
            num_speakers,
            llm_url,
            llm_model,
            llm_key,
            about,
            glossary,
            max_chars,
            max_lines,
            dual,
            speaker_labels,
        )
        try:
            self.uploads.check(form.file)
            job = form.job()
        except SubtideError as exc:
            raise _error(exc.to_event()) from None
        folder = self.workspace.new_job()
        owner = request.session_hash if request else ""
        with closing(self.runner.run(self.local, job, owner, HEARTBEAT_S)) as run:
            for event in run:
                if event is not None and event.type == "error":
                    raise _error(event)
                if event is not None and event.type == "result":
                    files = _subtitles(event, job, folder, None).exports()
                    return files, [cue.model_dump() for cue in event.cues]
        raise _error(ErrorEvent(code="internal", message="The job ended without a result."))

    def _backend(self, job: JobSpec, mode: str, url: str, key: str) -> Backend:
        # Translating a subtitle file needs no GPU: the LLM does the work wherever it runs.
        if mode != REMOTE or self.remote is None or _is_subtitles(job):
            return self.local
        if not url.strip():
            raise SubtideError(
                "bad_input",
                "No backend URL.",
                "Paste the endpoint or pod URL, or pick This machine.",
            )
        return self.remote.connect(url, self.remote.key_for(url, key))

    def check_backend(self, mode: str, url: str | None, key: str | None) -> str:
        """What the chosen backend is and whether it answers, for the "Check backend" button."""
        if mode != REMOTE or self.remote is None:
            health = self.local.health()
            return report_html(health.ok, local_lines(health))
        report = self.remote.check(url or "", self.remote.key_for(url or "", key or ""))
        return report_html(report.ok, report.lines())

    def edit(
        self,
        rows: list[list[Any]],
        view: str | None,
        session: Subtitles | None,
        delete_cleared: bool = False,
    ) -> list[Any]:
        """The table was edited: its changes go through the cue list, which the table, the
        preview and the downloads are then drawn from again (a refused change is undone).
        A cue whose text was cleared is deleted once the page has asked (`delete_cleared`)."""
        if session is None:  # edits during a job are not kept: the next cues replace them
            return [gr.skip()] * len(EDITED)
        try:
            changes = cue_table.edits(
                session.cues, rows, session.targets, delete_cleared=delete_cleared
            )
            for change in changes:
                session = session.apply(change)
        except SubtideError as exc:
            _refused(exc)
        return _edited(session, view)

    def operate(
        self,
        operation: str,
        cue_id: float | None,
        playhead: float | None,
        shift_ms: float | None,
        speaker: str | None,
        new_name: str | None,
        find: str | None,
        replace_with: str | None,
        view: str | None,
        session: Subtitles | None,
    ) -> list[Any]:
        """One of the editor's buttons (OPERATIONS) on the selected cue, at the playhead."""
        if session is None:
            return [gr.skip()] * len(EDITED)
        try:
            if operation == "undo":
                session = replace(session, edits=session.edits.undo())
            elif operation == "redo":
                session = replace(session, edits=session.edits.redo())
            else:
                boxes = EditorInput(
                    cue_id, playhead, shift_ms, speaker, new_name, find, replace_with
                )
                session = session.apply(boxes.edit(operation, session))
        except SubtideError as exc:
            _refused(exc)
        return _edited(session, view)

    def retime(
        self,
        cue_id: float | None,
        start: float | None,
        end: float | None,
        view: str | None,
        session: Subtitles | None,
    ) -> list[Any]:
        """A cue dragged on the waveform: by an edge, its new start or end (the other None);
        by its middle, both."""
        if session is None or cue_id is None:
            return [gr.skip()] * len(EDITED)
        try:
            session = session.apply(SetTimes(int(cue_id), start, end))
        except SubtideError as exc:
            _refused(exc)
        return _edited(session, view)

    def relabel(self, labels: bool, view: str | None, session: Subtitles | None) -> list[Any]:
        """Speaker labels switched on or off after the run: the downloads follow."""
        if session is None:
            return [gr.skip()] * len(EDITED)
        return _edited(session.restyled(speaker_labels=labels), view)

    def select(self, session: Subtitles | None, selected: gr.SelectData) -> Any:
        """A click on a row selects its cue for the editor's buttons."""
        row = selected.index[0] if isinstance(selected.index, list | tuple) else selected.index
        if session is None or not 0 <= row < len(session.cues):
            return gr.skip()
        return session.cues[row].id

    def make_video(
        self, kind: VideoKind, view: str | None, session: Subtitles | None
    ) -> Iterator[list[Any]]:
        """The video with its subtitles as they are now, into the downloads, with progress:
        the status, then the downloads."""
        if session is None:
            yield [status_html("failed", "No subtitles yet", 0, "Run a video first."), gr.skip()]
            return
        share = _Latest()
        stop = threading.Event()
        job: Future[Path] = Future()

        def work() -> None:
            try:
                path = session.video_file(kind, view or SOURCE_VIEW, share, stop.is_set)
                job.set_result(path)
            except Exception as exc:
                job.set_exception(exc)

        threading.Thread(target=work, name="subtide-video", daemon=True).start()
        try:
            while wait([job], timeout=HEARTBEAT_S / 2).not_done:
                yield [status_html("running", "Writing the video", 100 * share.value), gr.skip()]
            path = job.result()
        except SubtideError as exc:
            yield [status_html("failed", exc.message, 0, exc.hint or ""), gr.skip()]
            return
        except Exception:
            log.exception("the video could not be written")
            yield [
                status_html("failed", "The video could not be written.", 0, RETRY_HINT),
                gr.skip(),
            ]
            return
        finally:
            stop.set()  # a closed page stops ffmpeg
        yield [
            status_html("done", f"Added {path.name} to the downloads", 100),
            [*session.exports(), str(path)],
        ]

    def switch_view(self, view: str, session: Subtitles | None) -> Any:
        return gr.skip() if session is None else _video(session, view)

    def cancel(self, request: gr.Request) -> list[Any]:
        """Run offered again, whatever was running, and the cues the job had made, to edit
        and download. (Gradio stops following the job itself, so this says it all.)"""
        cancelled = self.runner.cancel(request.session_hash)
        run = self.runs.pop(request.session_hash, None)
        if run is not None and not run.ended:
            return run.kept()
        return screen(run=_RUN_ENABLED, progress=cancelled_html() if cancelled else gr.skip())


class _Run:
    """One job as the page sees it: the form, the events so far, the preview being fetched."""

    def __init__(
        self,
        handlers: Handlers,
        backend: Backend,
        job: JobSpec,
        form: Form,
        folder: Path,
        owner: str,
    ) -> None:
        self.handlers = handlers
        self.backend = backend
        self.job = job
        self.form = form
        self.folder = folder
        self.owner = owner
        self.started = time.monotonic()
        self.cues: dict[int, Cue] = {}
        self.language = job.source_lang
        # Finished or failed: a Cancel now has nothing to keep.
        self.ended = False
        self.last = ProgressEvent(stage="queued", percent=0, message="Starting")
        self.kind = media_kind(form.file) if form.file else None
        self.video = Path(form.file) if form.file and self.kind == "video" else None
        self.audio = Path(form.file) if form.file and self.kind == "audio" else None
        self.preview: Future[Path | None] | None = None
        fetch = handlers.fetch_preview
        if job.source.url and fetch is not None:
            self.preview = _in_background(fetch, job.source.url, folder)

    def follow(self) -> Iterator[list[Any]]:
        yield self._start_screen()
        events = self.handlers.runner.run(self.backend, self.job, self.owner, HEARTBEAT_S)
        with closing(events):
            try:
                for event in events:
                    if event is None or event.type == "progress":
                        self.last = event or self.last
                        self.language = self.last.language or self.language
                        yield screen(progress=self._progress(), video=self._new_preview())
                    elif event.type == "cues":
                        self.cues.update((cue.id, cue) for cue in event.cues)
                        yield screen(table=self._table(self.job.target_langs, interactive=False))
                    elif event.type == "error" and event.code == "cancelled":
                        yield self.kept()
                        return
                    elif event.type == "error":
                        yield self._failed(event)
                        return
                    else:
                        yield from self._finish(event)
                        return
            except SubtideError as exc:  # the runner could not start the job
                yield self._failed(exc.to_event())
                return
        yield self._failed(ErrorEvent(code="internal", message="The job ended without a result."))

    def _failed(self, error: ErrorEvent) -> list[Any]:
        self.ended = True
        return _failed(error, self.last.percent)

    def _start_screen(self) -> list[Any]:
        return screen(
            run=_RUN_DISABLED,
            progress=self._progress(),
            error=gr.HTML(visible=False),
            table=self._table(self.job.target_langs, interactive=False),
            video=gr.Video(value=self.video, subtitles=None, visible=self.video is not None),
            audio=gr.Audio(value=self.form.file, visible=True)
            if self.kind == "audio"
            else gr.Audio(value=None, visible=False),
            view=gr.Radio(visible=False),
            timeline=gr.HTML(visible=False),
            waveform=gr.HTML(visible=False),
            downloads=None,
            session=None,
        )

    def _finish(self, result: ResultEvent) -> Iterator[list[Any]]:
        self.ended = True
        self.cues = {cue.id: cue for cue in result.cues}
        subtitles = _subtitles(result, self.job, self.folder, self.video)
        downloads = subtitles.exports()
        if self.preview is not None and not self.preview.done():
            # The downloads need not wait for the preview video. Editing does: an edit made now
            # would be lost to the final update below.
            loading = status_html("running", "Loading the preview", 100)
            table = self._table(subtitles.targets, interactive=False)
            yield screen(progress=loading, table=table, downloads=downloads)
            while wait([self.preview], timeout=HEARTBEAT_S).not_done:
                yield screen(progress=loading)
        if self.preview is not None:
            subtitles = replace(subtitles, video=self.preview.result())
        subtitles = replace(subtitles, peaks=_peaks(subtitles.video or self.audio))
        elapsed = time.monotonic() - self.started
        yield _ready(
            subtitles,
            done_html(len(result.cues), elapsed, SOURCE_NOTES[result.source]),
            downloads,
            caption_track=_track_picker(result),
            error=_warnings(result),
        )

    def kept(self) -> list[Any]:
        """The page after a Cancel: the cues made so far, to edit and download."""
        if not self.cues:
            return screen(run=_RUN_ENABLED, progress=cancelled_html())
        cues = tuple(self.cues.values())
        language = self.language or _UNKNOWN_LANGUAGE
        subtitles = Subtitles(
            edits=CueList(cues, self.job.style, language, max(cue.end for cue in cues)),
            targets=tuple(t for t in self.job.target_langs if not same_language(t, language)),
            stem=file_stem(self.job.source, None),
            title=None,
            video=self._video_now(),
            folder=self.folder,
        )
        subtitles = replace(subtitles, peaks=_peaks(subtitles.video or self.audio))
        return _ready(subtitles, cancelled_html(len(cues)), subtitles.exports())

    def _progress(self) -> str:
        return progress_html(self.last, time.monotonic() - self.started)

    def _table(self, targets: list[str] | tuple[str, ...], *, interactive: bool) -> Any:
        ordered = sorted(self.cues.values(), key=lambda cue: cue.id)
        return gr.Dataframe(
            value=cue_table.table(ordered, targets),
            interactive=interactive,
            column_widths=cue_table.column_widths(targets),
        )

    def _new_preview(self) -> Any:
        """The fetched preview video, once, as soon as it is there."""
        if self.preview is None or not self.preview.done():
            return gr.skip()
        self.video, self.preview = self.preview.result(), None
        return gr.skip() if self.video is None else gr.Video(value=self.video, visible=True)

    def _video_now(self) -> Path | None:
        """The video to preview, the fetched one if it has come."""
        if self.preview is not None and self.preview.done():
            return self.preview.result()
        return self.video


def _subtitles(result: ResultEvent, job: JobSpec, folder: Path, video: Path | None) -> Subtitles:
    """A finished job as the editor and the downloads take it."""
    return Subtitles(
        edits=CueList(tuple(result.cues), job.style, result.language, result.duration),
        # Targets in the spoken language were skipped, and those where nothing could be
        # translated failed: they get no column and no files (the warning says why).
        targets=tuple(outcome.file_targets(job.target_langs, result)),
        stem=file_stem(job.source, result.title),
        title=result.title,
        video=video,
        folder=folder,
    )


def _error(event: ErrorEvent) -> gr.Error:
    """A failed job for a script: gradio_client raises it with this message."""
    hint = f" To fix: {event.hint}" if event.hint else ""
    return gr.Error(f"{event.message}{hint}", print_exception=False)


# A cancelled job's language when it had not said it yet ("undetermined", ISO 639-2).
_UNKNOWN_LANGUAGE = "und"
# What an edit redraws, in this order.
EDITED = ("table", "video", "downloads", "timeline", "waveform", "speaker", "session")


def _edited(session: Subtitles, view: str | None) -> list[Any]:
    timeline = speaker_timeline(session.cues, session.duration)
    return [
        _editable_table(session),
        _video(session, view or SOURCE_VIEW),
        session.exports(),
        gr.HTML(timeline, visible=bool(timeline)),
        _waveform(session),
        speaker_picker(session),
        session,
    ]


def _waveform(session: Subtitles) -> Any:
    if session.peaks is None:
        return gr.HTML(visible=False)
    return gr.HTML(waveform_html(session.peaks, session.cues, session.duration), visible=True)


def _peaks(media: Path | None) -> Peaks | None:
    """The outline of the media's audio, or None where there is none to read."""
    if media is None:
        return None
    try:
        return peaks(media)
    except SubtideError as exc:
        # The waveform is a convenience: the editor works without it.
        log.warning("no waveform for %s: %s", media.name, exc.message)
        return None


def _ready(subtitles: Subtitles, progress: str, downloads: list[str], **parts: Any) -> list[Any]:
    """The page with a job's subtitles to edit and download, Run offered again."""
    timeline = speaker_timeline(subtitles.cues, subtitles.duration)
    has_video = subtitles.video is not None
    return screen(
        run=_RUN_ENABLED,
        progress=progress,
        table=_editable_table(subtitles),
        video=_video(subtitles, SOURCE_VIEW),
        view=gr.Radio(
            choices=view_choices(subtitles.targets),
            value=SOURCE_VIEW,
            visible=has_video and bool(subtitles.targets),
        ),
        timeline=gr.HTML(timeline, visible=bool(timeline)),
        waveform=_waveform(subtitles),
        downloads=downloads,
        session=subtitles,
        **parts,
    )


def _editable_table(session: Subtitles) -> Any:
    """The table of a finished job, drawn from the cue list: text and times editable."""
    return gr.Dataframe(
        value=cue_table.table(session.cues, session.targets),
        interactive=True,
        column_widths=cue_table.column_widths(session.targets),
    )


def speaker_picker(session: Subtitles) -> Any:
    speakers = sorted({cue.speaker for cue in session.cues if cue.speaker})
    return gr.Dropdown(choices=speakers, value=speakers[0] if speakers else None)


class _Latest:
    """The last share of the work done that a worker reported, for the page to show."""

    def __init__(self) -> None:
        self.value = 0.0

    def __call__(self, value: float) -> None:
        self.value = value


def _refused(exc: SubtideError) -> None:
    """A refused edit: a notice on the page, and the list as it was."""
    hint = f" {exc.hint}" if exc.hint else ""
    gr.Warning(f"{exc.message}{hint}")


# Run is switched off while a job runs (a second press would queue a second job), and back on
# at every end: done, failed, cancelled.
_RUN_ENABLED = gr.Button(interactive=True)
_RUN_DISABLED = gr.Button(interactive=False)


def _failed(error: ErrorEvent, percent: float) -> list[Any]:
    if error.code == "cancelled":
        return screen(run=_RUN_ENABLED, progress=cancelled_html())
    return screen(
        run=_RUN_ENABLED,
        progress=status_html("failed", "Stopped", percent, "See the message below."),
        error=gr.HTML(error_html(error.message, error.hint), visible=True),
    )


def _warnings(result: ResultEvent) -> Any:
    """Translations that are missing, as a box that stays: the status line moves on."""
    lines = []
    for lang, report in outcome.incomplete(result.targets).items():
        if report.failed:
            message, hint = outcome.failure_message(lang, report)
            lines.append(f"{message} To fix: {hint}.")
        else:
            kept = outcome.kept_message(lang, report, result.language)
            lines.append(
                f"{kept}: marked {cue_table.KEPT!r} in the table and listed under "
                f"'untranslated' in the JSON download ({outcome.why(report)})."
            )
    return gr.HTML(warning_html(lines), visible=True) if lines else gr.HTML(visible=False)


def _track_picker(result: ResultEvent) -> Any:
    """The video's caption tracks, the one used chosen, for a next run to pick another."""
    if not result.caption_tracks:
        return forget_tracks()
    return gr.Dropdown(
        choices=track_choices(result), value=result.caption_track or ASR_TRACK, visible=True
    )


def forget_tracks() -> Any:
    """A new source: the tracks of the last one no longer apply."""
    return gr.Dropdown(choices=[], value=None, visible=False)


def _is_subtitles(job: JobSpec) -> bool:
    return bool(job.source.path) and media_kind(job.source.path) == "subtitles"


def _video(subtitles: Subtitles, view: str) -> Any:
    if subtitles.video is None:
        return gr.Video(value=None, visible=False)
    # Subtitles reach the player only when set together with the video by an event.
    vtt = subtitles.preview_vtt(view)
    return gr.Video(value=subtitles.video, subtitles=vtt, visible=True)


def _in_background(fetch: PreviewFetcher, url: str, folder: Path) -> Future[Path | None]:
    future: Future[Path | None] = Future()

    def work() -> None:
        try:
            future.set_result(fetch(url, folder))
        except Exception:
            # The preview is a convenience: the subtitles are made without it.
            log.warning("no preview video for %s", url, exc_info=True)
            future.set_result(None)

    threading.Thread(target=work, name="subtide-preview", daemon=True).start()
    return future
