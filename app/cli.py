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
    from engine.protocol import (
        Backend,
        Event,
        JobSpec,
        RenderedFile,
        ResultEvent,
        Source,
        SubtideError,
    )

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
    captions = run.add_argument_group("captions a video already has")
    captions.add_argument(
        "--force-asr",
        action="store_true",
        help="transcribe even when the video carries captions (by default captions made by "
        "people are used: seconds instead of minutes)",
    )
    captions.add_argument(
        "--recue",
        action="store_true",
        help="re-cut the video's captions with the readability rules (default: keep their timing)",
    )
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
    remote = run.add_argument_group("remote backend (a GPU elsewhere)")
    remote.add_argument(
        "--backend",
        metavar="URL",
        help="run on a RunPod serverless endpoint (https://api.runpod.ai/v2/ID), a pod "
        "(https://POD-5001.proxy.runpod.net) or a Subtide server (default: SUBTIDE_BACKEND)",
    )
    remote.add_argument(
        "--key",
        help="the backend's key: a RunPod API key or the server's SUBTIDE_AUTH_TOKEN "
        "(default: SUBTIDE_BACKEND_KEY, which keeps it out of ps)",
    )
    remote.add_argument(
        "-j",
        "--jobs",
        type=int,
        default=4,
        help="sources run at once on a remote backend (default 4); locally one at a time",
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
        backend=None,
        key=None,
        jobs=1,
        force_asr=False,
        recue=False,
        model=None,
        max_chars=None,
        diarize="off",
        speakers=None,
        min_speakers=None,
        max_speakers=None,
        speaker_names={},
        speaker_labels=False,
    )
    check = commands.add_parser(
        "check",
        help="say what a backend URL is and whether it answers",
        description="Detect the kind of backend at URL (RunPod serverless, load balancer, pod, "
        "or a Subtide server), then ask it for its health, GPU and model.",
    )
    check.add_argument("url", nargs="?", metavar="URL", help="default: SUBTIDE_BACKEND")
    check.add_argument("--key", help="the backend's key (default: SUBTIDE_BACKEND_KEY)")
    check.set_defaults(func=_check)
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

    import cloud
    from app.config import Settings
    from engine.pipeline import Engine
    from ui.app import UiDefaults, build, launch
    from ui.remote import Remote

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
    remote = Remote(
        cloud.connect,
        cloud.check,
        default_url=settings.subtide_backend,
        default_key=settings.subtide_backend_key,
    )
    blocks = build(
        lambda: engine,
        fetch_preview=_preview_fetcher(options.allow_private_urls),
        defaults=defaults,
        remote=remote,
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
    from engine.protocol import SubtideError

    if args.translate_only and not args.to:
        return _fail("translate needs --to, e.g. --to de")
    try:
        settings = Settings()
        glossary = _glossary(args.glossary)
        factory, parallel = _backend_factory(args, settings)
    except ValidationError as exc:
        return _fail(f"bad setting: {_first_error(exc)}")
    except SubtideError as exc:
        return _fail(_said(exc))
    jobs, failures = [], 0
    for given in args.sources:
        for source in _expand(given, args, settings):
            try:
                jobs.append(_job(args, source, glossary, settings))
            except ValidationError as exc:
                failures += _fail(f"{source}: {_first_error(exc)}")
            except SubtideError as exc:
                failures += _fail(f"{source}: {exc.message}")
    try:
        failures += _run_all(jobs, factory, parallel, args)
    except KeyboardInterrupt:
        print("subtide: cancelled", file=sys.stderr)
        return 130
    return 1 if failures else 0


def _backend_factory(
    args: argparse.Namespace, settings: Settings
) -> tuple[Callable[[], Backend], int]:
    """Makes the Backend for each job, and says how many jobs may run at once on it."""
    url = args.backend or settings.subtide_backend
    if url:
        import cloud

        key = args.key or settings.subtide_backend_key
        cloud.detect(url)  # a bad URL fails here, once, with its advice
        # A client per job: each follows and cancels its own remote job.
        return (lambda: cloud.connect(url, key)), max(1, args.jobs)
    from engine.pipeline import Engine

    options = settings.engine_options(serves_others=False)
    options.use_cache = not args.no_cache
    engine = Engine(options)
    # One model on this machine: jobs take turns.
    return (lambda: engine), 1


def _expand(source: str, args: argparse.Namespace, settings: Settings) -> list[str]:
    """The source, or the videos of a playlist link."""
    if args.translate_only or "://" not in source:
        return [source]
    from engine import media
    from engine.protocol import SubtideError

    allow_private = settings.subtide_allow_private_urls is not False
    try:
        entries = media.playlist_entries(source, allow_private=allow_private)
    except SubtideError:
        # The job fetches the link again and reports the problem in its turn.
        return [source]
    return [entry.url for entry in entries]


def _run_all(
    jobs: list[JobSpec], factory: Callable[[], Backend], parallel: int, args: argparse.Namespace
) -> int:
    """Runs the jobs, `parallel` at a time, and writes their files; returns the failures."""
    from concurrent.futures import ThreadPoolExecutor

    started: list[Backend] = []

    def one(job: JobSpec) -> int:
        backend = factory()
        started.append(backend)
        return _run_one(backend, job, args, board, source_files=not args.translate_only)

    with _Board(quiet=args.quiet) as board, ThreadPoolExecutor(parallel) as pool:
        futures = [pool.submit(one, job) for job in jobs]
        try:
            return sum(future.result() for future in futures)
        except KeyboardInterrupt:
            for future in futures:
                future.cancel()
            for backend in started:
                backend.cancel()
            raise


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
        force_asr=args.force_asr,
        recue_captions=args.recue,
    )


