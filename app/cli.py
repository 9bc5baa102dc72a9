"""`subtide`: the command line. Heavy modules load inside the commands, so --help is instant."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError

    from app.config import Settings
    from engine.protocol import Backend, Event, JobSpec, RenderedFile, ResultEvent, Source

FORMATS = ("srt", "vtt", "ass", "txt", "json")
SUBTITLE_INPUTS = (".srt", ".vtt")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        # `subtide` alone is the app, opened in the browser.
        args = parser.parse_args(["ui", "--open"])
    return args.func(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="subtide", description="Turn any video into timed, readable, translated subtitles."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    shared = [_output_options(), _translation_options()]

    run = commands.add_parser(
        "run",
        parents=shared,
        help="make subtitles for video/audio files or URLs",
        description=_RUN_HELP,
    )
    run.add_argument("sources", nargs="+", metavar="SOURCE", help="a media file or a URL")
    run.add_argument(
        "-m",
        "--model",
        help="Whisper model: bundled, bundled:tiny.en, a size name such as small or large-v3, "
        "or a model folder (default: WHISPER_MODEL)",
    )
    run.add_argument("-l", "--lang", help="spoken language code, e.g. en (default: detect)")
    run.add_argument("--max-chars", type=int, help="characters per line (default 42)")
    speakers = run.add_argument_group("speakers")
    speakers.add_argument(
        "--diarize",
        choices=("off", "auto", "pyannote", "builtin"),
        default="off",
        help="label who speaks: auto = pyannote when HF_TOKEN or a local pipeline is set, "
        "else the built-in model (default: off)",
    )
    speakers.add_argument("--speakers", type=int, help="the number of speakers, when known")
    speakers.add_argument("--min-speakers", type=int, help="at least this many speakers")
    speakers.add_argument("--max-speakers", type=int, help="at most this many speakers")
    speakers.add_argument(
        "--speaker-names",
        type=_names,
        default={},
        help="names for the labels: SPEAKER_1=Anna,SPEAKER_2=Ben",
    )
    speakers.add_argument(
        "--speaker-labels", action="store_true", help="show [SPEAKER] labels in SRT/VTT/TXT"
    )
    run.set_defaults(func=_run, translate_only=False)

    ui = commands.add_parser(
        "ui", help="start the app in the browser (the default)", description=_UI_HELP
    )
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on")
    ui.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    ui.add_argument("--share", action="store_true", help="a public gradio.live link")
    ui.add_argument("--auth", type=_credentials, help="require a login: user:password")
    ui.add_argument("--open", action="store_true", help="open the browser")
    ui.set_defaults(func=_ui)

    serve = commands.add_parser(
        "serve",
        help="the HTTP API and the app on one port (RunPod pod / load balancer)",
        description=_SERVE_HELP,
    )
    serve.add_argument("--host", default="0.0.0.0", help="address to listen on (default all)")
    serve.add_argument("--port", type=int, help="port (default: PORT, 5001)")
    serve.set_defaults(func=_serve)

    translate = commands.add_parser(
        "translate",
        parents=shared,
        help="translate existing SRT/VTT files, keeping their timing",
        description=_TRANSLATE_HELP,
    )
    translate.add_argument("sources", nargs="+", metavar="FILE", help="an .srt or .vtt file")
    translate.add_argument("-l", "--lang", help="the files' language (default: let the LLM see)")
    translate.set_defaults(
        func=_run,
        translate_only=True,
        model=None,
        max_chars=None,
        diarize="off",
        speakers=None,
        min_speakers=None,
        max_speakers=None,
        speaker_names={},
        speaker_labels=False,
    )
    return parser


def _output_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("-o", "--output", type=Path, default=Path("."), help="output folder")
    options.add_argument(
        "-f",
        "--format",
        type=_formats,
        help="srt,vtt,ass,txt,json (default: srt; for translate, the input's format)",
    )
    options.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    options.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return options


def _translation_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    group = options.add_argument_group("translation")
    group.add_argument("-t", "--to", type=_languages, default=[], help="target languages: de,ja")
    group.add_argument("--dual", action="store_true", help="also write source-over-translation")
    group.add_argument("--glossary", type=Path, help="a file of 'term = translation' lines")
    group.add_argument("--about", help="one line about the video, to guide the translation")
    group.add_argument("--llm-url", help="OpenAI-compatible base URL (default: SERVER_API_URL)")
    group.add_argument("--llm-model", help="the LLM to use (default: SERVER_MODEL)")
    group.add_argument(
        "--llm-key", help="the LLM's API key (default: SERVER_API_KEY, which keeps it out of ps)"
    )
    return options


_RUN_HELP = """Transcribe each SOURCE and write its subtitles into the output folder, named
after the video title (or the file name). Runs offline on the bundled model by default;
--to translates through any OpenAI-compatible LLM."""

_UI_HELP = """Start the Subtide app: paste a link or drop a file, watch the subtitles appear over
the video, fix a line, download SRT/VTT/ASS/TXT/JSON. Runs offline on the bundled model."""

_SERVE_HELP = """Serve the HTTP API (/api/jobs with SSE events, /ping, /health, and the earlier
Subtide routes /api/process and /api/stream) with the app at /. Settings come from the
environment: PORT, PORT_HEALTH, SUBTIDE_AUTH_TOKEN, ENGINE_CONCURRENCY, ... (see README)."""

_TRANSLATE_HELP = """Translate each subtitle FILE into the --to languages. Every cue keeps its
exact timing; the output is named FILE.LANG.srt (or .vtt) in the output folder."""


def _formats(value: str) -> list[str]:
    chosen = [f.strip().lower() for f in value.split(",") if f.strip()]
    unknown = sorted(set(chosen) - set(FORMATS))
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown format {', '.join(unknown) or repr(value)}; choose from {', '.join(FORMATS)}"
        )
    return list(dict.fromkeys(chosen))


def _languages(value: str) -> list[str]:
    chosen = [code.strip() for code in value.split(",") if code.strip()]
    if not chosen:
        raise argparse.ArgumentTypeError("name at least one language, e.g. --to de")
    return list(dict.fromkeys(chosen))


def _names(value: str) -> dict[str, str]:
    names = {}
    for pair in filter(None, (p.strip() for p in value.split(","))):
        label, sep, name = pair.partition("=")
        if not sep or not label.strip() or not name.strip():
            raise argparse.ArgumentTypeError(f"expected LABEL=Name, got {pair!r}")
        names[label.strip()] = name.strip()
    return names


def _credentials(value: str) -> tuple[str, str]:
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise argparse.ArgumentTypeError("expected user:password")
    return user, password


def _ui(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from app.config import Settings
    from engine.pipeline import Engine
    from ui.app import UiDefaults, build, launch

    try:
        settings = Settings()
    except ValidationError as exc:
        return _fail(f"bad setting: {_first_error(exc)}")
    options = settings.engine_options(serves_others=False)
    engine = Engine(options)
    defaults = UiDefaults(
        whisper_model=settings.whisper_model,
        llm_base_url=settings.server_api_url,
        llm_model=settings.server_model,
        llm_configured=bool(settings.server_api_key or settings.server_api_url),
    )
    blocks = build(
        lambda: engine,
        fetch_preview=_preview_fetcher(options.allow_private_urls),
        defaults=defaults,
    )
    launch(
        blocks,
        host=args.host,
        port=args.port,
        share=args.share,
        auth=args.auth,
        open_browser=args.open,
    )
    return 0


def _serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from app.config import Settings
    from app.server import serve

    try:
        settings = Settings()
    except ValidationError as exc:
        return _fail(f"bad setting: {_first_error(exc)}")
    serve(settings, host=args.host, port=args.port)
    return 0


def _preview_fetcher(allow_private: bool) -> Callable[[str, Path], Path | None]:
    """Downloads a small playable video of a URL source, for the app's preview."""

    def fetch(url: str, folder: Path) -> Path | None:
        from engine import media
        from engine.protocol import SubtideError

        try:
            found = media.download(
                url, folder, allow_private=allow_private, media_format=media.PREVIEW_FORMAT
            )
        except SubtideError:
            return None  # the job itself reports what is wrong with the link
        return found.path

    return fetch


