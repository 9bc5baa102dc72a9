"""The SSRF guard against an outside probe's findings, with real yt-dlp and real HTTP servers on
127.0.0.1: redirects, DNS rebinding, streams yt-dlp hands to ffmpeg, and IPv6 forms of IPv4.

A refused host is shown to receive nothing; each such test also shows that the same route
reaches it when the host is allowed, so "nothing arrived" is not an accident of the harness.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from yt_dlp.networking.exceptions import CertificateVerifyError

from engine.guarded_ytdlp import GuardedYoutubeDL
from engine.media import download, extract, fetch_bytes, probe
from engine.protocol import SubtideError
from engine.url_guard import UrlGuard, check_url, is_refused
from tests.support.ssrf import Reply, Resolver, Site, redirect, site
from tests.support.timing import HANG_GUARD_S

PUBLIC = "93.184.216.34"
VTT = b"WEBVTT\n\n00:00:00.500 --> 00:00:02.000\nThe kettle\n"
HLS = "application/vnd.apple.mpegurl"


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """One second of tone as an MP4 file and as an MPEG-TS segment (what HLS serves)."""
    folder = tmp_path_factory.mktemp("guard-media")
    tone = ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "sine=d=1", "-c:a", "aac"]
    for name, container in (("tone.mp4", "mp4"), ("seg0.ts", "mpegts")):
        subprocess.run([*tone, "-f", container, str(folder / name)], check=True)
    return {name: (folder / name).read_bytes() for name in ("tone.mp4", "seg0.ts")}


@pytest.fixture
def target(media: dict[str, bytes]) -> Iterator[Site]:
    """The site a probe wants to reach: it serves media and captions, and counts requests."""
    routes = {
        "/tone.mp4": Reply(media["tone.mp4"], "video/mp4"),
        "/en.vtt": Reply(VTT, "text/vtt"),
        "/seg0.ts": Reply(media["seg0.ts"], "video/mp2t"),
        "/key.bin": Reply(bytes(16)),
    }
    with site(routes) as recorder:
        yield recorder


@pytest.fixture
def origin() -> Iterator[Site]:
    """An allowed site whose routes a test fills in (redirects, playlists)."""
    with site() as recorder:
        yield recorder


def _fetch(kind: str, url: str, tmp_path: Path, **options: object) -> object:
    if kind == "download":
        return download(url, tmp_path, socket_timeout=2, **options)
    return fetch_bytes(url, socket_timeout=2, **options)


# --- (a) redirects: the next hop is judged before anything is sent to it ----------------------

REDIRECTED = {"download": "/tone.mp4", "fetch_bytes": "/en.vtt"}


@pytest.mark.parametrize("kind", ["download", "fetch_bytes"])
def test_a_redirect_to_a_refused_host_sends_it_nothing(
    kind: str, origin: Site, target: Site, tmp_path: Path
) -> None:
    # Both names lead to the target's port on 127.0.0.1; only the metadata name is refused
    # (cloud metadata is refused even where private addresses are allowed).
    resolver = Resolver({"media.test": ["127.0.0.1"], "metadata.google.internal": ["127.0.0.1"]})
    path = REDIRECTED[kind]
    origin.routes["/allowed"] = redirect(f"http://media.test:{target.port}{path}")
    origin.routes["/refused"] = redirect(f"http://metadata.google.internal:{target.port}{path}")

    _fetch(kind, f"{origin.url}/allowed", tmp_path, allow_private=True, resolver=resolver)
    assert path in target.requests  # the harness does route the redirect to the target

    target.requests.clear()
    error = _raises(
        _fetch, kind, f"{origin.url}/refused", tmp_path, allow_private=True, resolver=resolver
    )
    assert error.code == "unsupported_source"
    assert error.message.startswith("Refusing to download from metadata.google.internal")
    assert target.requests == []
    assert "/refused" in origin.requests


def test_redirects_between_private_servers_are_followed_when_allowed(
    origin: Site, target: Site, media: dict[str, bytes], tmp_path: Path
) -> None:
    # The desktop case: private addresses allowed, so 127.0.0.1 may redirect to 127.0.0.1.
    origin.routes["/moved.mp4"] = redirect(f"{target.url}/tone.mp4")
    origin.routes["/moved.vtt"] = redirect(f"{target.url}/en.vtt")
    fetched = download(f"{origin.url}/moved.mp4", tmp_path, allow_private=True)
    assert fetched.path.read_bytes() == media["tone.mp4"]
    assert probe(fetched.path).duration == pytest.approx(1.0, abs=0.1)
    assert fetch_bytes(f"{origin.url}/moved.vtt", allow_private=True) == VTT
    assert {"/tone.mp4", "/en.vtt"} <= set(target.requests)


# --- (b) DNS rebinding: a connection goes only to an address that was judged -------------------


@pytest.mark.parametrize("public_answers", [1, 2], ids=["second-lookup", "third-lookup"])
@pytest.mark.parametrize("kind", ["download", "fetch_bytes"])
def test_a_name_that_rebinds_to_loopback_is_refused(
    kind: str, public_answers: int, target: Site, tmp_path: Path
) -> None:
    # The name looks public to the first lookups, then answers 127.0.0.1. Whichever lookup
    # turns (the link's check, the request's, the connection's), nothing reaches the target.
    resolver = Resolver({"rebind.test": [PUBLIC] * public_answers + ["127.0.0.1"]})
    url = f"http://rebind.test:{target.port}{REDIRECTED[kind]}"
    error = _raises(_fetch, kind, url, tmp_path, allow_private=False, resolver=resolver)
    assert error.code == "unsupported_source"
    assert error.message.startswith("Refusing to download from rebind.test")
    assert target.requests == []
    assert resolver.lookups.count("rebind.test") == public_answers + 1


def test_a_connection_uses_the_judged_address_not_a_second_lookup(
    target: Site, tmp_path: Path
) -> None:
    # The system resolves localhost to 127.0.0.1, where the target listens. The guard is told
    # 127.0.0.2, where nothing listens: a connection that resolved the name again would reach
    # the target; a pinned one is refused by 127.0.0.2.
    system = {answer[4][0] for answer in socket.getaddrinfo("localhost", target.port)}
    assert "127.0.0.1" in system
    resolver = Resolver({"localhost": ["127.0.0.2"]})
    url = f"http://localhost:{target.port}/tone.mp4"
    started = time.monotonic()
    error = _raises(download, url, tmp_path, allow_private=True, resolver=resolver)
    assert time.monotonic() - started < HANG_GUARD_S  # hang guard (idle: well under a second)
    assert error.code == "source_unavailable"
    assert (
        error.message == f"Could not connect to localhost:{target.port}: the connection was refused"
    )
    assert target.requests == []


def test_tls_names_the_host_while_connecting_to_the_judged_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    command = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    command += ["-nodes", "-days", "1", "-subj", "/CN=tls.test"]
    command += ["-addext", "subjectAltName=DNS:tls.test", "-keyout", str(key), "-out", str(cert)]
    subprocess.run(command, check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    names: list[str | None] = []
    context.sni_callback = lambda _socket, name, _context: names.append(name)
    # Trust the certificate: told not to use certifi, yt-dlp reads the store SSL_CERT_FILE names.
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    params = {"quiet": True, "compat_opts": ["no-certifi"]}
    resolver = Resolver({"tls.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    guard = UrlGuard(allow_private=True, resolver=resolver)
    with site({"/": Reply(b"ok")}, tls=context) as server, GuardedYoutubeDL(params, guard) as ydl:
        assert ydl.urlopen(f"https://tls.test:{server.port}/").read() == b"ok"
        # Same address, another name: the certificate is checked against the name.
        with pytest.raises(CertificateVerifyError, match=r"(?i)hostname"):
            ydl.urlopen(f"https://other.test:{server.port}/")
    assert names == ["tls.test", "other.test"]


# --- (c) streams that yt-dlp would hand to ffmpeg ----------------------------------------------


def _playlist(*lines: str, ended: bool = True) -> Reply:
    head = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:2", "#EXT-X-MEDIA-SEQUENCE:0"]
    tail = ["#EXT-X-ENDLIST"] if ended else []
    return Reply("\n".join([*head, *lines, *tail, ""]).encode(), HLS)


SAMPLE_AES = _playlist('#EXT-X-KEY:METHOD=SAMPLE-AES,URI="key.bin"', "#EXTINF:1.0,", "seg0.ts")


def test_hls_that_needs_ffmpeg_is_refused_before_ffmpeg_starts(
    target: Site, tmp_path: Path
) -> None:
    target.routes["/sample-aes.m3u8"] = SAMPLE_AES
    url = f"{target.url}/sample-aes.m3u8"
    error = _raises(download, url, tmp_path, allow_private=True, native_only=True)
    assert error.code == "unsupported_source"
    assert "needs a downloader the server can't guard" in error.message
    assert error.hint and "upload" in error.hint
    assert not [path for path in target.requests if not path.endswith(".m3u8")]


def test_hls_that_needs_ffmpeg_reaches_ffmpeg_on_a_desktop(target: Site, tmp_path: Path) -> None:
    # Where private addresses are allowed, yt-dlp behaves as it always has: ffmpeg takes over
    # and fetches the key and segments itself. This is what the refusal above prevents.
    target.routes["/sample-aes.m3u8"] = SAMPLE_AES
    # ffmpeg may fail on the made-up key: only what it fetched matters here.
    with contextlib.suppress(SubtideError):
        download(f"{target.url}/sample-aes.m3u8", tmp_path, allow_private=True)
    assert {"/key.bin", "/seg0.ts"} & set(target.requests)
    assert [headers for headers in target.headers if "Icy-MetaData" in headers]


def test_aes_128_hls_is_decrypted_natively_not_handed_to_ffmpeg(
    target: Site, media: dict[str, bytes], tmp_path: Path
) -> None:
    # Without pycryptodomex, HlsFD hands AES-128 to ffmpeg when ffmpeg is installed, unless it
    # is given the playlist the guard read: then yt-dlp decrypts it itself.
    key, iv = bytes(range(16)), bytes(16)
    command = ["openssl", "enc", "-aes-128-cbc", "-K", key.hex(), "-iv", iv.hex()]
    encrypted = subprocess.run(command, input=media["seg0.ts"], capture_output=True, check=True)
    target.routes["/enc0.ts"] = Reply(encrypted.stdout, "video/mp2t")
    target.routes["/aes.key"] = Reply(key)
    line = f'#EXT-X-KEY:METHOD=AES-128,URI="aes.key",IV=0x{iv.hex()}'
    target.routes["/aes.m3u8"] = _playlist(line, "#EXTINF:1.0,", "enc0.ts")
    url = f"{target.url}/aes.m3u8"
    fetched = download(url, tmp_path, allow_private=True, native_only=True)
    assert probe(fetched.path).duration == pytest.approx(1.0, abs=0.1)  # decrypted
    assert {"/aes.key", "/enc0.ts"} <= set(target.requests)
    # ffmpeg's HTTP client asks every server for stream metadata; yt-dlp's never does.
    assert not [headers for headers in target.headers if "Icy-MetaData" in headers]


def test_a_live_stream_is_refused_where_private_addresses_are(target: Site, tmp_path: Path) -> None:
    # A live HLS stream goes to ffmpeg before anything is read. The guard is told "localhost"
    # is public, while ffmpeg (resolving by itself) would reach the target on 127.0.0.1.
    target.routes["/live.m3u8"] = _playlist("#EXTINF:1.0,", "seg0.ts", ended=False)
    url = f"http://localhost:{target.port}/live.m3u8"
    info = extract(url, allow_private=True)
    assert info["is_live"]
    # Were ffmpeg started, its first request would end it (a live playlist is polled forever).
    target.routes["/live.m3u8"] = Reply(b"gone", status=404)
    target.requests.clear()
    resolver = Resolver({"localhost": [PUBLIC]})
    error = _raises(download, url, tmp_path, allow_private=False, resolver=resolver, info=info)
    assert error.code == "unsupported_source"
    assert "needs a downloader the server can't guard" in error.message
    assert target.requests == []


def test_a_native_hls_segment_on_a_refused_host_is_refused(
    origin: Site, target: Site, media: dict[str, bytes], tmp_path: Path
) -> None:
    resolver = Resolver({"cdn.test": ["127.0.0.1"], "metadata.google.internal": ["127.0.0.1"]})
    for name, host in (("allowed", "cdn.test"), ("refused", "metadata.google.internal")):
        segment = f"http://{host}:{target.port}/seg0.ts"
        origin.routes[f"/{name}.m3u8"] = _playlist("#EXTINF:1.0,", segment)

    fetched = download(
        f"{origin.url}/allowed.m3u8",
        tmp_path,
        allow_private=True,
        native_only=True,
        resolver=resolver,
    )
    assert probe(fetched.path).duration == pytest.approx(1.0, abs=0.1)
    assert "/seg0.ts" in target.requests

    target.requests.clear()
    error = _raises(
        download,
        f"{origin.url}/refused.m3u8",
        tmp_path / "refused",
        allow_private=True,
        native_only=True,
        resolver=resolver,
    )
    assert error.code == "unsupported_source"
    assert error.message.startswith("Refusing to download from metadata.google.internal")
    assert target.requests == []


# --- (d) IPv6 forms that carry an IPv4 address -------------------------------------------------

# 127.0.0.1 and 169.254.169.254 (cloud metadata) in every form that embeds an IPv4 address.
LOOPBACK_FORMS = [
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::127.0.0.1",  # IPv4-compatible
    "2002:7f00:1::1",  # 6to4
    "64:ff9b::7f00:1",  # NAT64
    "64:ff9b:1::7f00:1",  # local-use NAT64
    "2001:0:7f00:1::f7f7:f7f7",  # Teredo, server 127.0.0.1 (client 8.8.8.8)
    "2001:0:808:808::80ff:fffe",  # Teredo, client 127.0.0.1 (stored inverted; server 8.8.8.8)
]
METADATA_FORMS = [
    "::ffff:169.254.169.254",
    "::169.254.169.254",
    "2002:a9fe:a9fe::1",
    "64:ff9b::a9fe:a9fe",
    "64:ff9b:1::a9fe:a9fe",
    "2001:0:a9fe:a9fe::f7f7:f7f7",
    "2001:0:808:808::5601:5601",
]
# The same forms around public addresses (8.8.8.8), which a server may fetch from.
PUBLIC_FORMS = ["::ffff:8.8.8.8", "2002:808:808::1", "64:ff9b::808:808", "2606:4700::1111"]


@pytest.mark.parametrize("address", LOOPBACK_FORMS + METADATA_FORMS)
def test_ipv6_forms_of_private_addresses_are_refused(address: str) -> None:
    assert is_refused(ipaddress.ip_address(address), allow_private=False)
    error = _raises(check_url, f"http://[{address}]/", allow_private=False)
    assert error.code == "unsupported_source"


@pytest.mark.parametrize("address", METADATA_FORMS)
def test_ipv6_forms_of_metadata_are_refused_even_where_private_is_allowed(address: str) -> None:
    assert is_refused(ipaddress.ip_address(address), allow_private=True)
    error = _raises(check_url, f"http://[{address}]/latest/meta-data", allow_private=True)
    assert error.code == "unsupported_source"


@pytest.mark.parametrize("address", LOOPBACK_FORMS)
def test_ipv6_forms_of_loopback_pass_where_private_is_allowed(address: str) -> None:
    assert not is_refused(ipaddress.ip_address(address), allow_private=True)


@pytest.mark.parametrize("address", PUBLIC_FORMS)
def test_ipv6_forms_of_public_addresses_are_allowed(address: str) -> None:
    assert not is_refused(ipaddress.ip_address(address), allow_private=False)
    check_url(f"http://[{address}]/clip.mp4", allow_private=False)  # judged, not fetched


def test_a_name_that_resolves_to_an_ipv6_form_of_loopback_is_refused() -> None:
    resolver = Resolver({"public.test": [PUBLIC], "six.test": ["2002:7f00:1::1"]})
    guard = UrlGuard(allow_private=False, resolver=resolver)
    guard.check_url("http://public.test/")
    error = _raises(guard.check_url, "http://six.test/clip.mp4?token=SECRET")
    assert error.code == "unsupported_source"
    assert error.message.startswith("Refusing to download from six.test:")
    assert "SECRET" not in error.message


def _raises(function: Callable[..., object], *args: object, **kwargs: object) -> SubtideError:
    with pytest.raises(SubtideError) as caught:
        function(*args, **kwargs)
    return caught.value
