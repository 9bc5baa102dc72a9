"""`subtide`: the command line. Heavy modules load inside the commands, so --help is instant."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from app.cli_inputs import UsageError, dash_name_hint, said
from app.cli_video import add_options as add_video_options

if TYPE_CHECKING:
    from pydantic import ValidationError

    from app.cli_jobs import Board
    from app.cli_output import Outputs
    from app.config import Settings
    from cloud.detect import Target
    from engine.protocol import Backend, JobSpec, RenderedFile, ResultEvent, Source

FORMATS = ("srt", "vtt", "ass", "txt", "json")
# How long a page may stay silent while its list of videos is read (yt-dlp's socket timeout).
PAGE_TIMEOUT_S = 30.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    given = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser.parse_args(given)
    except SystemExit as exc:
        if exc.code == 2 and (hint := dash_name_hint(given)):
            print(f"subtide: {hint}", file=sys.stderr)
        raise
    if args.command is None:
        # `subtide` alone is the app, opened in the browser.
        args = parser.parse_args(["ui", "--open"])
    return args.func(args)


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as one line, not a usage dump: `subtide: run: argument
    --max-chars: invalid int value: 'abc' (see subtide run --help)`, exit status 2. Subcommand
    parsers are of this class too (add_subparsers makes them of the parent's class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands: dict[str, argparse.ArgumentParser] = {}

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            # argparse reports a subcommand's unknown options from the top parser: say them
            # against the subcommand they were given to, whose --help lists the right ones.
            owner = self.commands.get(getattr(parsed, "command", None) or "", self)
            owner.error(f"unrecognized arguments: {' '.join(extra)}")
        return parsed

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("subtide").strip()
        where = f"{command}: " if command else ""
        self.exit(2, f"subtide: {where}{message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
    run.add_argument("--max-chars", type=int, help="characters per line, 10-200 (default 42)")
    run.add_argument("--force", action="store_true", help=_FORCE_HELP)
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
        type=_positive,
        default=4,
        help="sources run at once on a remote backend (default 4); locally one at a time",
    )
    add_video_options(run)
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
    translate.add_argument("--force", action="store_true", help=_FORCE_HELP)
    add_video_options(translate)
    translate.add_argument(
        "--with-video",
        type=Path,
        metavar="VIDEO",
        help="the video of the subtitle FILE, for --video",
    )
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
    parser.commands = dict(commands.choices)
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
    options.add_argument(
        "-v", "--verbose", action="store_true", help="say where and how Whisper runs"
    )
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


_FORCE_HELP = (
    "translate a subtitle file even when some of its cues can't be read (they are left out, "
    "and a line says which); by default such a file is refused"
)

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


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


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
    """`run` and `translate`. Exit status: 0 done, 1 a source failed, 2 a wrong option or
    setting (found before any work), 3 written but translations missing, 130 Ctrl-C,
    143 SIGTERM."""
    from app.cli_jobs import Board, interrupts, private_tempdir

    try:
        with interrupts(), Board(quiet=args.quiet) as board, private_tempdir():
            return _run_sources(args, board)
    except UsageError as exc:
        print(f"subtide: {said(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM as cli_jobs.Interrupted
        code = getattr(exc, "code", 130)
        print(f"subtide: cancelled{' (SIGTERM)' if code == 143 else ''}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        # The temporary folders are gone already. A worker still blocked in a socket read, or
        # a translation pool's thread, would hold a normal exit (which joins such threads) for
        # their whole timeout: end the process now.
        os._exit(code)


def _run_sources(args: argparse.Namespace, board: Board) -> int:
    from pydantic import ValidationError

    from app.cli_inputs import (
        backend_target,
        check_languages,
        check_llm_url,
        check_model,
        check_output_folder,
        job_options,
        load_glossary,
        source_of,
    )
    from app.cli_jobs import INCOMPLETE, run_jobs
    from app.cli_output import Outputs
    from app.cli_video import VideoFetches, video_options, write_video
    from app.config import Settings
    from engine import outcome
    from engine.protocol import SubtideError

    # Everything the user can get wrong in the command line, before any work.
    if args.translate_only and not args.to:
        raise UsageError("translate needs --to, e.g. --to de")
    try:
        settings = Settings()
    except ValidationError as exc:
        raise UsageError(f"bad setting: {_first_error(exc)}") from None
    check_languages(args)
    check_llm_url(args.llm_url)
    check_output_folder(args.output)
    video = video_options(args)
    options = job_options(args, load_glossary(args.glossary))
    backend_url = args.backend or settings.subtide_backend
    target = None
    if backend_url:
        target = backend_target(backend_url, "--backend" if args.backend else "SUBTIDE_BACKEND")
    else:
        # A remote backend has models and folders of its own: only it can judge them.
        check_model(args.model)

    # Each source on its own: one that can never work fails alone, before any of them runs.
    failures, sources = 0, []
    for given in args.sources:
        try:
            sources.append(source_of(given, translate_only=args.translate_only))
        except SubtideError as exc:
            failures += board.fail(f"{given}: {said(exc)}")
    if not sources:
        return 1
    try:
        factory, parallel = _backend_factory(args, settings, target, board)
    except SubtideError as exc:
        return board.fail(said(exc))
    fetches = None
    if video is not None and not args.translate_only:
        fetches = VideoFetches(
            allow_private=settings.subtide_allow_private_urls is not False,
            max_height=video.max_height,
        )
        factory = fetches.wrapping(factory)
    jobs = []
    for source in sources:
        try:
            expanded = _expand(source, settings, board, remote=target is not None)
        except SubtideError as exc:
            failures += board.fail(f"{source.label}: {said(exc)}")
            continue
        for each in expanded:
            jobs.append(_job(args, each, options))
    outputs = Outputs(args.output, args.sources, board.say)

    def source_video(job: JobSpec) -> Path:
        if args.translate_only:
            return args.with_video
        return Path(job.source.path) if job.source.path else fetches.video_of(job)

    def finish(job: JobSpec, result: ResultEvent) -> int:
        status = _write(job, result, args, outputs, board)
        if video is None or status == 1:
            return status
        targets = outcome.file_targets(job.target_langs, result)
        made = write_video(job, result, args, video, source_video, targets, outputs, board)
        return made or status

    statuses = run_jobs(jobs, factory, parallel, board, finish)
    if failures or 1 in statuses:
        return 1
    return INCOMPLETE if INCOMPLETE in statuses else 0


def _backend_factory(
    args: argparse.Namespace, settings: Settings, target: Target | None, board: Board
) -> tuple[Callable[[], Backend], int]:
    """Makes the Backend for each job, and says how many jobs may run at once on it. A remote
    backend must answer first: nothing is sent to one that is not there."""
    if target is not None:
        import cloud
        from app.cli_jobs import said_if_slow

        key = args.key or settings.subtide_backend_key
        waiting = (
            f"waiting for the {target.kind.label} at {target.url} "
            f"(giving up after {cloud.REACH_TIMEOUT_S:g} s)"
        )
        with said_if_slow(board.say, waiting):
            cloud.reach(target, key)
        # A client per job: each follows and cancels its own remote job.
        return (lambda: cloud.connect(target.url, key)), args.jobs
    from engine.pipeline import Engine

    options = settings.engine_options(serves_others=False)
    options.use_cache = not args.no_cache
    engine = Engine(options)
    if args.verbose:
        board.say(f"Whisper: {engine.health().device}")
    # One model on this machine: jobs take turns.
    return (lambda: engine), 1


def _expand(source: Source, settings: Settings, board: Board, *, remote: bool) -> list[Source]:
    """The source, or the videos of a playlist link."""
    if not source.url:
        return [source]
    from app.cli_jobs import said_if_slow
    from engine import media
    from engine.protocol import Source, SubtideError

    allow_private = settings.subtide_allow_private_urls is not False
    waiting = (
        f"{source.url}: waiting for {media.host_label(source.url)} "
        f"(giving up after {PAGE_TIMEOUT_S:g} s without an answer)"
    )
    try:
        with said_if_slow(board.say, waiting):
            entries = media.playlist_entries(
                source.url, allow_private=allow_private, socket_timeout=PAGE_TIMEOUT_S
            )
    except SubtideError:
        if remote:
            # The backend fetches the link from its own network, which may reach what this
            # machine can't; it reports the problem in its turn.
            return [source]
        # Here the job would fetch the same link again: one wait on a dead host is enough.
        raise
    return [Source(url=entry.url) for entry in entries]


def _job(args: argparse.Namespace, source: Source, options: dict[str, Any]) -> JobSpec:
    """The job for one source; `options` are cli_inputs.job_options, checked already."""
    from engine.protocol import JobSpec

    suffix = Path(source.path or "").suffix[1:].lower()
    formats = args.format or ([suffix] if args.translate_only else ["srt"])
    return JobSpec(source=source, formats=formats, **options)


def _write(
    job: JobSpec, result: ResultEvent, args: argparse.Namespace, outputs: Outputs, board: Board
) -> int:
    """Writes a finished job's files, lists them on stdout and says what translations are
    missing; returns the job's exit status."""
    from app.cli_jobs import INCOMPLETE
    from engine.formats import file_stem

    stem = file_stem(job.source, result.title)
    # `translate` writes only the new languages: the input file is the source-language one.
    files = [
        f for f in _files(job, result, stem) if not args.translate_only or f.lang != result.language
    ]
    try:
        paths = outputs.write(job.source.label, stem, files)
    except OSError as exc:
        return board.fail(f"could not write to {args.output}: {exc.strerror or exc}")
    for path in paths:
        print(path, flush=True)
    if not _say_missing(job, result, paths, board):
        return 0
    # Nothing written at all (`translate` into languages that all failed) is a failed source.
    return INCOMPLETE if paths else 1