def _run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from app.config import Settings
    from engine.pipeline import Engine
    from engine.protocol import SubtideError

    if args.translate_only and not args.to:
        return _fail("translate needs --to, e.g. --to de")
    try:
        settings = Settings()
        glossary = _glossary(args.glossary)
    except ValidationError as exc:
        return _fail(f"bad setting: {_first_error(exc)}")
    except SubtideError as exc:
        return _fail(exc.message)
    options = settings.engine_options(serves_others=False)
    options.use_cache = not args.no_cache
    engine = Engine(options)
    failures = 0
    for source in args.sources:
        try:
            job = _job(args, source, glossary, settings)
        except ValidationError as exc:
            failures += _fail(f"{source}: {_first_error(exc)}")
            continue
        except SubtideError as exc:
            failures += _fail(f"{source}: {exc.message}")
            continue
        try:
            failures += _run_one(engine, job, args, source_files=not args.translate_only)
        except KeyboardInterrupt:
            engine.cancel()
            print("subtide: cancelled", file=sys.stderr)
            return 130
    return 1 if failures else 0


def _job(args: argparse.Namespace, source: str, glossary: dict, settings: Settings) -> JobSpec:
    from engine.protocol import JobSpec, Style, SubtideError, TranslationConfig

    if args.translate_only and Path(source).suffix.lower() not in SUBTITLE_INPUTS:
        raise SubtideError("bad_input", "translate takes .srt or .vtt files")
    style = Style(dual=args.dual, speaker_labels=args.speaker_labels)
    if args.max_chars:
        style = style.model_copy(update={"max_chars_per_line": args.max_chars})
    llm = None
    if args.llm_url or args.llm_model or args.llm_key:
        llm = TranslationConfig(base_url=args.llm_url, model=args.llm_model, api_key=args.llm_key)
    formats = args.format or ([Path(source).suffix[1:].lower()] if args.translate_only else ["srt"])
    return JobSpec(
        source=_source(source),
        source_lang=args.lang,
        target_langs=args.to,
        whisper_model=args.model,
        translation=llm,
        glossary=glossary,
        description=args.about,
        diarize=args.diarize,
        num_speakers=args.speakers,
        min_speakers=args.min_speakers,
        max_speakers=args.max_speakers,
        speaker_names=args.speaker_names,
        style=style,
        formats=formats,
    )


