"""The Subtide page: the form, the run with its live table, the preview, edits and downloads."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import gradio as gr
from fastapi import FastAPI
from gradio.exceptions import InvalidPathError

from engine.protocol import Backend
from ui.editor import OPERATIONS
from ui.handlers import EDITED, SCREEN, Handlers, PreviewFetcher, forget_tracks
from ui.options import (
    AUTO,
    DEFAULT_MODEL,
    SPEAKER_MODES,
    model_choices,
    source_choices,
    target_choices,
)
from ui.remote import BACKEND_MODES, LOCAL, REMOTE, Remote
from ui.session import Workspace
from ui.status import status_html
from ui.table import (
    END_COLUMN,
    START_COLUMN,
    STATIC_COLUMNS,
    TEXT_COLUMN,
    column_widths,
    headers,
)
from ui.uploads import NOT_UPLOADED, NOT_UPLOADED_HINT, Uploads

# BrowserState encrypts with this before writing localStorage. The page can read it, so it
# only keeps the key from sitting there as plain text; a fixed one keeps the saved key
# readable after the app restarts (a random one per start would forget it).
_KEY_STORAGE = "subtide-llm-key"
_BACKEND_STORAGE = "subtide-backend"
_KEY_SECRET = "subtide-llm-key-v1"
_UPLOAD_TYPES = ["video", "audio", ".srt", ".vtt"]
# What a blank LLM box means where a server has its own LLM: the server's value, which the
# page never shows (the login page would show it to anyone).
_SERVERS_OWN = "the server's own"


class _Blocks(gr.Blocks):
    """Blocks that never keep a run history, and whose runs read uploaded files only, however
    they are launched (`launch` below) or mounted (`mount`).

    Gradio's run history saves every input of every run (the API key too) in plain text in
    the browser, shows it again on /gradio_api/runs and offers to upload it to a Hugging Face
    bucket. `launch` and `mount_gradio_app` both set this attribute, so it ignores them."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.uploads = Uploads()

    def launch(self, *args: Any, app_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        return super().launch(*args, app_kwargs=_recording(self, app_kwargs), **kwargs)

    @property
    def run_history(self) -> bool:
        return False

    @run_history.setter
    def run_history(self, value: bool) -> None:
        pass

    async def preprocess_data(self, *args: Any, **kwargs: Any) -> Any:
        """Gradio refuses an input file that was not uploaded with a message that names the
        path (a prober learns which server files exist); this says what to do instead."""
        try:
            return await super().preprocess_data(*args, **kwargs)
        except InvalidPathError:
            # A client's doing, not a fault of the app: no traceback in the server log.
            raise gr.Error(f"{NOT_UPLOADED} {NOT_UPLOADED_HINT}", print_exception=False) from None


@dataclass(frozen=True)
class UiDefaults:
    whisper_model: str = "bundled"
    # The Whisper models a job may ask for; None: any, a model folder too (this machine's app).
    whisper_models: tuple[str, ...] | None = None
    llm_base_url: str | None = None
    llm_model: str | None = None
    # The server has its own LLM key; the key itself never reaches the page.
    llm_configured: bool = False


def build(
    backend_factory: Callable[[], Backend],
    *,
    fetch_preview: PreviewFetcher | None = None,
    defaults: UiDefaults | None = None,
    remote: Remote | None = None,
) -> _Blocks:
    """The app, on the backend `backend_factory` gives (called once, here); with `remote`, the
    user may send jobs to a backend elsewhere instead."""
    defaults = defaults or UiDefaults()
    # No analytics: the app works offline and reports nothing to anyone.
    blocks = _Blocks(title="Subtide", delete_cache=(3600, 86400), analytics_enabled=False)
    handlers = Handlers(backend_factory(), fetch_preview, Workspace(), blocks.uploads, remote)
    with blocks:
        gr.Markdown("# Subtide\nTurn any video into timed, readable, translated subtitles.")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=340):
                form = _inputs()
                with gr.Row():
                    run = gr.Button("Run", variant="primary", elem_id="run")
                    cancel = gr.Button("Cancel", variant="stop", elem_id="cancel")
                progress = gr.HTML(
                    status_html("idle", "Ready", 0, "Give a link or a file, then press Run."),
                    elem_id="progress",
                )
                error = gr.HTML(visible=False, elem_id="error")
                options, names = _options(defaults)
                form |= options
                backend = _backend(remote)
                form |= backend.inputs
            with gr.Column(scale=2, min_width=420):
                video = gr.Video(
                    label="Preview", interactive=False, visible=False, elem_id="preview"
                )
                audio = gr.Audio(label="Audio", interactive=False, visible=False, elem_id="audio")
                view = gr.Radio(label="Subtitles in the preview", visible=False, elem_id="view")
                timeline = gr.HTML(visible=False, elem_id="timeline")
                waveform = gr.HTML(visible=False, elem_id="waveform")
                table = gr.Dataframe(
                    value={"headers": headers(()), "data": []},
                    type="array",
                    interactive=False,
                    static_columns=STATIC_COLUMNS,
                    column_widths=column_widths(()),
                    wrap=True,
                    max_height=520,
                    label="Subtitles (click a row to play it; double-click a time or a text "
                    "to edit it)",
                    elem_id="cues",
                )
                tools = _editor(names)
                video_out = _video_out()
                downloads = gr.File(
                    label="Downloads", file_count="multiple", interactive=False, elem_id="downloads"
                )
        session = gr.State(None, delete_callback=Workspace.discard)
        parts = {
            "run": run,
            "progress": progress,
            "caption_track": form["caption_track"],
            "error": error,
            "table": table,
            "video": video,
            "audio": audio,
            "view": view,
            "timeline": timeline,
            "waveform": waveform,
            "downloads": downloads,
            "session": session,
        }
        job = gr.on(
            [run.click, form["url"].submit],
            handlers.run,
            inputs=[*form.values(), session],
            outputs=[parts[name] for name in SCREEN],
            api_name="run",
            # The page's own: scripts have /transcribe.
            api_visibility="undocumented",
            # One backend: jobs take turns, and Cancel knows whose job is running.
            concurrency_limit=1,
            concurrency_id=_JOBS,
            show_progress="hidden",
        )
        _transcribe_api(handlers, form)
        for source in (form["url"], form["file"]):
            source.change(
                forget_tracks,
                outputs=form["caption_track"],
                show_progress="hidden",
                queue=False,
                api_visibility="private",
            )
        cancel.click(
            handlers.cancel,
            outputs=[parts[name] for name in SCREEN],
            cancels=[job],
            api_name="cancel_job",
            api_visibility="undocumented",
            queue=False,
        )
        parts["speaker"] = tools.speaker
        edited = [parts[name] for name in EDITED]
        delete_cleared = gr.Checkbox(visible=False)
        table.input(
            handlers.edit,
            inputs=[table, view, session, delete_cleared],
            outputs=edited,
            js=_CONFIRM_CLEARED,
            api_name="edit",
            api_visibility="undocumented",
            show_progress="hidden",
        )
        table.select(handlers.select, inputs=session, outputs=tools.cue, api_visibility="private")
        form["speaker_labels"].input(
            handlers.relabel,
            inputs=[form["speaker_labels"], view, session],
            outputs=edited,
            api_name="relabel",
            api_visibility="undocumented",
            show_progress="hidden",
        )
        boxes = [tools.cue, tools.playhead, tools.shift_ms, tools.speaker, tools.new_name]
        boxes += [tools.find, tools.replace_with, view, session]
        for operation, button in tools.buttons.items():
            button.click(
                partial(handlers.operate, operation),
                inputs=boxes,
                outputs=edited,
                js=_AT_PLAYHEAD,
                api_name=f"edit_{operation}",
                api_visibility="undocumented",
                show_progress="hidden",
            )
        video_out.make.click(
            handlers.make_video,
            inputs=[video_out.kind, view, session],
            outputs=[video_out.status, downloads],
            api_name="make_video",
            api_visibility="undocumented",
            show_progress="hidden",
        )
        _retime_on_drag(handlers, view, session, edited)
        blocks.load(None, js=_PLAYER_LINK)
        view.input(
            handlers.switch_view,
            inputs=[view, session],
            outputs=video,
            show_progress="hidden",
            api_visibility="private",
        )
        if backend.check is not None:
            backend.check.click(
                handlers.check_backend,
                inputs=list(backend.inputs.values()),
                outputs=backend.report,
                api_name="check_backend",
                api_visibility="undocumented",
            )
        _remember(blocks, [form["llm_key"]], _KEY_STORAGE)
        if remote is not None:
            _remember(blocks, list(backend.inputs.values()), _BACKEND_STORAGE)
    return blocks


