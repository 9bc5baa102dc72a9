"""Sources to local media (yt-dlp, behind an SSRF guard), and media to 16 kHz mono audio (ffmpeg).

A time range of a link is read through a relay on 127.0.0.1 (engine.relay) that fetches, through
the same guard, only the bytes ffmpeg asks for as it seeks to the range and decodes it.

Every failure a user can cause becomes a `SubtideError` whose message names the file by its base
name only and the link by its host only, so neither machine paths nor secrets in a query string
reach a client.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import http
import json
import os
import re
import socket
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

from engine.ffmpeg import require_file, run_on
from engine.files import write_atomic
from engine.protocol import SubtideError
from engine.relay import RangeRelay, RelayError, Upstream
from engine.url_guard import Resolver, UrlGuard

if TYPE_CHECKING:
    import numpy

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_WHITESPACE = str.maketrans("", "", " \t\r\n")


AUDIO_FORMAT = "bestaudio/best"
# A small video a browser plays (H.264 in MP4) for the app's preview.
PREVIEW_FORMAT = "best[height<=480][ext=mp4]/best[ext=mp4]/best"


def video_format(max_height: int) -> str:
    """yt-dlp's selector for the video a video output is made from: the best picture up to
    `max_height` merged with the best sound, MP4 and M4A first (they copy into MP4 and MKV
    alike), else one file with both, else whatever there is."""
    fit = f"[height<={max_height}]"
    return f"bv*{fit}[ext=mp4]+ba[ext=m4a]/bv*{fit}+ba/b{fit}/bv*+ba/b"


@dataclass(frozen=True)
class Probe:
    duration: float
    has_audio: bool
    has_video: bool
    # The audio stream's own duration where the file states it, else `duration`: a video's
    # picture may run on after its sound ends.
    audio_duration: float


@dataclass(frozen=True)
class VideoProbe:
    duration: float
    width: int
    height: int
    has_audio: bool


@dataclass(frozen=True)
class Download:
    path: Path
    title: str | None
    # Set when `path` holds only a time range of the link (`download_range`): the length of
    # the link's audio in seconds, as its header states (0: not stated).
    whole_s: float | None = None


# --- Downloads ---------------------------------------------------------------------------------


def extract(
    url: str,
    *,
    allow_private: bool,
    socket_timeout: float = 30,
    media_format: str = AUDIO_FORMAT,
) -> dict[str, Any]:
    """What yt-dlp knows about the single video behind `url` (title, formats, caption tracks),
    fetched through the SSRF guard; `download(..., info=)` reuses it without a second look."""
    url = url.strip()
    guard = UrlGuard(allow_private=allow_private)
    with _session(url, guard, socket_timeout=socket_timeout, media_format=media_format) as ydl:
        return _single_video(ydl.extract_info(url, download=False))


def download(
    url: str,
    dest_dir: Path,
    *,
    allow_private: bool,
    on_progress: Callable[[float], None] | None = None,
    socket_timeout: float = 30,
    media_format: str = AUDIO_FORMAT,
    info: dict[str, Any] | None = None,
    resolver: Resolver = socket.getaddrinfo,
    native_only: bool | None = None,
) -> Download:
    """Fetch the best audio (or the whole file) behind `url` into `dest_dir` with yt-dlp;
    `media_format` (a yt-dlp format selector) asks for something else, e.g. PREVIEW_FORMAT.
    `info` is what `extract` returned for the same link, so the page is not read twice.
    `resolver` answers host names for the guard (see UrlGuard). `native_only` refuses streams
    yt-dlp would hand to ffmpeg or another program that fetches outside the guard; by default
    it does so when private addresses are refused."""
    url = url.strip()
    guard = UrlGuard(allow_private=allow_private, resolver=resolver)
    options = {
        "outtmpl": {"default": str(dest_dir / "%(id).60s.%(ext)s")},
        "restrictfilenames": True,
        # Another link may have left a file or a .part under the same id: never reuse either.
        "overwrites": True,
        "continuedl": False,
        "progress_hooks": [_progress_hook(on_progress)] if on_progress else [],
    }
    session = _session(
        url,
        guard,
        socket_timeout=socket_timeout,
        media_format=media_format,
        options=options,
        dest_dir=dest_dir,
        native_only=native_only,
    )
    with session as ydl:
        dest_dir.mkdir(parents=True, exist_ok=True)  # once the link is judged
        if info is None:
            info = _single_video(ydl.extract_info(url, download=False))
        # The chosen media may live on another host than the page: judge it before fetching.
        for origin in _media_origins(info):
            guard.check_url(origin)
        info = ydl.process_ie_result(info, download=True)
    return Download(Path(info["requested_downloads"][0]["filepath"]), info.get("title"))


def download_range(
    url: str,
    dest_dir: Path,
    *,
    start: float | None,
    end: float | None,
    allow_private: bool,
    on_progress: Callable[[float], None] | None = None,
    socket_timeout: float = 30,
    info: dict[str, Any] | None = None,
    resolver: Resolver = socket.getaddrinfo,
) -> Download | None:
    """Only the time range `start`–`end` (seconds; None: from the start / to the end) of the
    audio behind `url`, as a 16 kHz mono WAV in `dest_dir`. ffmpeg seeks in the media through a
    relay (engine.relay), so about the range's own bytes are fetched, every one through the
    guard. A container with an index (MP4, WebM, ...) is entered where the range starts; one
    without (MP3) is read from its start, as only that keeps the range's times exact. None
    when the media can't be read by range: a stream in fragments (HLS, DASH), formats to
    merge, a server that ignores Range, a container ffprobe can't read from a link; the caller
    then downloads it whole. `on_progress` is called every quarter second (also when nothing
    moved): raising in it stops the read."""
    url = url.strip()
    guard = UrlGuard(allow_private=allow_private, resolver=resolver)
    host = host_label(url)
    with _session(url, guard, socket_timeout=socket_timeout, dest_dir=dest_dir) as ydl:
        info = info or _single_video(ydl.extract_info(url, download=False))
        with _relayed(ydl, info) as relay:
            probed = _probe_relayed(relay, host, on_progress) if relay else None
            if relay is None or probed is None:
                return None
            dest_dir.mkdir(parents=True, exist_ok=True)
            path = dest_dir / "range.wav"
            _decode_relayed(relay, host, path, start, end, probed, on_progress)
    return Download(path, info.get("title"), whole_s=probed.audio_duration)


def link_duration(
    url: str,
    *,
    allow_private: bool,
    info: dict[str, Any] | None = None,
    socket_timeout: float = 30,
) -> float:
    """How long the media behind `url` lasts, for links whose page does not say (a bare media
    file): ffprobe reads its header and index through the relay, not the media. 0 when that
    can't tell (see `download_range`)."""
    url = url.strip()
    guard = UrlGuard(allow_private=allow_private)
    with _session(url, guard, socket_timeout=socket_timeout) as ydl:
        info = info or _single_video(ydl.extract_info(url, download=False))
        with _relayed(ydl, info) as relay:
            probed = _probe_relayed(relay, host_label(url)) if relay else None
    return probed.duration if probed else 0.0


