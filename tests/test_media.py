"""engine.media on real media: espeak-ng speech, ffmpeg-made videos, yt-dlp over 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from engine.media import (
    decode_audio,
    download,
    extract,
    fetch_bytes,
    probe,
    write_audio_b64,
)
from engine.protocol import SubtideError
from engine.url_guard import check_url
from tests.support.http_server import serve_directory
from tests.support.synth import Clip, fixture_dir, synthesize, to_mp4
from tests.support.timing import HANG_GUARD_S

RATE = 16000
# AAC pads its last frame (1024 samples, 64 ms at 16 kHz) and ffmpeg 5.1 keeps the padding.
AAC_FRAME_S = 1024 / RATE
TWO_SENTENCES = [
    ("en+m3", "The kettle is boiling in the kitchen."),
    ("en+f3", "Please bring the cups to the table."),
]


@pytest.fixture(scope="module")
def clip() -> Clip:
    return synthesize(TWO_SENTENCES, fixture_dir(), "media-two-sentences")


@pytest.fixture(scope="module")
def media(clip: Clip, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the clip as WAV, as MP4, as a silent MP4, and some files that are not media."""
    folder = tmp_path_factory.mktemp("media")
    (folder / "clip.wav").write_bytes(clip.wav.read_bytes())
    to_mp4(clip.wav, folder / "clip.mp4")
    to_mp4(clip.wav, folder / "silent.mp4", with_audio=False)
    (folder / "empty.wav").write_bytes(b"")
    (folder / "noise.mp4").write_bytes(np.random.default_rng(7).bytes(50_000))
    (folder / "notes.txt").write_text("Shopping list: bread, milk and tea.\n")
    (folder / "no-video.html").write_text("<html><title>Nothing here</title><p>Hello</p></html>")
    (folder / "en.vtt").write_text("WEBVTT\n\n00:00:00.500 --> 00:00:02.000\nThe kettle\n")
    track = '<track kind="captions" src="en.vtt" srclang="en">'
    (folder / "page.html").write_text(f'<video src="clip.mp4">{track}</video>')
    return folder


@pytest.fixture(scope="module")
def server(media: Path) -> Iterator[str]:
    with serve_directory(media) as base_url:
        yield base_url


# --- synthetic speech --------------------------------------------------------------------------


def test_synthesized_speech_is_deterministic_and_timed(clip: Clip, tmp_path: Path) -> None:
    again = synthesize(TWO_SENTENCES, tmp_path, "again")
    assert _sha256(again.wav) == _sha256(clip.wav)
    assert again.sentences == clip.sentences
    assert clip.script == " ".join(text for _, text in TWO_SENTENCES)

    first, second = clip.sentences
    assert (first.start, second.start - first.end, clip.duration - second.end) == pytest.approx(
        (0.5, 0.6, 0.5), abs=1e-3
    )
    samples = decode_audio(clip.wav)
    for sentence in clip.sentences:
        spoken = samples[round(sentence.start * RATE) : round(sentence.end * RATE)]
        assert np.sqrt(np.mean(spoken**2)) > 0.02
    # The gap between the sentences is digital silence, so turn boundaries are exact.
    assert not samples[round(first.end * RATE) : round(second.start * RATE)].any()


# --- decoding and probing ----------------------------------------------------------------------


def test_decode_wav(clip: Clip, media: Path) -> None:
    samples = decode_audio(media / "clip.wav")
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert len(samples) / RATE == pytest.approx(clip.duration, abs=0.02)
    assert np.abs(samples).max() <= 1.0


def test_decode_mp4_gives_the_same_audio(media: Path) -> None:
    wav = decode_audio(media / "clip.wav")
    mp4 = decode_audio(media / "clip.mp4")
    assert mp4.dtype == np.float32 and mp4.ndim == 1
    extra = (len(mp4) - len(wav)) / RATE
    assert 0 <= extra < AAC_FRAME_S
    # Aligned from the first sample: AAC's encoder delay is removed by the decoder.
    assert np.corrcoef(wav, mp4[: len(wav)])[0, 1] > 0.98


def test_probe_wav(clip: Clip, media: Path) -> None:
    found = probe(media / "clip.wav")
    assert found.duration == pytest.approx(clip.duration, abs=0.02)
    assert (found.has_audio, found.has_video) == (True, False)


def test_probe_mp4(clip: Clip, media: Path) -> None:
    found = probe(media / "clip.mp4")
    assert found.duration == pytest.approx(clip.duration, abs=0.2)
    assert (found.has_audio, found.has_video) == (True, True)