# The concurrency group of everything that runs a job: one at a time on the one backend.
_JOBS = "jobs"
# The page's boxes that /transcribe reads, in the order of Handlers.transcribe's parameters.
_TRANSCRIBE_INPUTS = (
    "url",
    "targets",
    "source_lang",
    "whisper_model",
    "force_asr",
    "recue",
    "speakers",
    "num_speakers",
    "llm_url",
    "llm_model",
    "llm_key",
    "about",
    "glossary",
    "max_chars",
    "max_lines",
    "dual",
    "speaker_labels",
    "file",
)


def _transcribe_api(handlers: Handlers, form: dict[str, gr.components.Component]) -> None:
    """/transcribe, for scripts (gradio_client): the page's options by name, each with the
    page's default, and two named results, the files and the cues; a failure raises."""
    files = gr.File(label="Subtitle files", file_count="multiple", visible=False)
    cues = gr.JSON(label="Cues", visible=False)
    gr.Button(visible=False).click(
        handlers.transcribe,
        inputs=[form[name] for name in _TRANSCRIBE_INPUTS],
        outputs=[files, cues],
        api_name="transcribe",
        concurrency_limit=1,
        concurrency_id=_JOBS,
    )


@dataclass
class _VideoOut:
    kind: gr.Radio
    make: gr.Button
    status: gr.HTML