def fetch_bytes(
    url: str,
    *,
    allow_private: bool,
    headers: dict[str, str] | None = None,
    impersonate: bool = False,
    socket_timeout: float = 30,
    max_bytes: int = 20_000_000,
    resolver: Resolver = socket.getaddrinfo,
) -> bytes:
    """A small file (a caption track) through the same guarded yt-dlp session as the media,
    so its link and every redirect are judged like the page's. `impersonate`: the extractor
    said the site wants a browser's TLS fingerprint (YouTube's captions do); only a session
    that allows private addresses can impersonate (see engine.guarded_ytdlp)."""
    from yt_dlp.networking import Request

    url = url.strip()
    guard = UrlGuard(allow_private=allow_private, resolver=resolver)
    with _session(url, guard, socket_timeout=socket_timeout) as ydl:
        extensions = {"impersonate": _browser(ydl)} if impersonate and _browser(ydl) else {}
        with ydl.urlopen(Request(url, headers=headers or {}, extensions=extensions)) as reply:
            data = reply.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise SubtideError(
            "bad_input", f"The file at {host_label(url)} is larger than {max_bytes // 1_000_000} MB"
        )
    return data


def _browser(ydl: Any) -> Any:
    """A browser yt-dlp can impersonate here (it needs curl_cffi), or None."""
    try:
        available, _ = ydl._parse_impersonate_targets(True)
    except Exception:  # a private yt-dlp helper: if it changes, plain requests still work
        return None
    return available


