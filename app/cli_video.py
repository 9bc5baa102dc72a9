"""`--video soft|burn`: the command line's video outputs, made on this machine from a job's
cues (whatever backend made them) and its video: the local file, the `--with-video` file of
`translate`, or, for a link, its video fetched beside the job (the job itself fetches only the
sound, which is all it needs)."""

from __future__ import annotations

import argparse
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING

from app.cli_inputs import UsageError, said

if TYPE_CHECKING:
    from app.cli_jobs import Board
    from app.cli_output import Outputs
    from engine.protocol import Backend, Event, Health, JobSpec, ResultEvent, VideoOptions

KINDS = {"soft": "video_soft", "burn": "video_burn"}


def add_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("video out")
    group.add_argument(
        "--video",
        choices=tuple(KINDS),
        help="also write the video with its subtitles: soft = switchable tracks, copied "
        "without re-encoding (NAME.subtitled.mkv); burn = drawn into the picture "
        "(NAME.burned.mp4)",
    )
    group.add_argument(
        "--video-format",
        choices=("mkv", "mp4"),
        default="mkv",
        help="container of --video soft: mkv keeps ASS styling, mp4 has plain text (default mkv)",
    )
    group.add_argument(
        "--burn-lang",
        metavar="LANG",
        help="the language --video burn draws (default: the first --to language, else the "
        "spoken one)",
    )
    group.add_argument(
        "--max-height",
        type=int,
        default=1080,
        help="a burned or downloaded video's most lines; larger ones are scaled down (default "
        "1080)",
    )


def video_options(args: argparse.Namespace) -> VideoOptions | None:
    """The checked video options of the run, None without --video: wrong values, or an ffmpeg
    that can't burn, are refused before any work."""
    with_video = getattr(args, "with_video", None)
    if args.video is None:
        if with_video is not None:
            raise UsageError("--with-video needs --video soft or --video burn")
        return None
    from pydantic import ValidationError

    from engine.languages import check_target
    from engine.protocol import SubtideError, VideoOptions
    from engine.video import require_libass

    try:
        options = VideoOptions(
            container=args.video_format,
            burn_lang=check_target(args.burn_lang) if args.burn_lang else None,
            max_height=args.max_height,
        )
        if args.video == "burn":
            require_libass()
    except ValidationError as exc:
        problem = exc.errors()[0]
        raise UsageError(f"--{problem['loc'][0]}: {problem['msg']}".replace("_", "-")) from None
    except SubtideError as exc:
        raise UsageError(exc.message, exc.hint) from None
    if args.translate_only:
        _check_with_video(args, with_video)
    _check_burn_lang(args, options.burn_lang)
    return options


def _check_burn_lang(args: argparse.Namespace, burn_lang: str | None) -> None:
    """A --burn-lang that is neither a --to language nor the -l one can't be burned (checked
    again once the spoken language is known)."""
    from engine.languages import same_language

    if burn_lang is None or args.lang is None:
        return
    if not any(same_language(burn_lang, lang) for lang in [args.lang, *args.to]):
        raise UsageError(
            f"--burn-lang {burn_lang}: the subtitles are in {args.lang} and {', '.join(args.to)}"
            if args.to
            else f"--burn-lang {burn_lang}: the subtitles are in {args.lang} only",
            "add it to --to, or leave --burn-lang out",
        )


def _check_with_video(args: argparse.Namespace, with_video: Path | None) -> None:
    from engine.ffmpeg import require_file
    from engine.protocol import SubtideError

    if with_video is None:
        raise UsageError("translate --video needs --with-video VIDEO, the video of the file")
    if len(args.sources) != 1:
        raise UsageError("--with-video is the video of one subtitle file: give one FILE")
    try:
        require_file(with_video, "video file")
    except SubtideError as exc:
        raise UsageError(f"--with-video: {exc.message}", exc.hint) from None


class VideoFetches:
    """The video of each link job, fetched on a thread of its own while the job runs."""

    def __init__(self, *, allow_private: bool, max_height: int) -> None:
        self._allow_private = allow_private
        self._max_height = max_height
        self._fetches: dict[int, Future[Path]] = {}
        self._lock = threading.Lock()

    def start(self, job: JobSpec) -> None:
        if not job.source.url:
            return
        future: Future[Path] = Future()
        with self._lock:
            self._fetches[id(job)] = future
        url = job.source.url

        def fetch() -> None:
            from engine import media

            try:
                # In the run's own temporary folder (cli_jobs.private_tempdir): gone at its end.
                folder = Path(tempfile.mkdtemp(prefix="subtide-video-"))
                found = media.download(
                    url,
                    folder,
                    allow_private=self._allow_private,
                    media_format=media.video_format(self._max_height),
                )
                future.set_result(found.path)
            except BaseException as exc:  # the job's `finish` says it
                future.set_exception(exc)

        # A daemon: a fetch a failed job no longer needs must not hold the run's exit.
        threading.Thread(target=fetch, name="subtide-video-fetch", daemon=True).start()

    def video_of(self, job: JobSpec) -> Path:
        """The job's video, once fetched; its failure as it was raised."""
        with self._lock:
            future = self._fetches.pop(id(job))
        return future.result()

    def wrapping(self, factory: Callable[[], Backend]) -> Callable[[], Backend]:
        """`factory`, whose backends start fetching a link job's video as the job starts."""
        return lambda: _Fetching(factory(), self)


class _Fetching:
    """A Backend that starts fetching a link job's video as the job starts."""

    def __init__(self, inner: Backend, fetches: VideoFetches) -> None:
        self._inner = inner
        self._fetches = fetches

    def run(self, job: JobSpec) -> Iterator[Event]:
        self._fetches.start(job)
        return self._inner.run(job)

    def health(self) -> Health:
        return self._inner.health()

    def cancel(self) -> None:
        self._inner.cancel()


def write_video(
    job: JobSpec,
    result: ResultEvent,
    args: argparse.Namespace,
    options: VideoOptions,
    source_video: Callable[[JobSpec], Path],
    targets: list[str],
    outputs: Outputs,
    board: Board,
) -> int:
    """Writes the job's video beside its subtitle files and lists it on stdout; returns the
    job's exit status (1 when the video could not be made)."""
    from engine.formats import file_stem
    from engine.protocol import SubtideError
    from engine.video import make_video, video_filename

    label = job.source.label
    kind = KINDS[args.video]
    stem = file_stem(job.source, result.title)
    try:
        video = source_video(job)
        path = outputs.place(label, stem, [video_filename(stem, kind, options.container)])[0]
        doing = "burning the subtitles in" if kind == "video_burn" else "adding subtitle tracks"
        with board.bar(f"{label}: {doing}") as update:
            make_video(
                kind,
                video,
                path,
                result.cues,
                language=result.language,
                target_langs=targets,
                style=job.style,
                options=options,
                title=result.title,
                on_progress=update,
            )
    except SubtideError as exc:
        return board.fail(f"{label}: {said(exc)}")
    except OSError as exc:
        return board.fail(f"could not write to {args.output}: {exc.strerror or exc}")
    outputs.record(label, [path])
    print(path, flush=True)
    return 0