def _video_out() -> _VideoOut:
    """The video with its subtitles, made from the cues as edited, into the downloads."""
    with gr.Row(equal_height=True, elem_id="video-out"):
        kind = gr.Radio(
            [("Tracks to switch on and off", "video_soft"), ("Burned in", "video_burn")],
            value="video_soft",
            label="Video with subtitles",
            info="Tracks: every language, the picture untouched (MKV). Burned in: the "
            "subtitles the preview shows (original, a translation or both), in MP4.",
            elem_id="video-kind",
            scale=3,
        )
        make = gr.Button("Make the video", elem_id="make-video", scale=1)
    status = gr.HTML(elem_id="video-status")
    return _VideoOut(kind, make, status)


def _retime_on_drag(
    handlers: Handlers, view: gr.Radio, session: gr.State, edited: list[Any]
) -> None:
    """A region's edge (or the region) dropped on the waveform: the page's script leaves the
    cue and its new times where the button's own script picks them up, and presses the button
    (hidden)."""
    cue, start, end = (gr.Number(visible=False) for _ in range(3))
    button = gr.Button("Retime", elem_id="wave-retime", elem_classes=["subtide-offscreen"])
    button.click(
        handlers.retime,
        inputs=[cue, start, end, view, session],
        outputs=edited,
        js=_DROPPED,
        api_visibility="private",
        show_progress="hidden",
    )


# The edge dropped last (set by _PLAYER_LINK), as the first three inputs.
_DROPPED = """(...inputs) => {
    const dropped = window.subtideDropped || {};
    window.subtideDropped = null;
    return [dropped.cue ?? null, dropped.start ?? null, dropped.end ?? null, ...inputs.slice(3)];
}"""


@dataclass
class _SpeakerNames:
    speaker: gr.Dropdown
    new_name: gr.Textbox
    rename: gr.Button


@dataclass
class _Editor:
    cue: gr.Number
    playhead: gr.Number
    shift_ms: gr.Number
    speaker: gr.Dropdown
    new_name: gr.Textbox
    find: gr.Textbox
    replace_with: gr.Textbox
    buttons: dict[str, gr.Button]


def _speaker_names() -> _SpeakerNames:
    """Names for the speakers a run found: a rename is an edit of every cue of theirs."""
    with gr.Row(equal_height=True):
        speaker = gr.Dropdown(label="Speaker", choices=[], elem_id="speaker-from")
        new_name = gr.Textbox(label="Name", placeholder="e.g. Anna", elem_id="speaker-name")
    rename = gr.Button("Rename speaker", size="sm", elem_id="edit-rename")
    return _SpeakerNames(speaker, new_name, rename)