@contextmanager
def _session(
    url: str,
    guard: UrlGuard,
    *,
    socket_timeout: float,
    media_format: str = AUDIO_FORMAT,
    options: dict[str, Any] | None = None,
    dest_dir: Path | None = None,
    native_only: bool | None = None,
) -> Iterator[Any]:
    """A guarded yt-dlp for one link (judged first), whose failures become our SubtideErrors."""
    import yt_dlp

    from engine.guarded_ytdlp import GuardedYoutubeDL

    guard.check_url(url)
    messages = _Messages()
    params = {**_params(messages, socket_timeout, media_format), **(options or {})}
    try:
        with GuardedYoutubeDL(params, guard, native_only=native_only) as ydl:
            yield ydl
    except yt_dlp.utils.YoutubeDLError as error:
        # The first error yt-dlp logged names the root problem; later ones are consequences.
        text = messages.errors[0] if messages.errors else str(error)
        raise _download_error(error, text, url, socket_timeout, dest_dir) from None


def _params(messages: _Messages, socket_timeout: float, media_format: str) -> dict[str, Any]:
    """The yt-dlp options every call shares: quiet, one video, no cache, bounded retries."""
    return {
        "format": media_format,
        "noplaylist": True,
        "playlist_items": "1",
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "color": "no_color",
        "logger": messages,
        "cachedir": False,
        "retries": 2,
        "fragment_retries": 2,
        "extractor_retries": 1,
        "socket_timeout": socket_timeout,
    }


class _Messages:
    """A yt-dlp logger that prints nothing and keeps errors for our own message."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def debug(self, message: str) -> None:
        pass

    def info(self, message: str) -> None:
        pass

    def warning(self, message: str) -> None:
        pass

    def error(self, message: str) -> None:
        self.errors.append(message)


def _progress_hook(on_progress: Callable[[float], None]) -> Callable[[dict[str, Any]], None]:
    def hook(status: dict[str, Any]) -> None:
        if status.get("status") == "finished":
            on_progress(1.0)
            return
        total = status.get("total_bytes") or status.get("total_bytes_estimate")
        done = status.get("downloaded_bytes")
        if status.get("status") == "downloading" and total and done is not None:
            on_progress(min(done / total, 1.0))

    return hook


def _single_video(info: dict[str, Any]) -> dict[str, Any]:
    # A playlist, or a page with several videos: only its first entry was extracted.
    while info.get("_type") == "playlist":
        entries = [entry for entry in info.get("entries") or [] if entry]
        if not entries:
            raise SubtideError(
                "source_unavailable",
                "No video was found in the playlist at this link",
                "paste the link of a single video",
            )
        info = entries[0]
    return info


def _media_origins(info: dict[str, Any]) -> set[str]:
    """scheme://host of every address the chosen formats will be fetched from."""
    urls = []
    for chosen in info.get("requested_formats") or [info]:
        urls += [
            chosen[key] for key in ("url", "manifest_url", "fragment_base_url") if chosen.get(key)
        ]
        fragments = chosen.get("fragments")
        if isinstance(fragments, list):
            urls += [fragment["url"] for fragment in fragments if fragment.get("url")]
    return {f"{parts.scheme}://{parts.netloc}" for parts in map(urlsplit, urls)}


# --- Ranges of a link, read through the relay -----------------------------------------------

