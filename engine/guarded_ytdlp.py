"""yt-dlp behind the URL guard (engine.url_guard), for one session at a time.

Three holes are closed here, none of them by patching yt-dlp for the whole process (the desktop
app, other sessions and other YoutubeDL instances keep stock behaviour):

- Connections: yt-dlp's requests handler is given connections that resolve the host once
  through the guard, which judges every address, and connect only to one of those addresses.
  A redirect, or a name that answers differently the second time (DNS rebinding), is therefore
  judged before a single byte is sent to it. TLS still sends and verifies the host name.
- Handlers that resolve names where no pin reaches (curl_cffi's libcurl for browser
  impersonation) are left out while private addresses are refused.
- Downloaders: ffmpeg, rtmpdump and the other programs yt-dlp may hand a stream to fetch with
  their own network code, outside the guard. A guarded session can refuse them before they start
  and lets only yt-dlp's own HTTP, HLS and DASH downloaders run, which fetch through this session.

Imported only where a download happens: it imports yt-dlp, urllib3 and requests.
"""

from __future__ import annotations

import functools
import socket
from typing import Any
from urllib.parse import urlsplit

import urllib3
import yt_dlp
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util.timeout import _DEFAULT_TIMEOUT
from yt_dlp.downloader import get_suitable_downloader
from yt_dlp.downloader.dash import DashSegmentsFD
from yt_dlp.downloader.hls import HlsFD
from yt_dlp.downloader.http import HttpFD
from yt_dlp.networking import Request
from yt_dlp.networking._requests import RequestsRH
from yt_dlp.networking.common import _REQUEST_HANDLERS, _RH_PREFERENCES
from yt_dlp.networking.exceptions import RequestError
from yt_dlp.networking.impersonate import ImpersonateRequestHandler

from engine.protocol import SubtideError
from engine.url_guard import AddrInfo, UrlGuard


class GuardRefusal(RequestError):
    """The guard stopped a connection (`error` says why). A RequestError, so yt-dlp passes it up
    as it is: no other request handler is tried and it is not retried like a network error."""

    def __init__(self, error: SubtideError) -> None:
        super().__init__(error.message)
        self.error = error


class GuardedYoutubeDL(yt_dlp.YoutubeDL):
    """A YoutubeDL whose requests all go through `guard`.

    `native_only` (default: when private addresses are refused) refuses media that yt-dlp would
    hand to a downloader outside the guard.
    """

    def __init__(
        self, params: dict[str, Any], guard: UrlGuard, *, native_only: bool | None = None
    ) -> None:
        self._guard = guard
        self._native_only = not guard.allow_private if native_only is None else native_only
        if not guard.allow_private:
            # A proxy resolves and connects by itself, where no pin reaches: go direct.
            params = {**params, "proxy": ""}
        super().__init__(params)

    def urlopen(self, req: Any) -> Any:
        # Every request yt-dlp makes (pages while extracting, then the media) passes here: its
        # scheme and host are judged before it is sent; each connection is judged again.
        self._guard.check_url(req if isinstance(req, str) else req.url)
        return super().urlopen(req)

    @functools.cached_property
    def _request_director(self) -> Any:
        pinned = functools.partial(PinnedRequestsRH, guard=self._guard)
        # Browser impersonation (curl_cffi) resolves names inside libcurl, past the guard: only
        # a session that allows private addresses (a desktop) keeps it for the sites that ask.
        impersonating = [
            handler
            for handler in _REQUEST_HANDLERS.values()
            if issubclass(handler, ImpersonateRequestHandler)
        ]
        handlers = [pinned, *(impersonating if self._guard.allow_private else [])]
        return self.build_request_director(handlers, _RH_PREFERENCES)

    def dl(
        self, name: str, info: dict[str, Any], subtitle: bool = False, test: bool = False
    ) -> Any:
        # Every download (each format, or formats merged by one downloader) starts here.
        if self._native_only:
            info = self._natively(name, info)
        return super().dl(name, info, subtitle, test)

    def _natively(self, name: str, info: dict[str, Any]) -> dict[str, Any]:
        """`info` as one of yt-dlp's own downloaders will fetch it, through this session."""
        downloader = get_suitable_downloader(info, self.params, to_stdout=name == "-")
        if downloader is HlsFD:
            return self._native_hls(info)
        if downloader not in (HttpFD, DashSegmentsFD):
            raise _unguarded(info.get("url") or "")
        return info

    def _native_hls(self, info: dict[str, Any]) -> dict[str, Any]:
        # HlsFD reads the playlist itself and hands what it cannot play (SAMPLE-AES, some live
        # streams, AES-128 without pycryptodomex) to ffmpeg. So the playlist is read here and
        # judged with HlsFD's own test, and HlsFD is given the very text that was judged (then it
        # also decrypts AES-128 itself) rather than reading it again.
        url, playlist = info["url"], info.get("hls_media_playlist_data")
        if playlist is None:
            with self.urlopen(Request(url, headers=info.get("http_headers") or {})) as reply:
                url, playlist = reply.url, reply.read().decode("utf-8", "ignore")
        if not HlsFD.can_download(playlist, info, self.params.get("allow_unplayable_formats")):
            raise _unguarded(url)
        return {**info, "url": url, "hls_media_playlist_data": playlist}