def _editor(names: _SpeakerNames) -> _Editor:
    """The editor's tools under the table: each button is one edit of the cue list (the
    speakers' names are edited where the speakers are chosen)."""
    buttons: dict[str, gr.Button] = {"rename": names.rename}
    with gr.Group(elem_id="editor"):
        with gr.Row(equal_height=True):
            cue = gr.Number(
                label="Cue", precision=0, minimum=0, elem_id="cue-id", min_width=80, scale=0
            )
            shift_ms = gr.Number(
                value=0, label="Shift (ms)", precision=0, elem_id="shift-ms", min_width=100, scale=0
            )
            playhead = gr.Number(visible=False, elem_id="playhead")
        with gr.Row(elem_id="editor-buttons"):
            for label, operation in OPERATIONS.items():
                buttons[operation] = gr.Button(
                    label, size="sm", elem_id=f"edit-{operation.replace('_', '-')}", min_width=60
                )
        with gr.Row(equal_height=True):
            find = gr.Textbox(label="Find", elem_id="find")
            replace_with = gr.Textbox(label="Replace with", elem_id="replace-with")
            buttons["replace"] = gr.Button("Replace all", size="sm", elem_id="edit-replace")
    gr.Markdown(_KEYS_HELP, elem_id="editor-keys")
    return _Editor(
        cue, playhead, shift_ms, names.speaker, names.new_name, find, replace_with, buttons
    )