# ffmpeg reads the relay over plain HTTP and nothing else (no file, no other protocol), and only
# containers that hold their media themselves: a playlist (HLS, DASH, concat) would send it on
# to addresses of its own, past the relay and the guard. Its receive buffer is bounded, so the
# relay sees when it stops reading (see engine.relay).
_RELAY_INPUT = [
    "-protocol_whitelist",
    "http,tcp",
    "-format_whitelist",
    "mov,matroska,mp3,ogg,wav,flac,aac,asf,avi,flv,mpegts,mpeg,aiff,caf,w64,ac3,eac3,amr",
    "-recv_buffer_size",
    "131072",
    "-seek2any",
    "1",
]
_RANGE_RATE = 16000  # a range is stored as 16 kHz mono WAV, what transcription reads
_TICK_S = 0.25


@contextmanager
def _relayed(ydl: Any, info: dict[str, Any]) -> Iterator[RangeRelay | None]:
    """A relay to the media yt-dlp chose in `info`, when that is one file it would fetch over
    plain HTTP(S) from a server that answers byte ranges; else None."""
    if not _one_plain_file(ydl, info):
        yield None
        return
    # As yt-dlp's HTTP downloader: the chunk size a site asks for, as it slows long requests.
    chunk = (info.get("downloader_options") or {}).get("http_chunk_size") or 0
    relay = RangeRelay(_range_opener(ydl, info), max_chunk=chunk, suffix=info.get("ext") or "")
    with relay:
        yield relay if relay.seekable() else None


def _one_plain_file(ydl: Any, info: dict[str, Any]) -> bool:
    """Whether yt-dlp would fetch the chosen media as one file with its own HTTP downloader."""
    from yt_dlp.downloader import get_suitable_downloader
    from yt_dlp.downloader.http import HttpFD

    if not info.get("url") or info.get("requested_formats") or info.get("is_live"):
        return False  # formats to merge, or a live stream: no fixed bytes to seek in
    if info.get("impersonate"):
        return False  # the site wants a browser's TLS, which only yt-dlp's downloader handles
    chosen = dict(info)  # get_suitable_downloader writes the protocol into what it is given
    downloader = get_suitable_downloader(chosen, ydl.params)
    return downloader is HttpFD and chosen["protocol"] in ("http", "https")


def _range_opener(ydl: Any, info: dict[str, Any]) -> Callable[[int, int], Upstream]:
    """Opens bytes of the chosen media with the request yt-dlp's HTTP downloader would send
    (the format's headers, no compression), through the guarded session: the link and every
    redirect hop are judged, and each connection goes only to an address that was judged."""
    from yt_dlp.networking import Request

    headers = {"Accept-Encoding": "identity", **(info.get("http_headers") or {})}

    def open_range(first: int, last: int) -> Upstream:
        wanted = f"bytes={first}-{last}"
        request = Request(info["url"], info.get("request_data"), {**headers, "Range": wanted})
        return ydl.urlopen(request)

    return open_range


def _probe_relayed(
    relay: RangeRelay, host: str, on_progress: Callable[[float], None] | None = None
) -> Probe | None:
    """ffprobe's reading of the relayed media (its header and index only); None when ffprobe
    can't read it from a link (a container outside `_RELAY_INPUT`'s list)."""
    command = ["ffprobe", "-v", "error", *_RELAY_INPUT, *_PROBE_OUTPUT, "-i", relay.url]
    result = _run_relayed(command, lambda: on_progress(0.0) if on_progress else None)
    _raise_upstream(relay, host)
    return _probed(result.stdout, f"The media at {host}") if result.returncode == 0 else None