def _glossary(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    from engine.translate import load_glossary

    return load_glossary(path)


def _source(text: str) -> Source:
    from engine.protocol import Source

    return Source(url=text) if "://" in text else Source(path=text)


def _run_one(
    backend: Backend, job: JobSpec, args: argparse.Namespace, board: _Board, *, source_files: bool
) -> int:
    """Runs one job to its end and writes its files; returns 1 on failure, 0 on success."""
    from engine.files import write_atomic

    result = board.follow(backend.run(job), job.source.label)
    if result is None:
        return 1
    # `translate` writes only the new languages: the input file is the source-language one.
    files = [f for f in _files(job, result) if source_files or f.lang != result.language]
    try:
        args.output.mkdir(parents=True, exist_ok=True)
        for file in files:
            path = args.output / file.filename
            write_atomic(path, file.content)
            print(path, flush=True)
    except OSError as exc:
        return board.fail(f"could not write to {args.output}: {exc.strerror or exc}")
    return 0


def _files(job: JobSpec, result: ResultEvent) -> list[RenderedFile]:
    """The job's files, rendered here from the result's cues: a remote backend that ran the job
    in parts sends cues only, and every backend's files then look the same."""
    from engine.formats import file_stem, render_files
    from engine.translate import same_language

    return render_files(
        result.cues,
        job.formats,
        stem=file_stem(job.source, result.title),
        language=result.language,
        target_langs=[t for t in job.target_langs if not same_language(t, result.language)],
        style=job.style,
        title=result.title,
        duration=result.duration,
    )


class _Board:
    """One progress bar per running job, on stderr and only on a terminal: stdout lists the
    files written, for scripts to read."""

    def __init__(self, *, quiet: bool) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeRemainingColumn(),
            transient=True,
            disable=quiet or not self.console.is_terminal,
            console=self.console,
        )

    def __enter__(self) -> _Board:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def follow(self, events: Iterator[Event], label: str) -> ResultEvent | None:
        task = self.progress.add_task(label, total=100)
        try:
            for event in events:
                if event.type == "progress":
                    text = f"{label}: {event.message or event.stage}"
                    self.progress.update(task, completed=event.percent, description=text[:70])
                elif event.type == "result":
                    return event
                elif event.type == "error":
                    hint = f" ({event.hint})" if event.hint else ""
                    self.fail(f"{label}: {event.message}{hint}")
                    return None
        finally:
            self.progress.remove_task(task)
        self.fail(f"{label}: the job ended without a result")
        return None

    def fail(self, message: str) -> int:
        # Through the bar's console, so a message never tears a bar another job is drawing.
        self.console.print(f"subtide: {message}", markup=False, highlight=False, soft_wrap=True)
        return 1


def _check(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    import cloud
    from app.config import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        return _fail(f"bad setting: {_first_error(exc)}")
    url = args.url or settings.subtide_backend
    if not url:
        return _fail("name a backend URL, e.g. subtide check https://api.runpod.ai/v2/ENDPOINT_ID")
    report = cloud.check(url, args.key or settings.subtide_backend_key)
    for line in report.lines():
        print(line)
    return 0 if report.ok else 1


def _said(exc: SubtideError) -> str:
    return f"{exc.message} ({exc.hint})" if exc.hint else exc.message


def _first_error(exc: ValidationError) -> str:
    from engine.protocol import validation_problems

    return validation_problems(exc)[0]


def _fail(message: str) -> int:
    print(f"subtide: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
