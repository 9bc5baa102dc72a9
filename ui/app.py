"""The Subtide page: the form, the run with its live table, the preview, edits and downloads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr

from engine.protocol import Backend
from ui.handlers import SCREEN, Handlers, PreviewFetcher
from ui.options import (
    AUTO,
    SPEAKER_MODES,
    model_choices,
    source_choices,
    target_choices,
)
from ui.session import Workspace
from ui.status import status_html
from ui.table import STATIC_COLUMNS, column_widths, headers

# BrowserState encrypts with this before writing localStorage. The page can read it, so it
# only keeps the key from sitting there as plain text; a fixed one keeps the saved key
# readable after the app restarts (a random one per start would forget it).
_KEY_STORAGE = "subtide-llm-key"
_KEY_SECRET = "subtide-llm-key-v1"
_UPLOAD_TYPES = ["video", "audio", ".srt", ".vtt"]


class _Blocks(gr.Blocks):
    """Blocks that never keep a run history, however they are launched or mounted.

    Gradio's run history saves every input of every run (the API key too) in plain text in
    the browser, shows it again on /gradio_api/runs and offers to upload it to a Hugging Face
    bucket. `launch` and `mount_gradio_app` both set this attribute, so it ignores them."""

    @property
    def run_history(self) -> bool:
        return False

    @run_history.setter
    def run_history(self, value: bool) -> None:
        pass


@dataclass(frozen=True)
class UiDefaults:
    whisper_model: str = "bundled"
    llm_base_url: str | None = None
    llm_model: str | None = None
    # The server has its own LLM key; the key itself never reaches the page.
    llm_configured: bool = False


def build(
    backend_factory: Callable[[], Backend],
    *,
    fetch_preview: PreviewFetcher | None = None,
    defaults: UiDefaults | None = None,
) -> gr.Blocks:
    """The app, on the backend `backend_factory` gives (called once, here)."""
    defaults = defaults or UiDefaults()
    workspace = Workspace()
    handlers = Handlers(backend_factory(), fetch_preview, workspace)
    # No analytics: the app works offline and reports nothing to anyone.
    with _Blocks(title="Subtide", delete_cache=(3600, 86400), analytics_enabled=False) as blocks:
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
                form |= _options(defaults)
            with gr.Column(scale=2, min_width=420):
                video = gr.Video(
                    label="Preview", interactive=False, visible=False, height=360, elem_id="preview"
                )
                audio = gr.Audio(label="Audio", interactive=False, visible=False, elem_id="audio")
                view = gr.Radio(label="Subtitles in the preview", visible=False, elem_id="view")
                timeline = gr.HTML(visible=False, elem_id="timeline")
                table = gr.Dataframe(
                    value={"headers": headers(()), "data": []},
                    type="array",
                    interactive=False,
                    static_columns=STATIC_COLUMNS,
                    column_widths=column_widths(()),
                    wrap=True,
                    max_height=520,
                    label="Subtitles (double-click a text cell to edit; times are fixed)",
                    elem_id="cues",
                )
                downloads = gr.File(
                    label="Downloads", file_count="multiple", interactive=False, elem_id="downloads"
                )
        session = gr.State(None, delete_callback=Workspace.discard)
        parts = {
            "progress": progress,
            "error": error,
            "table": table,
            "video": video,
            "audio": audio,
            "view": view,
            "timeline": timeline,
            "downloads": downloads,
            "session": session,
        }
        job = gr.on(
            [run.click, form["url"].submit],
            handlers.run,
            inputs=[*form.values(), session],
            outputs=[parts[name] for name in SCREEN],
            api_name="run",
            # One backend: jobs take turns, and Cancel knows whose job is running.
            concurrency_limit=1,
            show_progress="hidden",
        )
        cancel.click(
            handlers.cancel, outputs=progress, cancels=[job], api_name="cancel_job", queue=False
        )
        table.input(
            handlers.edit,
            inputs=[table, view, session],
            outputs=[video, downloads, session],
            api_name="edit",
            show_progress="hidden",
        )
        view.input(
            handlers.switch_view, inputs=[view, session], outputs=video, show_progress="hidden"
        )
        _remember_key(form["llm_key"])
    return blocks


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
    return form


def _options(defaults: UiDefaults) -> dict[str, gr.components.Component]:
    """The advanced options, folded away: the run handler's remaining parameters, in order."""
    form: dict[str, gr.components.Component] = {}
    with gr.Accordion("Transcription", open=False):
        form["source_lang"] = gr.Dropdown(
            source_choices(),
            value=AUTO,
            label="Spoken language",
            info="Auto-detect suits most videos; set it for short or mixed-language clips.",
        )
        form["whisper_model"] = gr.Dropdown(
            model_choices(defaults.whisper_model),
            value=defaults.whisper_model,
            allow_custom_value=True,
            label="Whisper model",
            info="bundled runs offline; bigger models are more accurate, slower, and download "
            "on first use. A model folder works too.",
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
    with gr.Accordion("Translation provider", open=False):
        form["llm_url"] = gr.Textbox(
            value=defaults.llm_base_url or "",
            label="API base URL",
            placeholder="the server's LLM"
            if defaults.llm_configured
            else "https://api.openai.com/v1",
            info="Any OpenAI-compatible API: OpenAI, Ollama, LM Studio, vLLM…",
        )
        form["llm_model"] = gr.Textbox(
            value=defaults.llm_model or "", label="Model", placeholder="e.g. gpt-4o-mini"
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
        form["speaker_labels"] = gr.Checkbox(
            label="Speaker labels", info="Prefix subtitles with [SPEAKER] when speakers are on."
        )
    return form


def _remember_key(key_box: gr.Textbox) -> None:
    """The API key lives in the browser's local storage; the server never sends it back.

    Both directions run as browser-only events (no Python function), so the key leaves the
    browser only inside a job."""
    stored = gr.BrowserState(None, storage_key=_KEY_STORAGE, secret=_KEY_SECRET)
    # Wrapped in an object: BrowserState skips writing a falsy value, so a cleared box would
    # otherwise leave the old key behind. Saved on leaving the box, once per edit.
    key_box.blur(None, inputs=key_box, outputs=stored, js="(key) => ({key})")
    # Not on page load: the stored value may not be read back yet then. It is read on mount,
    # which fires this change.
    stored.change(None, inputs=stored, outputs=key_box, js="(stored) => stored?.key ?? ''")