def _decode_relayed(
    relay: RangeRelay,
    host: str,
    path: Path,
    start: float | None,
    end: float | None,
    probed: Probe,
    on_progress: Callable[[float], None] | None,
) -> None:
    """The range decoded from the relay into a WAV at `path`. ffmpeg seeks the input (-ss
    before -i), which over HTTP asks the relay for the bytes from there on, and hangs up once
    the range is decoded."""
    length = (end if end is not None else probed.audio_duration) - (start or 0.0)
    if end is not None and probed.duration > 0:  # where the range ends, were the bitrate even
        relay.until = round(relay.size * min(end / probed.duration, 1.0))
    output = [*_MONO, "-ar", str(_RANGE_RATE), "-f", "wav", "-y", str(path)]
    command = ["ffmpeg", "-nostdin", "-v", "error", *_RELAY_INPUT, *_seek(start, end)]

    def tick() -> None:
        if on_progress:
            decoded = path.stat().st_size / (2 * _RANGE_RATE) if path.exists() else 0.0
            on_progress(min(decoded / length, 1.0) if length > 0 else 0.0)

    result = _run_relayed([*command, "-i", relay.url, *output], tick)
    _raise_upstream(relay, host)
    if result.returncode != 0:
        said = _complaint(result.stderr).replace(relay.url, host).removeprefix(f"{host}: ")
        raise SubtideError(
            "bad_input", f"Could not decode the audio of the media at {host}: {said}"
        )


def _run_relayed(
    command: list[str], tick: Callable[[], None]
) -> subprocess.CompletedProcess[bytes]:
    """ffmpeg or ffprobe on the relay, with `tick` called every quarter second while it runs:
    a tick that raises (a cancel) stops it. Without proxy settings: it only reads 127.0.0.1."""
    env = {name: value for name, value in os.environ.items() if name.lower() != "http_proxy"}
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    except FileNotFoundError:
        raise SubtideError(
            "internal", "ffmpeg is not installed", "install ffmpeg (apt-get install ffmpeg)"
        ) from None
    with process:
        while True:
            try:
                out, err = process.communicate(timeout=_TICK_S)
                return subprocess.CompletedProcess(command, process.returncode, out, err)
            except subprocess.TimeoutExpired:
                pass
            try:
                tick()
            except BaseException:
                process.kill()
                raise


def _raise_upstream(relay: RangeRelay, host: str) -> None:
    """The relay's first failure upstream (ffmpeg only saw a 502), as what it is; yt-dlp's
    errors are worded by `_session`."""
    error = relay.error
    if isinstance(error, RelayError):
        raise SubtideError(
            "source_unavailable",
            f"Could not read the media at {host}: {error}",
            "try again later; if it keeps failing, the server may not support this",
        )
    if error is not None:
        raise error


def _download_error(
    error: Exception, text: str, url: str, timeout: float, dest_dir: Path | None
) -> SubtideError:
    """A yt-dlp failure in plain words, classified by the exception that started it."""
    from yt_dlp.networking.exceptions import HTTPError
    from yt_dlp.utils import UnsupportedError

    from engine.guarded_ytdlp import GuardRefusal

    host = host_label(url)
    for cause in _causes(error):
        if isinstance(cause, GuardRefusal):  # a redirect or a connection the guard refused
            return cause.error
        if isinstance(cause, UnsupportedError):
            return SubtideError(
                "unsupported_source",
                f"No video or audio was found at this link on {host}",
                "paste the link of a video page or of a media file",
            )
        if isinstance(cause, HTTPError):
            return _http_error(cause.status, host)
        if isinstance(cause, ConnectionRefusedError):
            return SubtideError(
                "source_unavailable",
                f"Could not connect to {host}: the connection was refused",
                "check the URL; the server may be down",
            )
        # requests and urllib3 have timeout classes of their own, not based on TimeoutError.
        if isinstance(cause, TimeoutError) or "Timeout" in type(cause).__name__:
            return SubtideError(
                "source_unavailable",
                f"{host} did not answer within {timeout:g} s",
                "the server is slow or unreachable; try again later",
            )
        if isinstance(cause, socket.gaierror):
            return SubtideError(
                "source_unavailable",
                f"Could not resolve host {host}",
                "check the URL and your connection",
            )
    return SubtideError("source_unavailable", _clean_message(text, dest_dir))