def _glossary(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    from engine.translate import load_glossary

    return load_glossary(path)


def _source(text: str) -> Source:
    from engine.protocol import Source

    return Source(url=text) if "://" in text else Source(path=text)


def _run_one(engine: Backend, job: JobSpec, args: argparse.Namespace, *, source_files: bool) -> int:
    """Runs one job to its end and writes its files; returns 1 on failure, 0 on success."""
    from engine.files import write_atomic

    result = _follow(engine.run(job), job.source.label, quiet=args.quiet)
    if result is None:
        return 1
    # `translate` writes only the new languages: the input file is the source-language one.
    rendered = result.files or _render(job, result)
    files = [f for f in rendered if source_files or f.lang != result.language]
    try:
        args.output.mkdir(parents=True, exist_ok=True)
        for file in files:
            path = args.output / file.filename
            write_atomic(path, file.content)
            print(path)
    except OSError as exc:
        return _fail(f"could not write to {args.output}: {exc.strerror or exc}")
    return 0


def _render(job: JobSpec, result: ResultEvent) -> list[RenderedFile]:
    """The files of a result that came without them (a serverless run of a long file comes
    back in parts that render nothing), from its cues, as the engine would have."""
    from engine.formats import render_files, safe_stem
    from engine.translate import same_language

    stem = result.title or (Path(job.source.path).stem if job.source.path else "subtitles")
    targets = [t for t in job.target_langs if not same_language(t, result.language)]
    return render_files(
        result.cues,
        job.formats,
        stem=safe_stem(stem),
        language=result.language,
        target_langs=list(dict.fromkeys(targets)),
        style=job.style,
        title=result.title,
        duration=result.duration,
    )


def _follow(events: Iterator[Event], label: str, *, quiet: bool) -> ResultEvent | None:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(),
    )
    # Progress goes to stderr, and only to a terminal: stdout lists the files written, for
    # scripts to read.
    console = Console(stderr=True)
    shown = not quiet and console.is_terminal
    with Progress(*columns, transient=True, disable=not shown, console=console) as bar:
        task = bar.add_task(label, total=100)
        for event in events:
            if event.type == "progress":
                text = f"{label}: {event.message or event.stage}"
                bar.update(task, completed=event.percent, description=text[:70])
            elif event.type == "result":
                return event
            elif event.type == "error":
                bar.stop()
                hint = f" ({event.hint})" if event.hint else ""
                _fail(f"{label}: {event.message}{hint}")
                return None
    _fail(f"{label}: the job ended without a result")
    return None


def _first_error(exc: ValidationError) -> str:
    from engine.protocol import validation_problems

    return validation_problems(exc)[0]


def _fail(message: str) -> int:
    print(f"subtide: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