def _unguarded(url: str) -> SubtideError:
    return SubtideError(
        "unsupported_source",
        f"The stream at {urlsplit(url).hostname or 'this link'} needs a downloader the server "
        "can't guard (ffmpeg or another program), so it is not fetched",
        "download the video yourself and upload the file, or use a link to a regular video "
        "page or file",
    )


class PinnedRequestsRH(RequestsRH):
    """yt-dlp's requests handler, whose connections are made through `guard`."""

    def __init__(self, *, guard: UrlGuard, **kwargs: Any) -> None:
        self._guard = guard
        super().__init__(**kwargs)

    def _create_instance(self, cookiejar: Any, legacy_ssl_support: Any = None) -> Any:
        session = super()._create_instance(
            cookiejar=cookiejar, legacy_ssl_support=legacy_ssl_support
        )
        for adapter in session.adapters.values():
            # Every connection pool it opens makes its connections through the guard.
            adapter.poolmanager.pool_classes_by_scheme = {
                "http": functools.partial(_PinnedHTTPPool, guard=self._guard),
                "https": functools.partial(_PinnedHTTPSPool, guard=self._guard),
            }
        return session


class _PinnedHTTPConnection(HTTPConnection):
    """Connects only to an address the guard judged for this host, from its own resolution:
    nothing resolves the name a second time."""

    def __init__(self, *args: Any, guard: UrlGuard, **kwargs: Any) -> None:
        self._guard = guard
        super().__init__(*args, **kwargs)

    def _new_conn(self) -> socket.socket:
        try:
            answers = self._guard.addresses(self.host, self.port)
        except SubtideError as error:
            raise GuardRefusal(error) from None
        # The same errors as urllib3's own _new_conn, so requests and yt-dlp handle them alike.
        try:
            return _connect(answers, self.timeout, self.source_address, self.socket_options)
        except TimeoutError as error:
            raise ConnectTimeoutError(
                self, f"Connection to {self.host} timed out. (connect timeout={self.timeout})"
            ) from error
        except OSError as error:
            raise NewConnectionError(
                self, f"Failed to establish a new connection: {error}"
            ) from error


class _PinnedHTTPSConnection(_PinnedHTTPConnection, HTTPSConnection):
    # HTTPSConnection.connect wraps the socket from _new_conn, with the host name for SNI and
    # certificate checks.
    pass


class _PinnedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _PinnedHTTPConnection


class _PinnedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _PinnedHTTPSConnection


def _connect(
    answers: list[AddrInfo],
    timeout: Any,
    source_address: tuple[str, int] | None,
    options: list[tuple[int, int, int | bytes]] | None,
) -> socket.socket:
    """A socket connected to the first of `answers` that accepts (socket.create_connection,
    without resolving anything). `answers` is never empty: the guard refuses such hosts."""
    failures: list[OSError] = []
    for family, kind, proto, _, sockaddr in answers:
        sock = socket.socket(family, kind, proto)
        try:
            for level, option, value in options or ():
                sock.setsockopt(level, option, value)
            if timeout is not _DEFAULT_TIMEOUT:
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as error:
            sock.close()
            failures.append(error)
    raise failures[-1]