# The player's position, read in the page as a button is pressed: the second of the boxes.
_AT_PLAYHEAD = """(...boxes) => {
    const player = document.querySelector('#preview video, #audio audio');
    boxes[1] = player ? player.currentTime : null;
    return boxes;
}"""
# A cue's text cleared in the table: the page asks before its cue is deleted (the last input).
# The table reports one edit twice (on Enter and as the cell closes): the answer is reused.
_CONFIRM_CLEARED = """(table, ...rest) => {
    const rows = Array.isArray(table) ? table : (table?.data ?? []);
    const cleared = rows.filter((row) => String(row[__TEXT__] ?? '').trim() === '')
        .map((row) => row[0]).join(', ');
    const asked = window.subtideCleared;
    let yes = false;
    if (cleared && asked?.cleared === cleared && Date.now() - asked.at < 2000) {
        yes = asked.yes;
    } else if (cleared) {
        yes = window.confirm(`Delete cue ${cleared}? Its text is empty. (Undo brings it back.)`);
        window.subtideCleared = {cleared, yes, at: Date.now()};
    }
    rest[rest.length - 1] = yes;
    return [table, ...rest];
}""".replace("__TEXT__", str(TEXT_COLUMN))
_KEYS = {"s": "split", "m": "merge", "[": "set_start", "]": "set_end", "z": "undo", "y": "redo"}
_KEYS_HELP = (
    "Keys (outside a text box): "
    + ", ".join(f"**{key}** {operation.replace('_', ' ')}" for key, operation in _KEYS.items())
    + ". Click a row to select its cue and play from its start. On the waveform, click to "
    "play from there; drag a cue's edge to change its start or end, or its middle to move it."
)
# The row being played; headers and times whole, the table and the speaker timeline scrolled
# sideways on a narrow screen (wide enough that a time fits its column, a label is legible);
# the player's controls under the picture, not over it, where they would cover the subtitles
# (the player draws them at the bottom of the video box), and the box no taller than the
# picture on a narrow screen. The table's cell menu keeps only "Delete row" (a cue deleted):
# a new row would be no cue (cues are added at the playhead), and the columns are fixed.
_CSS = """
#cues .virtual-row.subtide-playing [role=gridcell] { background: var(--color-accent-soft); }
#cues [role=columnheader] { white-space: nowrap; word-break: keep-all; }
@media (max-width: 640px) {
    #cues .table-wrap { overflow-x: auto; }
    #cues .table-container { min-width: 760px; }
    #timeline .prose { overflow-x: auto; }
    #timeline svg { min-width: 720px; }
}
#preview, #preview .wrap, #preview .mirror-wrap { height: auto !important; }
#preview video { height: auto !important; max-height: 360px; }
#preview .controls { position: static !important; margin-top: 4px; }
#preview video::cue { line-height: 1.2; }
.subtide-offscreen { display: none !important; }
.cell-menu button[aria-label="Add row above"], .cell-menu button[aria-label="Add row below"],
.cell-menu button[aria-label="Add column to the left"],
.cell-menu button[aria-label="Add column to the right"],
.cell-menu button[aria-label="Delete column"] { display: none !important; }
"""
# Rows and player linked in the page: a click on a row plays from its cue's start, the row
# of the cue being played is marked and kept in view, and the keys press the buttons.
_PLAYER_LINK = (
    r"""() => {
    const keys = __KEYS__;
    const player = () => document.querySelector('#preview video, #audio audio');
    const seconds = (text) => text.trim().split(':').reduce((a, part) => a * 60 + Number(part), 0);
    const rows = () => [...document.querySelectorAll('#cues [role=row].virtual-row')];
    const times = (row) => {
        const cell = (col) => row.querySelector(`[role=gridcell][data-col="${col}"]`);
        const start = cell(__START__), end = cell(__END__);
        return start && end ? [seconds(start.innerText), seconds(end.innerText)] : null;
    };
    if (!document.getElementById('subtide-style')) {
        const style = document.createElement('style');
        style.id = 'subtide-style';
        style.textContent = __CSS__;
        document.head.append(style);
    }
    document.addEventListener('click', (event) => {
        const row = event.target.closest('#cues [role=row].virtual-row');
        const media = player();
        const span = row && times(row);
        if (media && span) media.currentTime = span[0];
    });
    document.addEventListener('timeupdate', (event) => {
        if (event.target !== player()) return;
        const now = event.target.currentTime;
        for (const row of rows()) {
            const span = times(row);
            const playing = !!span && span[0] <= now && now < span[1];
            if (playing && !row.classList.contains('subtide-playing')) {
                row.scrollIntoView({block: 'nearest'});
            }
            row.classList.toggle('subtide-playing', playing);
        }
    }, true);
    // The waveform: a click plays from there; an edge dragged and dropped retimes its cue, a
    // region dragged by its body moves the cue whole.
    const scale = () => Number(document.querySelector('#waveform .subtide-wave')
        ?.dataset.pxPerS || 0);
    let drag = null, dragged = false;
    document.addEventListener('pointerdown', (event) => {
        const part = event.target.closest('#waveform .subtide-edge, #waveform .subtide-span');
        if (!part) return;
        const region = part.closest('.subtide-region');
        const span = region.querySelector('.subtide-span');
        drag = {part, region, span, side: part.dataset.edge || 'move', from: event.clientX,
                moved: 0, x: Number(span.getAttribute('x')),
                width: Number(span.getAttribute('width'))};
        dragged = false;
        event.preventDefault();
    });
    document.addEventListener('pointermove', (event) => {
        if (!drag) return;
        drag.moved = event.clientX - drag.from;
        if (drag.side === 'move') {
            drag.region.setAttribute('transform', `translate(${drag.moved} 0)`);
            return;
        }
        drag.part.setAttribute('transform', `translate(${drag.moved} 0)`);
        const grown = drag.side === 'start' ? -drag.moved : drag.moved;
        drag.span.setAttribute('x', drag.x + (drag.side === 'start' ? drag.moved : 0));
        drag.span.setAttribute('width', Math.max(1, drag.width + grown));
    });
    document.addEventListener('pointerup', () => {
        if (!drag) return;
        const {region, side, moved} = drag;
        drag = null;
        if (Math.abs(moved) < 2 || !scale()) return;
        dragged = true;  // not a click: the player stays where it is
        const at = (edge) => Math.max(
            0, Math.round((Number(region.dataset[edge]) + moved / scale()) * 1000) / 1000);
        const cue = Number(region.dataset.cue);
        window.subtideDropped = side === 'move'
            ? {cue, start: at('start'), end: at('end')} : {cue, [side]: at(side)};
        document.getElementById('wave-retime').click();
    });
    document.addEventListener('click', (event) => {
        const svg = event.target.closest('#waveform svg');
        const media = player();
        if (!svg || !media || !scale() || event.target.closest('.subtide-edge')) return;
        if (dragged) { dragged = false; return; }
        media.currentTime = (event.clientX - svg.getBoundingClientRect().left) / scale();
    });
    document.addEventListener('timeupdate', (event) => {
        const line = document.querySelector('#waveform .subtide-playhead');
        if (event.target !== player() || !line) return;
        const x = event.target.currentTime * scale();
        line.setAttribute('x1', x);
        line.setAttribute('x2', x);
        const box = line.closest('.subtide-wave');
        if (x < box.scrollLeft || x > box.scrollLeft + box.clientWidth - 20) {
            box.scrollLeft = Math.max(0, x - box.clientWidth / 3);
        }
    }, true);
    document.addEventListener('keydown', (event) => {
        if (event.ctrlKey || event.metaKey || event.altKey) return;
        if (event.target.closest('input, textarea, [contenteditable="true"]')) return;
        const operation = keys[event.key];
        const button = operation && document.getElementById('edit-' + operation.replace('_', '-'));
        if (button) { event.preventDefault(); button.click(); }
    });
}""".replace("__KEYS__", json.dumps(_KEYS))
    .replace("__START__", str(START_COLUMN))
    .replace("__END__", str(END_COLUMN))
    .replace("__CSS__", json.dumps(_CSS))
)