BAD_FILES = [
    ("missing.wav", "File not found: missing.wav"),
    ("empty.wav", "empty.wav is empty (0 bytes)"),
    ("noise.mp4", "noise.mp4"),
    ("notes.txt", "notes.txt"),
    ("silent.mp4", "silent.mp4 has no audio track"),
]


@pytest.mark.parametrize(("name", "expected"), BAD_FILES)
def test_probe_refuses_bad_input(media: Path, name: str, expected: str) -> None:
    error = _raises(probe, media / name)
    assert error.code == "bad_input"
    assert expected in error.message
    if name in ("noise.mp4", "notes.txt"):
        assert "not an audio or video file ffmpeg can read" in error.message
    assert str(media) not in error.message


@pytest.mark.parametrize(("name", "expected"), BAD_FILES)
def test_decode_refuses_bad_input(media: Path, name: str, expected: str) -> None:
    error = _raises(decode_audio, media / name)
    assert error.code == "bad_input"
    assert expected in error.message
    if name in ("noise.mp4", "notes.txt"):
        assert "Invalid data found" in error.message
    assert str(media) not in error.message


# --- URL guard ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/clip.mp4",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "data:video/mp4;base64,AAAA",
        "example.com/clip.mp4",
        "http:///clip.mp4",
        "http://127.0.0.1/x",
        "http://localhost/x",
        "http://10.0.0.5/",
        "http://192.168.1.1/",
        "http://172.16.0.1/",
        "http://[::1]/",
        "http://[fe80::1]/",
        "http://[fc00::1]/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:127.0.0.1]/",
        "http://100.64.0.1/",
        "http://2130706433/",  # 127.0.0.1 written as one number
        "http://[::1/",
        "http://127.0.0.1\\@93.184.216.34/",  # urllib3 would connect to 127.0.0.1
        "http://93.184.216.34 @127.0.0.1/",
    ],
)
def test_check_url_refuses_unsafe_links(url: str) -> None:
    error = _raises(check_url, url, allow_private=False)
    assert error.code == "unsupported_source"


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1/x", "http://localhost:8000/x", "http://[::1]/", "http://10.0.0.5/"]
)
def test_check_url_allows_private_when_told(url: str) -> None:
    check_url(url, allow_private=True)


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://[fd00:ec2::254]/",
        "http://100.100.100.200/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://[::ffff:169.254.169.254]/",
    ],
)
def test_check_url_always_refuses_cloud_metadata(url: str) -> None:
    error = _raises(check_url, url, allow_private=True)
    assert error.code == "unsupported_source"


@pytest.mark.parametrize("url", ["http://93.184.216.34/", "https://[2606:4700::1111]/clip.mp4"])
def test_check_url_allows_public_addresses(url: str) -> None:
    check_url(url, allow_private=False)  # only judges the address; nothing is fetched


def test_check_url_reports_unresolvable_hosts() -> None:
    # A label over 63 characters fails inside the resolver call, without asking any DNS server.
    error = _raises(check_url, f"http://{'x' * 64}.example/", allow_private=False)
    assert error.code == "source_unavailable"
    assert error.message.startswith("Could not resolve host")
    assert error.hint == "check the URL and your connection"


# --- downloads with yt-dlp ---------------------------------------------------------------------


def test_server_answers_range_requests(server: str, media: Path) -> None:
    request = urllib.request.Request(f"{server}/clip.wav", headers={"Range": "bytes=4-11"})
    with urllib.request.urlopen(request) as response:
        assert response.status == 206
        assert response.read() == (media / "clip.wav").read_bytes()[4:12]


def test_download_serves_a_playable_file(server: str, clip: Clip, tmp_path: Path) -> None:
    progress: list[float] = []
    fetched = download(
        f"{server}/clip.mp4", tmp_path, allow_private=True, on_progress=progress.append
    )
    assert fetched.path.is_file() and fetched.path.parent == tmp_path
    assert fetched.title
    assert probe(fetched.path).duration == pytest.approx(clip.duration, abs=0.2)
    assert progress and progress[-1] == pytest.approx(1.0)
    assert progress == sorted(progress)


def test_download_refuses_private_hosts(server: str, tmp_path: Path) -> None:
    error = _raises(download, f"{server}/clip.mp4", tmp_path / "out", allow_private=False)
    assert error.code == "unsupported_source"
    assert not (tmp_path / "out").exists()