def _say_missing(job: JobSpec, result: ResultEvent, paths: list[Path], board: Board) -> bool:
    """One line per target with lines kept in the source language: how many, why, and where
    they are listed. Returns whether there was any."""
    from engine import outcome

    missing = outcome.incomplete(result.targets)
    listed = next((path for path in paths if path.suffix == ".json"), None)
    for lang, report in missing.items():
        if report.failed:
            message, hint = outcome.failure_message(lang, report)
            board.say(f"{job.source.label}: {message} ({hint})")
            continue
        where = f"listed in {listed}" if listed else "add -f json to list them"
        kept = outcome.kept_message(lang, report, result.language)
        board.say(f"{job.source.label}: {kept}, {where} ({outcome.why(report)})")
    return bool(missing)


def _files(job: JobSpec, result: ResultEvent, stem: str) -> list[RenderedFile]:
    """The job's files, rendered here from the result's cues: a remote backend that ran the job
    in parts sends cues only, and every backend's files then look the same."""
    from engine import outcome
    from engine.formats import render_files

    return render_files(
        result.cues,
        job.subtitle_formats,
        stem=stem,
        language=result.language,
        target_langs=outcome.file_targets(job.target_langs, result),
        style=job.style,
        title=result.title,
        duration=result.duration,
        source=result.source,
    )


def _check(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    import cloud
    from app.cli_jobs import said_if_slow
    from app.config import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        return _fail(f"bad setting: {_first_error(exc)}")
    url = args.url or settings.subtide_backend
    if not url:
        return _fail("name a backend URL, e.g. subtide check https://api.runpod.ai/v2/ENDPOINT_ID")
    waiting = f"waiting for {url} (giving up after {cloud.REACH_TIMEOUT_S:g} s)"
    with said_if_slow(lambda line: print(f"subtide: {line}", file=sys.stderr), waiting):
        report = cloud.check(url, args.key or settings.subtide_backend_key)
    for line in report.lines():
        print(line)
    return 0 if report.ok else 1


def _first_error(exc: ValidationError) -> str:
    from engine.protocol import validation_problems

    return validation_problems(exc)[0]


def _fail(message: str) -> int:
    print(f"subtide: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