def _causes(error: BaseException) -> Iterator[BaseException]:
    """The error and everything it wraps, nearest first (yt-dlp nests them several ways)."""
    queue, seen = [error], set()
    while queue:
        current = queue.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        exc_info = getattr(current, "exc_info", None)
        wrapped = [
            exc_info[1] if isinstance(exc_info, tuple) else None,
            getattr(current, "cause", None),
            getattr(current, "reason", None),
            current.__cause__,
            current.__context__,
        ]
        queue += [candidate for candidate in wrapped if isinstance(candidate, BaseException)]


def _http_error(status: int, host: str) -> SubtideError:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "unknown status"
    if status in (404, 410):
        problem, hint = "the video was not found", "check the link"
    elif status in (401, 403):
        problem, hint = (
            "access was refused",
            "the video may be private, region-locked or need a login",
        )
    elif status == 429:
        problem, hint = "too many requests", "wait a few minutes and try again"
    elif status >= 500:
        problem, hint = "the server failed", "try again later"
    else:
        problem, hint = "the request was refused", "check the link"
    return SubtideError(
        "source_unavailable", f"{host} answered HTTP {status} {phrase}: {problem}", hint
    )


def host_label(url: str) -> str:
    """The host (and port) of a link: safe to show, unlike its path or query string."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.hostname}:{port}" if port else str(parts.hostname)


def shown_url(url: str) -> str:
    """A link as it may be shown: without a login, query string or fragment (tokens live there)."""
    parts = urlsplit(url.strip())
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}" if parts.scheme else url.strip()


def _clean_message(message: str, dest_dir: Path | None) -> str:
    """yt-dlp's text without colour codes, tracebacks, credentials, query strings or our paths."""
    lines = _ANSI.sub("", message).strip().splitlines()
    text = lines[0] if lines else ""
    text = re.sub(r"^ERROR:\s*", "", text)
    text = re.sub(r"^\[[\w:.-]+\]\s*(?:[^\s:]+:\s+)?", "", text)
    text = re.sub(r"\s*\(caused by .*$", "", text)
    text = re.sub(r"(\w+://)[^\s/@'\"]*@", r"\1", text)
    text = re.sub(r"(https?://[^\s?#'\"]*)[?#][^\s'\"]*", r"\1", text)
    for folder in {str(dest_dir), str(dest_dir.resolve())} if dest_dir else ():
        text = text.replace(folder + os.sep, "")
    return (text[:300] or "The download failed").rstrip(".")


# --- Local media -------------------------------------------------------------------------------


_PROBE_OUTPUT = ["-print_format", "json", "-show_format", "-show_streams"]
_MONO = ["-vn", "-sn", "-dn", "-ac", "1"]


def probe(path: Path) -> Probe:
    """Duration and streams of a local file; a file without audio is refused."""
    return _probed(_ffprobe(path), named(path, starts=True))


def probe_video(path: Path) -> VideoProbe:
    """The picture of a local file (its first video stream that is not cover art); a file
    without one is refused."""
    data = json.loads(_ffprobe(path) or b"{}")
    streams = [s for s in data.get("streams") or [] if not _is_cover_art(s)]
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    if video is None:
        raise no_video("A video output needs a source with a picture; subtitle files need none.")
    durations = [data.get("format", {}).get("duration"), video.get("duration")]
    return VideoProbe(
        duration=next((d for d in map(_seconds, durations) if d > 0), 0.0),
        width=int(video.get("width") or 0),
        height=int(video.get("height") or 0),
        has_audio=any(s.get("codec_type") == "audio" for s in streams),
    )


def no_video(hint: str) -> SubtideError:
    """The error for a video output asked of a source without a picture."""
    return SubtideError("bad_input", "this source has no video; use the subtitle files", hint)


def _ffprobe(path: Path) -> bytes:
    """ffprobe's JSON about the streams and container of a local file."""
    require_file(path)
    result = run_on(["ffprobe", "-v", "error", *_PROBE_OUTPUT], path)
    if result.returncode != 0:
        raise _unreadable(path)
    return result.stdout