def test_download_refuses_links_that_parsers_read_differently(server: str, tmp_path: Path) -> None:
    # urlsplit sees the public host after "@"; the HTTP client would connect to our server.
    error = _raises(download, f"{server}\\@93.184.216.34/clip.mp4", tmp_path, allow_private=False)
    assert error.code == "unsupported_source"
    assert not any(tmp_path.iterdir())


def test_download_of_a_missing_file(server: str, tmp_path: Path) -> None:
    error = _raises(download, f"{server}/gone.mp4?token=SECRET", tmp_path, allow_private=True)
    assert error.code == "source_unavailable"
    assert "404" in error.message
    assert "SECRET" not in error.message and "Traceback" not in error.message


def test_download_of_a_page_without_video(server: str, tmp_path: Path) -> None:
    error = _raises(download, f"{server}/no-video.html", tmp_path, allow_private=True)
    assert error.code == "unsupported_source"


def test_download_from_a_closed_port_fails_fast(tmp_path: Path) -> None:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    started = time.monotonic()
    error = _raises(download, f"http://127.0.0.1:{port}/clip.mp4", tmp_path, allow_private=True)
    # Hang guard: a refused connection is not retried for long (idle, well under a second).
    assert time.monotonic() - started < HANG_GUARD_S
    assert error.code == "source_unavailable"
    assert "refused" in error.message


def test_download_from_a_silent_server_times_out(tmp_path: Path) -> None:
    # Listening but never accepting: the connection opens, and no answer ever comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/clip.mp4"
        started = time.monotonic()
        error = _raises(download, url, tmp_path, allow_private=True, socket_timeout=1)
    # Hang guard, and below the default 30 s socket timeout: the 1 s given is honoured (idle:
    # about 1.1 s).
    assert time.monotonic() - started < HANG_GUARD_S
    assert error.code == "source_unavailable"
    assert "did not answer" in error.message


def test_extract_lists_a_pages_tracks_and_the_download_reuses_it(
    server: str, clip: Clip, tmp_path: Path
) -> None:
    info = extract(f"{server}/page.html", allow_private=True)
    assert info["subtitles"] == {"en": [{"url": f"{server}/en.vtt", "ext": "vtt"}]}
    fetched = download(f"{server}/page.html", tmp_path, allow_private=True, info=info)
    assert probe(fetched.path).duration == pytest.approx(clip.duration, abs=0.2)
    error = _raises(extract, f"{server}/page.html", allow_private=False)
    assert error.code == "unsupported_source"


def test_fetch_bytes_goes_through_the_guard(server: str, media: Path) -> None:
    url = f"{server}/en.vtt"
    assert fetch_bytes(url, allow_private=True) == (media / "en.vtt").read_bytes()
    assert _raises(fetch_bytes, url, allow_private=False).code == "unsupported_source"
    missing = _raises(fetch_bytes, f"{server}/gone.vtt?sig=SECRET", allow_private=True)
    assert missing.code == "source_unavailable" and "404" in missing.message
    assert "SECRET" not in missing.message
    too_big = _raises(fetch_bytes, url, allow_private=True, max_bytes=10)
    assert too_big.code == "bad_input"


# --- uploads -----------------------------------------------------------------------------------


def test_write_audio_b64_roundtrip(media: Path, tmp_path: Path) -> None:
    original = (media / "clip.wav").read_bytes()
    # Line-wrapped base64 (as `base64` and many clients write it) is accepted too.
    for encoded in (base64.b64encode(original).decode(), base64.encodebytes(original).decode()):
        path = write_audio_b64(encoded, tmp_path)
        assert path.read_bytes() == original
        assert probe(path).has_audio
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary files left


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("not base64 at all!", "not valid base64"),
        ("QUJDR", "not valid base64"),  # truncated
        ("", "empty"),
        (base64.b64encode(b"x" * 2000).decode(), "too large"),
    ],
    ids=["garbage", "truncated", "empty", "too-large"],
)
def test_write_audio_b64_refuses_bad_payloads(payload: str, expected: str, tmp_path: Path) -> None:
    error = _raises(write_audio_b64, payload, tmp_path, max_bytes=1000)
    assert error.code == "bad_input"
    assert expected in error.message
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def _raises(function: Callable[..., object], *args: object, **kwargs: object) -> SubtideError:
    with pytest.raises(SubtideError) as caught:
        function(*args, **kwargs)
    return caught.value


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
