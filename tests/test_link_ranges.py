"""Time ranges of a link: what a Source accepts, how much audio a range decodes, and how much of
a served file a range reads. A ranged link is read through the relay (engine.relay) by ffmpeg,
with real yt-dlp and media served on 127.0.0.1 by a server that counts what it sends; the
relay's requests go through the URL guard like any other."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from pydantic import ValidationError

from cloud.detect import Kind, Target
from cloud.serverless import ServerlessBackend
from engine import media
from engine.protocol import (
    ErrorEvent,
    Event,
    JobSpec,
    ProgressEvent,
    ResultEvent,
    Source,
    SubtideError,
)
from tests.support.http_server import Traffic, serve, serve_directory
from tests.support.runpod_standin import StandIn, serve_runpod
from tests.support.runpod_workers import WorkerPool
from tests.support.ssrf import Resolver, site
from tests.support.synth import Clip, fixture_dir, synthesize
from tests.support.timing import HANG_GUARD_S, JOB_HANG_GUARD_S
from tests.support.wer import wer, words

MODEL = "bundled:tiny.en"
QUARTER_S = 60.0
# The long video's quarters: the dialogue is the second; the others say words it never does.
WEATHER = [
    ("en-us", "Good afternoon, this is the forecast."),
    ("en-us", "It will be sunny in the west and windy in the north."),
    ("en-us", "Take an umbrella if you go out tonight."),
]
TRAIN = [
    ("en-us", "The train to the airport leaves from platform four."),
    ("en-us", "Please show your ticket at the gate."),
    ("en-us", "The next station is the harbour."),
]
OVEN = [
    ("en-us", "Heat the oven to two hundred degrees."),
    ("en-us", "Chop the onions and fry them in butter."),
    ("en-us", "Follow the recipe and bake it for an hour."),
]
ELSEWHERE = {"sunny", "umbrella", "platform", "ticket", "station", "oven", "onions", "recipe"}


def test_a_range_is_for_links_only_and_starts_before_it_ends():
    assert Source(url="https://example.com/v", start=30.0, end=60.0).ranged
    assert Source(url="https://example.com/v", end=60.0).ranged
    assert not Source(url="https://example.com/v").ranged
    for bad in (
        {"path": "talk.mp4", "start": 1.0},
        {"url": "https://example.com/v", "start": 60.0, "end": 30.0},
        {"url": "https://example.com/v", "start": -1.0},
    ):
        with pytest.raises(ValidationError):
            Source(**bad)


def test_only_the_range_is_decoded(clips):
    short: Clip = clips.short
    whole = media.decode_audio(short.wav)
    part = media.decode_audio(short.wav, start=1.0, end=2.5)
    assert len(part) == pytest.approx(1.5 * 16000, abs=160)
    # Seeking in the file lands on the same samples as cutting the whole decode.
    assert abs(part[:8000] - whole[16000:24000]).max() < 1e-3
    tail = media.decode_audio(short.wav, start=1.0)
    assert len(tail) == pytest.approx(len(whole) - 16000, abs=160)


# --- a long video, served: what a range reads -------------------------------------------------


@pytest.fixture(scope="module")
def long_video(clips) -> Path:
    """Four minutes of video (a moving test picture, so most bytes are video, as on a video
    site), its speech in four one-minute quarters: weather, the dialogue, a train, an oven."""
    folder = fixture_dir()
    out = folder / "ranges_long_v1.mp4"
    if out.is_file() and out.stat().st_mtime >= clips.dialogue.wav.stat().st_mtime:
        return out
    quarters = [
        synthesize(WEATHER, folder, "ranges_weather", gap=0.7).wav,
        clips.dialogue.wav,
        synthesize(TRAIN, folder, "ranges_train", gap=0.7).wav,
        synthesize(OVEN, folder, "ranges_oven", gap=0.7).wav,
    ]
    padded = ";".join(f"[{i}:a]apad=whole_dur={QUARTER_S:g}[a{i}]" for i in range(4))
    joined = f"{padded};[a0][a1][a2][a3]concat=n=4:v=0:a=1[a]"
    picture = f"testsrc2=s=320x240:r=10:d={4 * QUARTER_S:g}"
    command = ["ffmpeg", "-nostdin", "-v", "error", "-y"]
    command += [arg for wav in quarters for arg in ("-i", str(wav))]
    command += ["-f", "lavfi", "-i", picture, "-filter_complex", joined]
    command += ["-map", "4:v", "-map", "[a]", "-c:v", "libx264", "-preset", "ultrafast"]
    command += ["-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k", "-t", f"{4 * QUARTER_S:g}"]
    partial = out.with_name(f".{out.name}.{os.getpid()}.part")
    subprocess.run([*command, "-f", "mp4", str(partial)], check=True, capture_output=True)
    os.replace(partial, out)
    return out


def ranged(url: str, start: float | None, end: float | None) -> JobSpec:
    return JobSpec(source=Source(url=url, start=start, end=end), whisper_model=MODEL)


def result_of(events: list[Event]) -> ResultEvent:
    assert isinstance(events[-1], ResultEvent), events[-1]
    return events[-1]


def heard(result: ResultEvent) -> list[str]:
    return words(" ".join(cue.text for cue in result.cues))


def test_a_quarter_of_a_long_link_reads_well_under_half_of_it_and_hears_its_own_speech(
    long_video, clips, engine
):
    traffic = Traffic()
    with serve_directory(long_video.parent, traffic=traffic) as base:
        url = f"{base}/{long_video.name}"
        events = list(engine.run(ranged(url, QUARTER_S, 2 * QUARTER_S)))

    result = result_of(events)
    # yt-dlp looks at the link once; then the relay asks for the header, the index and the
    # range, in bounded chunks: not the whole file.
    assert traffic.bytes_sent < 0.5 * long_video.stat().st_size, traffic
    assert traffic.ranges[0] == ""
    assert all(re.fullmatch(r"bytes=\d+-\d+", asked) for asked in traffic.ranges[1:])
    # The range's speech and only it, on the range's clock (from its start).
    assert wer(clips.dialogue.script, " ".join(heard(result))) < 0.25, heard(result)
    assert not ELSEWHERE & set(heard(result))
    first = clips.dialogue.sentences[0]
    assert result.cues[0].start == pytest.approx(first.start, abs=0.5)
    assert result.duration == pytest.approx(QUARTER_S, abs=0.5)
    assert not [e for e in events if isinstance(e, ProgressEvent) and e.notice]


def test_a_bare_links_length_is_read_from_its_header_not_its_media(long_video):
    traffic = Traffic()
    with serve_directory(long_video.parent, traffic=traffic) as base:
        url = f"{base}/{long_video.name}"
        info = media.extract(url, allow_private=True)
        assert not info.get("duration")  # a bare media file: the page says nothing
        read_by_yt_dlp = traffic.bytes_sent
        seconds = media.link_duration(url, allow_private=True, info=info)

    assert seconds == pytest.approx(4 * QUARTER_S, abs=0.1)
    assert traffic.bytes_sent - read_by_yt_dlp < 0.1 * long_video.stat().st_size, traffic


def test_a_server_that_ignores_range_gets_the_whole_download_and_the_range_is_heard(
    clips, engine, tmp_path
):
    (tmp_path / "dialogue.mp4").symlink_to(clips.dialogue_mp4)
    traffic = Traffic()
    with serve_directory(tmp_path, traffic=traffic, ranges=False) as base:
        events = list(engine.run(ranged(f"{base}/dialogue.mp4", 20.0, 30.0)))

    result = result_of(events)
    assert traffic.bytes_sent >= clips.dialogue_mp4.stat().st_size  # downloaded whole
    notes = [e.message for e in events if isinstance(e, ProgressEvent)]
    assert "This link can't be read by time range: downloading it whole" in notes
    said = {w for s in clips.dialogue.sentences if 20 < s.start < s.end < 30 for w in words(s.text)}
    assert said and len(said & set(heard(result))) >= 0.8 * len(said), heard(result)
    assert result.duration == pytest.approx(10.0, abs=0.2)


def test_a_cancel_stops_the_ranged_read_and_the_relay(long_video, engine):
    traffic = Traffic()
    events: list[Event] = []
    with serve_directory(long_video.parent, traffic=traffic, rate=400_000) as base:
        spec = ranged(f"{base}/{long_video.name}", QUARTER_S, 2 * QUARTER_S)
        reader = threading.Thread(target=lambda: events.extend(engine.run(spec)), daemon=True)
        reader.start()
        deadline = time.monotonic() + HANG_GUARD_S
        while not any(_reading(e) for e in list(events)) and time.monotonic() < deadline:
            time.sleep(0.05)
        engine.cancel()
        reader.join(HANG_GUARD_S)
        time.sleep(0.5)  # a write the server made before it saw the relay hang up
        sent = traffic.bytes_sent
        time.sleep(0.5)

        assert not reader.is_alive()
        assert isinstance(events[-1], ErrorEvent) and events[-1].code == "cancelled", events[-1]
        assert traffic.bytes_sent == sent  # nothing reads the media any more
        assert sent < 0.5 * long_video.stat().st_size
        assert not [t for t in threading.enumerate() if t.name == "media-relay"]


def _reading(event: Event) -> bool:
    return isinstance(event, ProgressEvent) and event.stage == "download" and event.percent > 0


# --- the guard: every request the relay makes is judged ---------------------------------------


def _first_byte_here_then_elsewhere(
    media_file: Path, elsewhere: str
) -> type[BaseHTTPRequestHandler]:
    """A server for `media_file` that answers a plain GET (yt-dlp reading the link) and the
    relay's first one-byte question itself, and redirects every other range to `elsewhere`."""
    data = media_file.read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            asked = self.headers.get("Range")
            if asked not in (None, "bytes=0-0"):
                self.send_response(HTTPStatus.FOUND)
                self.send_header("Location", f"{elsewhere}/{media_file.name}")
                self.end_headers()
                return
            body = data[:1] if asked else data
            self.send_response(HTTPStatus.PARTIAL_CONTENT if asked else HTTPStatus.OK)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(len(body)))
            if asked:
                self.send_header("Content-Range", f"bytes 0-0/{len(data)}")
            self.end_headers()
            self.wfile.write(body)

    return Handler


