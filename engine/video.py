"""The video with its subtitles: as tracks a player switches on and off (soft), or drawn into
the picture (burned). ffmpeg does the work; the subtitles are rendered by engine.formats, as
the subtitle files are, so what a track shows is what the files hold.

Soft: the picture and sound are copied as they are (seconds, whatever the length), one track per
language, tagged with its ISO 639-2 code and its own name, the spoken language's the default.
Burned: the ASS rendered by libass (speaker colours, dual layout), H.264 + AAC in MP4.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from engine.ffmpeg import has_filters, input_args, run_with_progress
from engine.files import atomic_path
from engine.formats import render
from engine.languages import iso639_2, language_name, native_name, same_language
from engine.media import last_complaint, named, probe_video
from engine.protocol import Cue, Style, SubtideError, VideoKind, VideoOptions

Container = Literal["mkv", "mp4"]
Progress = Callable[[float], None]
StopCheck = Callable[[], bool]

_DEFAULT_STYLE = Style()
_DEFAULT_OPTIONS = VideoOptions()
# A fast preset: burning should take about the video's length on a laptop, not several times it;
# CRF 20 keeps text edges clean.
_X264 = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p"]
_AAC = ["-c:a", "aac", "-b:a", "160k"]
_MUXER = {"mkv": "matroska", "mp4": "mp4"}
# Matroska keeps ASS as it is (styles, colours); MP4 players read only mov_text, from SRT.
_SUBTITLE_CODEC = {"mkv": ("ass", "ass"), "mp4": ("srt", "mov_text")}
_SOFT_HINT = "Choose MKV for the soft-subtitled video: it takes any codec."


@dataclass(frozen=True)
class SubtitleTrack:
    """One subtitle track of a soft-subtitled video: its file's text, in `fmt`."""

    text: str
    fmt: Literal["ass", "srt"]
    language: str  # ISO 639-2, as containers tag tracks
    title: str
    default: bool = False


def video_filename(stem: str, kind: VideoKind, container: Container = "mkv") -> str:
    """`talk.subtitled.mkv` (soft) or `talk.burned.mp4`."""
    return f"{stem}.subtitled.{container}" if kind == "video_soft" else f"{stem}.burned.mp4"


def make_video(
    kind: VideoKind,
    video: Path,
    out: Path,
    cues: Sequence[Cue],
    *,
    language: str,
    target_langs: Sequence[str] = (),
    style: Style = _DEFAULT_STYLE,
    options: VideoOptions = _DEFAULT_OPTIONS,
    title: str | None = None,
    on_progress: Progress | None = None,
    should_stop: StopCheck | None = None,
) -> Path:
    """Writes `out`: `video` with `cues` as soft tracks (the spoken `language`, each of
    `target_langs`, and each pair when `style.dual`) or burned in (`options.burn_lang`).
    What the CLI, the server and the app call; the steps are public for other uses."""
    if not cues:
        raise SubtideError("bad_input", "There are no subtitles to put into the video.")
    if kind == "video_burn":
        require_libass()
        burn_lang = options.burn_lang or next(iter(target_langs), None)
        _check_burn_lang(burn_lang, language, target_langs)
        ass = burn_subtitles(cues, language=language, burn_lang=burn_lang, style=style, title=title)
        return burn(
            video,
            ass,
            out,
            max_height=options.max_height,
            on_progress=on_progress,
            should_stop=should_stop,
        )
    tracks = soft_tracks(
        cues,
        language=language,
        target_langs=target_langs,
        style=style,
        container=options.container,
        title=title,
    )
    return mux_soft(
        video, tracks, out, options.container, on_progress=on_progress, should_stop=should_stop
    )


def soft_tracks(
    cues: Sequence[Cue],
    *,
    language: str,
    target_langs: Sequence[str] = (),
    style: Style = _DEFAULT_STYLE,
    container: Container = "mkv",
    title: str | None = None,
) -> list[SubtitleTrack]:
    """The tracks of a soft-subtitled video, as the subtitle files are: the spoken language
    (the default track), each target, then each source-and-target pair when `style.dual`."""
    fmt = _SUBTITLE_CODEC[container][0]
    targets = [lang for lang in dict.fromkeys(target_langs) if not same_language(lang, language)]

    def track(lang: str | None, dual_with: str | None, name: str, tag: str) -> SubtitleTrack:
        text = render(fmt, cues, lang=lang, dual_with=dual_with, style=style, title=title)
        original = lang is None and dual_with is None
        return SubtitleTrack(text, fmt, iso639_2(tag), name, default=original)

    # A language Subtide cannot name ("und": a subtitle file given without -l) is the original.
    spoken = native_name(language) if iso639_2(language) != "und" else "Original"
    tracks = [track(None, None, spoken, language)]
    tracks += [track(lang, None, native_name(lang), lang) for lang in targets]
    if style.dual:
        # Tagged with the translation: a viewer who picks that language gets it with the original.
        tracks += [track(None, lang, f"{spoken} + {native_name(lang)}", lang) for lang in targets]
    return tracks


def burn_subtitles(
    cues: Sequence[Cue],
    *,
    language: str,
    burn_lang: str | None = None,
    style: Style = _DEFAULT_STYLE,
    title: str | None = None,
) -> str:
    """The ASS to burn: the spoken language, or `burn_lang`'s translation (under the original
    when `style.dual`, as the dual subtitle files have it)."""
    if burn_lang is None or same_language(burn_lang, language):
        return render("ass", cues, style=style, title=title)
    if style.dual:
        return render("ass", cues, dual_with=burn_lang, style=style, title=title)
    return render("ass", cues, lang=burn_lang, style=style, title=title)