def launch(
    blocks: gr.Blocks,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    auth: tuple[str, str] | None = None,
    open_browser: bool = False,
) -> None:
    """Serves the app until interrupted."""
    blocks.launch(
        server_name=host, server_port=port, share=share, auth=auth, inbrowser=open_browser
    )


def mount(
    app: FastAPI, blocks: _Blocks, *, auth: tuple[str, str] | None, max_upload_mb: float
) -> None:
    """Serves the app at "/" of `app` (the server's API) with the rules `launch` gives it."""
    gr.mount_gradio_app(
        app,
        blocks,
        path="/",
        app_kwargs=_recording(blocks, None),
        auth=auth,
        # The server's one upload limit, in Gradio's own terms too: its upload route refuses a
        # bigger file (413) and removes what it had stored of it.
        max_file_size=int(max_upload_mb * 1e6),
        # As with `launch`: an unexpected error's text (a path, a URL) stays in the server's
        # log. The messages the app means to show (gr.Error) still reach the page.
        show_error=False,
    )
    # `launch` sets this, and Gradio only checks that an input file was uploaded when it is
    # set: without it a client may name any file of the server as its upload.
    blocks.has_launched = True


def _recording(blocks: _Blocks, app_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """`app_kwargs` for Gradio's app, with the middleware that notes what its uploads stored."""
    app_kwargs = dict(app_kwargs or {})
    app_kwargs["middleware"] = [*app_kwargs.get("middleware", []), blocks.uploads.recorder()]
    return app_kwargs


def _inputs() -> dict[str, gr.components.Component]:
    """What to subtitle and into which languages: the first parameters of the run handler."""
    form: dict[str, gr.components.Component] = {}
    form["url"] = gr.Textbox(
        value="",
        label="Video link",
        placeholder="https://… (anything yt-dlp can open; Enter runs)",
        elem_id="url",
    )
    form["file"] = gr.File(
        label="…or upload a video, audio, or an SRT/VTT file to translate",
        file_types=_UPLOAD_TYPES,
        height=120,
        elem_id="upload",
    )
    form["targets"] = gr.Dropdown(
        target_choices(),
        value=[],
        multiselect=True,
        label="Translate into",
        info="Type to search. Leave empty for subtitles in the spoken language only.",
        elem_id="targets",
    )
    # Filled after a run on a video that has captions: pick a track, then Run again.
    form["caption_track"] = gr.Dropdown(
        choices=[],
        value=None,
        label="Text from",
        info="The video has captions. Pick where the text comes from, then press Run again.",
        visible=False,
        elem_id="caption-track",
    )
    return form


def _options(
    defaults: UiDefaults,
) -> tuple[dict[str, gr.components.Component], _SpeakerNames]:
    """The advanced options, folded away: the run handler's remaining parameters, in order;
    and the speakers' names, edited beside the other speaker settings."""
    form: dict[str, gr.components.Component] = {}
    with gr.Accordion("Transcription", open=False):
        form["source_lang"] = gr.Dropdown(
            source_choices(),
            value=AUTO,
            label="Spoken language",
            info="Auto-detect suits most videos; set it for short or mixed-language clips.",
        )
        form["whisper_model"] = _whisper_model(defaults)
        form["force_asr"] = gr.Checkbox(
            label="Always transcribe",
            info="Ignore captions the video already has (they are used when made by people).",
            elem_id="force-asr",
        )
        form["recue"] = gr.Checkbox(
            label="Re-cut captions",
            info="Apply Subtide's line length and timing rules to captions, instead of keeping "
            "the site's cues as they are.",
        )
    with gr.Accordion("Speakers", open=False):
        form["speakers"] = gr.Radio(
            list(SPEAKER_MODES),
            value="off",
            label="Label who speaks",
            info="auto uses pyannote when it is set up, else the built-in model.",
        )
        form["num_speakers"] = gr.Number(
            value=0,
            precision=0,
            minimum=0,
            maximum=32,
            label="Number of speakers",
            info="0 lets Subtide find out.",
        )
        # On by default: who speaks is why speakers are labelled. A change after the run
        # applies to the downloads at once.
        labels = gr.Checkbox(
            value=True,
            label="Speaker labels",
            info="Prefix each subtitle with its speaker's name.",
            elem_id="speaker-labels",
        )
        names = _speaker_names()
    with gr.Accordion("Translation provider", open=False):
        form["llm_url"] = gr.Textbox(
            value=defaults.llm_base_url or "",
            label="API base URL",
            placeholder=_SERVERS_OWN if defaults.llm_configured else "https://api.openai.com/v1",
            info="Any OpenAI-compatible API: OpenAI, Ollama, LM Studio, vLLM…",
        )
        form["llm_model"] = gr.Textbox(
            value=defaults.llm_model or "",
            label="Model",
            placeholder=_SERVERS_OWN if defaults.llm_configured else "e.g. gpt-4o-mini",
        )
        form["llm_key"] = gr.Textbox(
            value="",
            type="password",
            label="API key",
            info=("Optional: the server has its own key. " if defaults.llm_configured else "")
            + "Kept in this browser only.",
            elem_id="llm-key",
        )
        form["about"] = gr.Textbox(
            value="",
            label="About the video",
            placeholder="e.g. a cooking show; the hosts are Anna and Ben",
            info="One line of context (topic, names, tone) for better translations.",
            max_length=500,
        )
        form["glossary"] = gr.Textbox(
            value="",
            lines=3,
            label="Glossary",
            placeholder="kettle = Wasserkocher\nSubtide = Subtide",
            info="One 'term = translation' per line; translations keep these.",
        )
    with gr.Accordion("Style", open=False):
        form["max_chars"] = gr.Slider(20, 80, value=42, step=1, label="Characters per line")
        form["max_lines"] = gr.Slider(1, 3, value=2, step=1, label="Lines per subtitle")
        form["dual"] = gr.Checkbox(
            label="Dual-language downloads", info="Also export original and translation together."
        )
    form["speaker_labels"] = labels  # the run handler's last parameter
    return form, names


def _whisper_model(defaults: UiDefaults) -> gr.Dropdown:
    """Any model or folder on this machine; on a server, only the models it offers (Gradio
    refuses any other value a client sends)."""
    any_model = defaults.whisper_models is None
    info = "Default: WHISPER_MODEL of the machine that runs the job. "
    if any_model:
        info += "bundled runs offline; bigger models are more accurate, slower, and download "
        info += "on first use. A model folder works too."
    else:
        info += "Bigger models are more accurate and slower."
    return gr.Dropdown(
        model_choices(defaults.whisper_model, defaults.whisper_models),
        value=DEFAULT_MODEL,
        allow_custom_value=any_model,
        label="Whisper model",
        info=info,
    )


@dataclass
class _BackendSection:
    inputs: dict[str, gr.components.Component]
    check: gr.Button | None = None
    report: gr.HTML | None = None


def _backend(remote: Remote | None) -> _BackendSection:
    """Where jobs run: this machine, or a remote backend (URL and key kept in the browser)."""
    if remote is None:
        # Served to others (a pod): jobs run here only, and the page offers no choice.
        inputs = {
            "backend_mode": gr.State(LOCAL),
            "backend_url": gr.State(""),
            "backend_key": gr.State(""),
        }
        return _BackendSection(inputs)
    mode = REMOTE if remote.default_url else LOCAL
    with gr.Accordion("Backend", open=mode == REMOTE):
        inputs: dict[str, gr.components.Component] = {}
        inputs["backend_mode"] = gr.Radio(
            list(BACKEND_MODES),
            value=mode,
            label="Run on",
            info="A remote GPU: a RunPod serverless endpoint or pod, or a Subtide server.",
            elem_id="backend-mode",
        )
        inputs["backend_url"] = gr.Textbox(
            value=remote.default_url or "",
            label="Backend URL",
            placeholder="https://api.runpod.ai/v2/ENDPOINT_ID or https://POD-5001.proxy.runpod.net",
            visible=mode == REMOTE,
            elem_id="backend-url",
        )
        inputs["backend_key"] = gr.Textbox(
            value="",
            type="password",
            label="Backend key",
            info="Your RunPod API key (rpa_…), or the server's SUBTIDE_AUTH_TOKEN. "
            "Kept in this browser only.",
            visible=mode == REMOTE,
            elem_id="backend-key",
        )
        check = gr.Button("Check backend", size="sm", elem_id="check-backend")
        report = gr.HTML(elem_id="backend-report")
    remote_only = [inputs["backend_url"], inputs["backend_key"]]
    inputs["backend_mode"].change(
        lambda chosen: [gr.update(visible=chosen == REMOTE)] * len(remote_only),
        inputs=inputs["backend_mode"],
        outputs=remote_only,
        show_progress="hidden",
        queue=False,
        api_visibility="private",
    )
    return _BackendSection(inputs, check, report)


def _remember(blocks: gr.Blocks, boxes: list[gr.components.Component], storage_key: str) -> None:
    """The values of `boxes` live in the browser's local storage; the server never sends them
    back. Both directions run as browser-only events (no Python function), so a key leaves the
    browser only inside a job.

    The stored set is put back once, when the page opens; after that, `change` only echoes the
    page's own saves and the boxes are the truth. Only a save (a user's edit) writes the store;
    a restore writes boxes, and only those whose stored value differs, and none when nothing is
    stored: Gradio keeps a write to a box it has not mounted yet (in a closed accordion, or
    hidden until a choice shows it) and replays it just after the box mounts, so writing back
    what the boxes held at page load erased what was entered as a box appeared, and leaving
    the box then saved the cut value."""
    stored = gr.BrowserState(None, storage_key=storage_key, secret=_KEY_SECRET)
    # Per page (a reload starts afresh): whether the boxes already hold the stored set, or a
    # newer one the user saved.
    restored = f"(window.subtideRestored ??= {{}})[{json.dumps(storage_key)}]"
    # Wrapped in an object: BrowserState skips writing a falsy value, so cleared boxes would
    # otherwise leave the old values behind. Saved once per edit: on leaving a text box, on
    # picking a choice.
    save = f"(...values) => {{ {restored} = true; return {{values}}; }}"
    for box in boxes:
        event = box.input if isinstance(box, gr.Radio) else box.blur
        event(None, inputs=boxes, outputs=stored, js=save)
    # The stored set is read on mount, which fires `change`; page load may run before that
    # (then it sees nothing) or after (then `change` may have been missed), so both try.
    # Returning undefined for a box leaves it alone; nothing stored leaves them all alone.
    restore = f"""(stored, ...current) => {{
        const values = stored?.values;
        if ({restored} || !Array.isArray(values) || values.length !== current.length) return;
        {restored} = true;
        return values.map((value, i) => (value === current[i] ? undefined : value));
    }}"""
    gr.on([stored.change, blocks.load], None, inputs=[stored, *boxes], outputs=boxes, js=restore)