@pytest.fixture
def redirected_to(clips) -> Iterator[tuple[Callable[[str], str], Traffic]]:
    """Links whose ranges are redirected to a host the test names, on the port where the
    media really is; and what reached that port."""
    traffic = Traffic()
    with ExitStack() as stack:
        target = stack.enter_context(serve_directory(clips.short_mp4.parent, traffic=traffic))
        port = urlsplit(target).port

        def link(host: str) -> str:
            handler = _first_byte_here_then_elsewhere(clips.short_mp4, f"http://{host}:{port}")
            return stack.enter_context(serve(handler)) + f"/{clips.short_mp4.name}"

        yield link, traffic


def test_a_redirect_from_the_relay_to_a_refused_host_is_refused_and_sends_it_nothing(
    redirected_to, tmp_path
):
    link, traffic = redirected_to
    # Both names lead to the media's server; only the metadata name is refused (cloud metadata
    # is refused even where private addresses are allowed).
    resolver = Resolver({"media.test": ["127.0.0.1"], "metadata.google.internal": ["127.0.0.1"]})

    part = media.download_range(
        link("media.test"), tmp_path, start=1.0, end=3.0, allow_private=True, resolver=resolver
    )
    assert part is not None and media.probe(part.path).duration == pytest.approx(2.0, abs=0.05)
    assert traffic.ranges  # the harness does route the relay's redirects to the media

    traffic.ranges.clear()
    with pytest.raises(SubtideError) as refused:
        media.download_range(
            link("metadata.google.internal"),
            tmp_path,
            start=1.0,
            end=3.0,
            allow_private=True,
            resolver=resolver,
        )
    assert refused.value.code == "unsupported_source"
    assert refused.value.message.startswith("Refusing to download from metadata.google.internal")
    assert traffic.ranges == []


