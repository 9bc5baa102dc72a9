"""What the server's guards cost: upload throughput through app.body_guard (every request body
of `subtide serve` passes it) and download throughput through the pinned yt-dlp session
(engine.guarded_ytdlp), each against the same transfer without the guard, in this process.

1. POST a body of --mb MB in 64 KB chunks to an ASGI app that reads and drops it, under uvicorn
   on 127.0.0.1: bare, then wrapped in BodyGuard.
2. yt-dlp downloads a --mb MB file from 127.0.0.1: a stock YoutubeDL, then GuardedYoutubeDL
   (private addresses allowed, so the guard judges and pins each connection but lets it through).

    python bench/upload_guard.py [--mb 200] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.body_guard import BodyGuard, BodyLimits  # noqa: E402
from engine import media  # noqa: E402
from tests.support.api_server import running  # noqa: E402
from tests.support.http_server import serve_directory  # noqa: E402

CHUNK = 64 * 1024


async def drain(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole body, answers its size."""
    if scope["type"] != "http":
        return
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = str(size).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def upload_seconds(app: Any, megabytes: int) -> float:
    def body() -> Iterator[bytes]:
        chunk = b"\0" * CHUNK
        for _ in range(megabytes * 1_000_000 // CHUNK):
            yield chunk

    with running(app) as url, httpx.Client(base_url=url, timeout=600) as client:
        started = time.perf_counter()
        reply = client.post("/", content=body())
        elapsed = time.perf_counter() - started
    assert reply.status_code == 200, reply.text
    return elapsed


def download_seconds(folder: Path, url: str, guarded: bool) -> float:
    import yt_dlp

    out = folder / ("guarded" if guarded else "stock")
    started = time.perf_counter()
    if guarded:
        media.download(url, out, allow_private=True)
    else:
        options = {"outtmpl": str(out / "%(id)s.%(ext)s"), "quiet": True, "noprogress": True}
        with yt_dlp.YoutubeDL(options) as ydl:
            ydl.download([url])
    elapsed = time.perf_counter() - started
    for file in out.iterdir():
        file.unlink()
    return elapsed


def paired(
    runs: int, megabytes: int, baseline: Callable[[], float], guarded: Callable[[], float]
) -> str:
    """Runs the two in turn (so both see the same machine load): their best times, the median
    of the per-run ratios (guarded over baseline), and the added time per 64 KB."""
    pairs = [(baseline(), guarded()) for _ in range(runs)]
    ratio = statistics.median(g / b for b, g in pairs)
    added = statistics.median(g - b for b, g in pairs)
    fastest_b, fastest_g = min(b for b, _ in pairs), min(g for _, g in pairs)
    per_chunk_us = added / (megabytes * 1_000_000 / CHUNK) * 1e6
    at_100_mb_s_us = CHUNK / 100e6 * 1e6
    return (
        f"{fastest_b:.2f} s vs {fastest_g:.2f} s; median ratio {ratio:.2f}; "
        f"{per_chunk_us:.0f} us added per 64 KB (goal: under 5 % of the {at_100_mb_s_us:.0f} us "
        "a 64 KB chunk takes at 100 MB/s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    limits = BodyLimits(max_bytes=10**12, timeout_s=30, min_bytes_per_s=10_000)
    upload = paired(
        args.runs,
        args.mb,
        lambda: upload_seconds(drain, args.mb),
        lambda: upload_seconds(BodyGuard(drain, limits), args.mb),
    )
    print(f"upload {args.mb} MB on 127.0.0.1, bare vs through BodyGuard: {upload}")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "site").mkdir()
        (folder / "site" / "clip.mp3").write_bytes(b"\0" * (args.mb * 1_000_000))
        with serve_directory(folder / "site") as site:
            url = f"{site}/clip.mp3"
            download = paired(
                args.runs,
                args.mb,
                lambda: download_seconds(folder, url, False),
                lambda: download_seconds(folder, url, True),
            )
    print(f"download {args.mb} MB from 127.0.0.1, stock yt-dlp vs guarded: {download}")


if __name__ == "__main__":
    main()
