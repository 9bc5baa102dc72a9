"""`subtide`: the command line. Heavy modules load inside the commands, so --help is instant."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.protocol import Backend, Event, JobSpec, ResultEvent, Source

FORMATS = ("srt", "vtt", "ass", "txt", "json")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return args.func(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="subtide", description="Turn any video into timed, readable subtitles."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser(
        "run", help="make subtitles for video/audio files or URLs", description=_RUN_HELP
    )
    run.add_argument("sources", nargs="+", metavar="SOURCE", help="a media file or a URL")
    run.add_argument("-o", "--output", type=Path, default=Path("."), help="output folder")
    run.add_argument(
        "-f", "--format", default="srt", type=_formats, help="srt,vtt,ass,txt,json (default srt)"
    )
    run.add_argument(
        "-m",
        "--model",
        help="Whisper model: bundled, bundled:tiny.en, a size "
        "name such as small or large-v3, or a model folder (default: WHISPER_MODEL)",
    )
    run.add_argument("-l", "--lang", help="spoken language code, e.g. en (default: detect)")
    run.add_argument("--max-chars", type=int, help="characters per line (default 42)")
    run.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    run.set_defaults(func=_run)
    return parser


_RUN_HELP = """Transcribe each SOURCE and write its subtitles into the output folder, named
after the video title (or the file name). Runs offline on the bundled model by default."""


def _formats(value: str) -> list[str]:
    chosen = [f.strip().lower() for f in value.split(",") if f.strip()]
    unknown = sorted(set(chosen) - set(FORMATS))
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown format {', '.join(unknown) or repr(value)}; choose from {', '.join(FORMATS)}"
        )
    return list(dict.fromkeys(chosen))


def _run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from app.config import Settings
    from engine.pipeline import Engine
    from engine.protocol import JobSpec, Style

    try:
        settings = Settings()
    except ValidationError as exc:
        return _fail(f"bad setting: {_first_error(exc)}")
    options = settings.engine_options(serves_others=False)
    options.use_cache = not args.no_cache
    engine = Engine(options)
    style = Style(max_chars_per_line=args.max_chars) if args.max_chars else Style()
    failures = 0
    for source in args.sources:
        try:
            job = JobSpec(
                source=_source(source),
                source_lang=args.lang,
                whisper_model=args.model,
                style=style,
                formats=args.format,
            )
        except ValidationError as exc:
            failures += _fail(f"{source}: {_first_error(exc)}")
            continue
        try:
            failures += _run_one(engine, job, args.output, quiet=args.quiet)
        except KeyboardInterrupt:
            engine.cancel()
            print("subtide: cancelled", file=sys.stderr)
            return 130
    return 1 if failures else 0


def _source(text: str) -> Source:
    from engine.protocol import Source

    return Source(url=text) if "://" in text else Source(path=text)


def _run_one(engine: Backend, job: JobSpec, out_dir: Path, *, quiet: bool) -> int:
    """Runs one job to its end; returns 1 on failure, 0 on success."""
    from engine.files import write_atomic

    result = _follow(engine.run(job), job.source.label, quiet=quiet)
    if result is None:
        return 1
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for file in result.files:
            path = out_dir / file.filename
            write_atomic(path, file.content)
            print(path)
    except OSError as exc:
        return _fail(f"could not write to {out_dir}: {exc.strerror or exc}")
    return 0


def _follow(events: Iterator[Event], label: str, *, quiet: bool) -> ResultEvent | None:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=True, disable=quiet) as bar:
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


def _first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", lambda: [])()
    if not errors:
        return str(exc)
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    return f"{where}: {first.get('msg')}" if where else str(first.get("msg"))


def _fail(message: str) -> int:
    print(f"subtide: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