def _probed(output: bytes, name: str) -> Probe:
    """ffprobe's JSON about the media `name` (as a message starts it), which needs audio."""
    data = json.loads(output or b"{}")
    streams = data.get("streams") or []
    kinds = {stream.get("codec_type") for stream in streams if not _is_cover_art(stream)}
    if "audio" not in kinds:
        raise SubtideError("bad_input", f"{name} has no audio track", hint=_NO_AUDIO_HINT)
    durations = [data.get("format", {}).get("duration")]
    durations += [stream.get("duration") for stream in streams]
    known = [seconds for seconds in map(_seconds, durations) if seconds > 0]
    # Formats that store no duration (raw streams) report none; 0 means "unknown" to callers.
    duration = known[0] if known else 0.0
    audio = [_seconds(s.get("duration")) for s in streams if s.get("codec_type") == "audio"]
    return Probe(
        duration=duration,
        has_audio=True,
        has_video="video" in kinds,
        audio_duration=next((seconds for seconds in audio if seconds > 0), duration),
    )


def decode_audio(
    path: Path, sample_rate: int = 16000, *, start: float | None = None, end: float | None = None
) -> numpy.ndarray:
    """The first audio stream as mono float32 samples in [-1, 1] at `sample_rate`; with
    `start`/`end` (seconds), only that range. ffmpeg seeks the input before decoding, which is
    exact for audio it transcodes, so a range of a long file costs only its own decoding."""
    import numpy

    require_file(path)
    head = ["ffmpeg", "-nostdin", "-v", "error", *_seek(start, end)]
    result = run_on(head, path, [*_MONO, "-ar", str(sample_rate), "-f", "s16le", "pipe:1"])
    if result.returncode != 0:
        detail = last_complaint(result.stderr, path)
        if "does not contain any stream" in detail:  # -vn left nothing: there is no audio
            raise SubtideError(
                "bad_input", f"{named(path, starts=True)} has no audio track", hint=_NO_AUDIO_HINT
            )
        raise SubtideError("bad_input", f"Could not decode the audio of {named(path)}: {detail}")
    if not result.stdout:
        raise SubtideError(
            "bad_input",
            f"{named(path, starts=True)} contains no audio samples",
            hint="Its audio track is empty: export or download the file again.",
        )
    samples = numpy.frombuffer(result.stdout, dtype="<i2").astype(numpy.float32)
    samples /= 32768.0  # in place: an hour of audio is 230 MB a copy
    return samples


def probe_and_decode(
    path: Path, sample_rate: int = 16000, *, start: float | None = None, end: float | None = None
) -> tuple[Probe, numpy.ndarray]:
    """`probe(path)` and `decode_audio(path, ...)`, ffprobe running beside ffmpeg: on a short
    file each is mostly its own start-up, a tenth of a second the first cue need not wait for
    twice. A file both refuse gets the probe's reason, as when it was probed first."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        probing = pool.submit(probe, path)
        try:
            audio = decode_audio(path, sample_rate, start=start, end=end)
        except SubtideError:
            probing.result()
            raise
        return probing.result(), audio


def _seek(start: float | None, end: float | None) -> list[str]:
    """ffmpeg's input options for a range: seek first (-ss before -i), then read to `end`."""
    options = ["-ss", f"{start:.3f}"] if start else []
    if end is not None:
        options += ["-t", f"{end - (start or 0.0):.3f}"]
    return options


def write_audio_b64(data_b64: str, dest_dir: Path, *, max_bytes: int = 500_000_000) -> Path:
    """Store uploaded base64 media as a file named by its content, written atomically."""
    text = data_b64.translate(_WHITESPACE)  # tolerate line-wrapped base64
    size = len(text) * 3 // 4 - text[-2:].count("=")
    if size > max_bytes:
        raise SubtideError(
            "bad_input",
            f"The uploaded audio is too large ({size / 1e6:.0f} MB; the limit is "
            f"{max_bytes / 1e6:.0f} MB)",
            "send a shorter clip, or compress it (Opus or MP3)",
        )
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SubtideError("bad_input", "The uploaded audio is not valid base64") from None
    if not data:
        raise SubtideError("bad_input", "The uploaded audio is empty (0 bytes)")
    path = dest_dir / f"{_UPLOAD_PREFIX}{hashlib.sha256(data).hexdigest()[:24]}"
    write_atomic(path, data, private=True)
    return path