def test_a_playlist_posing_as_a_media_file_does_not_send_ffmpeg_elsewhere(tmp_path):
    # An HLS playlist served as an .mp4: ffmpeg's own HLS reader would fetch its segment from
    # wherever it points, past the relay. Only the relay's one address is ever read.
    with site() as target, serve_directory(tmp_path) as base:
        playlist = ["#EXTM3U", "#EXT-X-TARGETDURATION:2", "#EXTINF:2.0,", f"{target.url}/seg0.ts"]
        (tmp_path / "fake.mp4").write_text("\n".join([*playlist, "#EXT-X-ENDLIST", ""]))
        url = f"{base}/fake.mp4"
        plain = ["ffprobe", "-v", "error", "-protocol_whitelist", "http,tcp", "-i", url]
        subprocess.run(plain, capture_output=True, timeout=HANG_GUARD_S)
        assert target.requests == ["/seg0.ts"]  # the hole: ffmpeg alone would follow it

        target.requests.clear()
        part = media.download_range(url, tmp_path / "out", start=1.0, end=2.0, allow_private=True)
        assert part is None  # left to the whole download, which ffmpeg reads as a local file
        assert media.link_duration(url, allow_private=True) == 0.0
    assert target.requests == []


# --- fan-out: a bare media link is cut into ranges by its length ------------------------------