def mux_soft(
    video: Path,
    tracks: Sequence[SubtitleTrack],
    out: Path,
    container: Container = "mkv",
    *,
    on_progress: Progress | None = None,
    should_stop: StopCheck | None = None,
) -> Path:
    """Writes `out` (atomically): the picture and sound of `video`, copied, and `tracks`."""
    probed = probe_video(video)
    codec = _SUBTITLE_CODEC[container][1]
    with tempfile.TemporaryDirectory(prefix="subtide-mux-") as work:
        inputs = input_args(video)
        for number, track in enumerate(tracks):
            path = Path(work) / f"track{number}.{track.fmt}"
            path.write_text(track.text, encoding="utf-8")
            inputs += input_args(path)
        maps = ["-map", "0:V", "-map", "0:a?"]
        maps += [part for number in range(len(tracks)) for part in ("-map", f"{number + 1}:0")]
        codecs = ["-c:v", "copy", "-c:a", "copy", "-c:s", codec]
        tags = [*_track_tags(tracks, container), *_container_flags(container)]
        with atomic_path(out) as tmp:
            args = [*inputs, *maps, *codecs, *tags]
            result = run_with_progress(
                [*args, "-y", str(tmp)],
                probed.duration,
                on_progress=on_progress,
                should_stop=should_stop,
            )
            if result.returncode != 0:
                hint = _SOFT_HINT if container == "mp4" else None
                raise _failed("add the subtitle tracks to", video, result.stderr, hint)
    return out


def burn(
    video: Path,
    ass: str,
    out: Path,
    *,
    max_height: int = 1080,
    on_progress: Progress | None = None,
    should_stop: StopCheck | None = None,
) -> Path:
    """Writes `out` (atomically): `video` with the ASS subtitles `ass` drawn in, H.264 + AAC in
    MP4, scaled down (keeping its aspect, even sides) to at most `max_height` lines."""
    require_libass()
    probed = probe_video(video)
    # Scaled first, so libass draws at the output's own size: sharper text, less to draw.
    height = f"trunc(min(ih\\,{max_height})/2)*2"
    picture = f"scale=w=-2:h={height},ass=subtitles.ass"
    with tempfile.TemporaryDirectory(prefix="subtide-burn-") as work:
        # The filter reads the subtitles by a plain name from ffmpeg's working folder: a path
        # inside a filter graph would need its ':' '\\' and quotes escaped, twice over.
        (Path(work) / "subtitles.ass").write_text(ass, encoding="utf-8")
        sound = [*_AAC, "-map", "0:a:0"] if probed.has_audio else []
        args = [*input_args(video), "-map", "0:V:0", "-vf", picture, *_X264, *sound]
        with atomic_path(out) as tmp:
            result = run_with_progress(
                [*args, "-movflags", "+faststart", "-f", "mp4", "-y", str(tmp)],
                probed.duration,
                on_progress=on_progress,
                should_stop=should_stop,
                cwd=Path(work),
            )
            if result.returncode != 0:
                raise _failed("burn the subtitles into", video, result.stderr, None)
    return out


def _check_burn_lang(burn_lang: str | None, language: str, targets: Sequence[str]) -> None:
    """A language to burn that the cues have no text in would burn the original silently."""
    if burn_lang is None or same_language(burn_lang, language):
        return
    if not any(same_language(burn_lang, target) for target in targets):
        raise SubtideError(
            "bad_input",
            f"There is no {language_name(burn_lang)} text to burn into the video.",
            hint="Translate into it as well, or burn the original or a translated language.",
        )


def require_libass() -> None:
    """A clear error when this ffmpeg cannot draw subtitles (it was built without libass)."""
    if not has_filters("ass", "subtitles"):
        raise SubtideError(
            "internal",
            "This ffmpeg was built without libass (its 'ass' and 'subtitles' filters are "
            "missing), which burning subtitles into the video needs.",
            hint="Install an ffmpeg built with --enable-libass (Debian and Ubuntu's ffmpeg "
            "package is), or ask for soft subtitles instead.",
        )


def _track_tags(tracks: Sequence[SubtitleTrack], container: Container) -> list[str]:
    # MP4 keeps a track's name in its handler box, where players look for it.
    name = "handler_name" if container == "mp4" else "title"
    tags: list[str] = []
    for number, track in enumerate(tracks):
        tags += [f"-metadata:s:s:{number}", f"language={track.language}"]
        tags += [f"-metadata:s:s:{number}", f"{name}={track.title}"]
        tags += [f"-disposition:s:{number}", "default" if track.default else "0"]
    return tags


def _container_flags(container: Container) -> list[str]:
    if container == "mp4":
        # The index first, so a browser plays the file while it downloads.
        return ["-movflags", "+faststart", "-f", _MUXER[container]]
    # Subtitles are sparse: without this the muxer may hold packets back waiting for them.
    return ["-max_interleave_delta", "0", "-f", _MUXER[container]]


def _failed(action: str, video: Path, stderr: bytes, hint: str | None) -> SubtideError:
    said = last_complaint(stderr, video)
    return SubtideError("bad_input", f"Could not {action} {named(video)}: {said}", hint=hint)