_UPLOAD_PREFIX = "upload-"
_UPLOAD_NAME = re.compile(rf"{_UPLOAD_PREFIX}[0-9a-f]{{24}}")


def named(path: Path, *, starts: bool = False) -> str:
    """How a message names a local file: an upload (`write_audio_b64`) as what it is, never by
    its temporary name, which means nothing to whoever sent it."""
    if _UPLOAD_NAME.fullmatch(path.name):
        return "The uploaded file" if starts else "the uploaded file"
    return path.name


def _unreadable(path: Path) -> SubtideError:
    return SubtideError(
        "bad_input",
        f"{named(path, starts=True)} is not an audio or video file ffmpeg can read "
        "(corrupt or unsupported)",
        hint="Check that it plays; download or copy it again, or convert it with ffmpeg.",
    )


_NO_AUDIO_HINT = "Give a file with sound: this one carries no audio to transcribe."


def _is_cover_art(stream: dict[str, Any]) -> bool:
    return bool((stream.get("disposition") or {}).get("attached_pic"))


def _seconds(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def last_complaint(stderr: bytes, path: Path) -> str:
    """ffmpeg's final complaint, naming the file by its base name only."""
    line = _complaint(stderr)
    name = named(path)
    for shown in (f"file:{path.resolve()}", str(path.resolve()), str(path)):
        line = line.replace(shown, name)
    return line.removeprefix(f"{name}: ")


def _complaint(stderr: bytes) -> str:
    """ffmpeg's final complaint, as it wrote it."""
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    return _ANSI.sub("", lines[-1]) if lines else "ffmpeg failed without a message"


# --- Playlists ---------------------------------------------------------------------------------

# Links to media files: never a playlist, so they need no extraction to find out.
_MEDIA_SUFFIXES = frozenset(
    [
        ".mp4",
        ".mkv",
        ".webm",
        ".mov",
        ".avi",
        ".m4v",
        ".mp3",
        ".m4a",
        ".aac",
        ".wav",
        ".flac",
        ".ogg",
        ".opus",
        ".wma",
    ]
)


class PlaylistEntry(NamedTuple):
    url: str
    title: str | None


def playlist_entries(
    url: str, *, allow_private: bool, socket_timeout: float = 30
) -> list[PlaylistEntry]:
    """The videos a playlist link (or a page with several videos) lists, in order; the link
    itself when it is one video. Only the list is fetched, not the videos."""
    url = url.strip()
    if Path(urlsplit(url).path).suffix.lower() in _MEDIA_SUFFIXES:
        return [PlaylistEntry(url, None)]  # its job judges the link as it fetches it
    # The whole list, each entry as a link only: its videos are read by their own jobs.
    options = {"noplaylist": False, "playlist_items": None, "extract_flat": "in_playlist"}
    guard = UrlGuard(allow_private=allow_private)
    session = _session(url, guard, socket_timeout=socket_timeout, options=options)
    with session as ydl:
        info = ydl.extract_info(url, download=False)
    if info.get("_type") != "playlist":
        return [PlaylistEntry(url, info.get("title"))]
    return [entry for item in info.get("entries") or [] if (entry := _entry(item, url))]


def _entry(item: dict[str, Any] | None, page: str) -> PlaylistEntry | None:
    if not item:
        return None
    # A flat entry links to its video; a video embedded in the page (html5 <video>) has only
    # its media, under the page's own address.
    link = item.get("url")
    if not link and item.get("formats"):
        link = item["formats"][-1].get("url")
    return PlaylistEntry(link, item.get("title")) if link and link != page else None