ENDPOINT = "ep-ranges"
API_KEY = "rpa_ranges"


@pytest.fixture(scope="module")
def standin() -> Iterator[StandIn]:
    with serve_runpod(api_key=API_KEY, endpoint_id=ENDPOINT) as server:
        yield server


@pytest.fixture(scope="module")
def workers(standin, tmp_path_factory) -> Iterator[WorkerPool]:
    pool = WorkerPool(standin, ENDPOINT, tmp_path_factory.mktemp("workers"), model=MODEL)
    try:
        pool.ensure(["worker-a", "worker-b"])
        yield pool
    finally:
        pool.stop()


@pytest.mark.slow
def test_a_long_bare_media_link_fans_out_into_ranges(standin, workers, clips, tmp_path):
    dialogue = clips.dialogue  # 53 s: three ranges of about 18 s
    (tmp_path / "dialogue.mp4").symlink_to(clips.dialogue_mp4)
    target = Target.assume(Kind.SERVERLESS, f"{standin.url}/v2/{ENDPOINT}")
    backend = ServerlessBackend(target.url, API_KEY, target=target, chunk_s=20.0, poll_s=0.2)
    with serve_directory(tmp_path) as base:
        url = f"{base}/dialogue.mp4"  # the media itself: no page states its length
        started = time.monotonic()
        events = list(backend.run(JobSpec(source=Source(url=url), whisper_model=MODEL)))
    assert time.monotonic() - started < JOB_HANG_GUARD_S

    remote = result_of(events)
    jobs = sorted(standin.jobs.values(), key=lambda job: job.submitted)
    assert len(jobs) == 3 and {job.status for job in jobs} == {"COMPLETED"}
    sources = [job.input["source"] for job in jobs]
    assert {source["url"] for source in sources} == {url}
    assert "start" not in sources[0] and "end" not in sources[-1]
    assert sources[0]["end"] > sources[1]["start"] and sources[1]["end"] > sources[2]["start"]
    assert remote.duration == pytest.approx(dialogue.duration, abs=0.1)
    assert wer(dialogue.script, " ".join(heard(remote))) < 0.25, heard(remote)
