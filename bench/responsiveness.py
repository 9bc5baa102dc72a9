"""How quickly Subtide answers: start-up, a cached rerun, and /ping while 20 jobs run.

The test suite checks that these behave (no heavy import, nothing transcribed twice, every ping
answered while jobs run); this measures how fast they are, each against a baseline taken here:

1. `subtide --help` against `python -c pass` (the interpreter's own start-up), fresh processes.
2. `Engine.run` on the short clip served from the transcript cache, against transcribing it.
3. `/ping` answered by `subtide serve`'s app while 20 jobs run (2 engines, no transcript cache,
   so each job really transcribes), against the same pings on the idle server.

    python bench/responsiveness.py [--runs 5] [--model bundled:tiny.en]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.config import Settings  # noqa: E402
from app.server import ServerOptions, create_app  # noqa: E402
from engine.pipeline import Engine, EngineOptions  # noqa: E402
from engine.protocol import JobSpec, Source  # noqa: E402
from tests.support.api_server import Ping, pinging, running, wait_ready  # noqa: E402
from tests.support.http_server import serve_directory  # noqa: E402
from tests.support.synth import DIALOGUE_EN, fixture_dir, synthesize, to_mp4  # noqa: E402

JOBS = 20
PING_TIMEOUT_S = 60.0


def process_seconds(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def job_seconds(engine: Engine, wav: Path) -> tuple[float, list]:
    start = time.perf_counter()
    events = list(engine.run(JobSpec(source=Source(path=str(wav)), formats=["srt"])))
    elapsed = time.perf_counter() - start
    if events[-1].type != "result":
        raise SystemExit(f"job failed: {events[-1]}")
    return elapsed, events


def cached_against_fresh(model: str, wav: Path, runs: int) -> tuple[float, float]:
    fresh, cached = [], []
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(EngineOptions(cache_dir=Path(tmp), whisper_model=model))
        job_seconds(engine, wav)  # warm-up: loads the model
        for _ in range(runs):
            shutil.rmtree(Path(tmp) / "transcripts", ignore_errors=True)
            fresh.append(job_seconds(engine, wav)[0])
            seconds, events = job_seconds(engine, wav)
            if not any("cached transcript" in (getattr(e, "message", "") or "") for e in events):
                raise SystemExit("the rerun did not use the transcript cache")
            cached.append(seconds)
    return statistics.median(fresh), statistics.median(cached)


async def _one_job(client: httpx.AsyncClient, url: str) -> None:
    created = await client.post("/api/jobs", json={"source": {"url": url}})
    async with client.stream("GET", f"/api/jobs/{created.json()['id']}/events") as response:
        async for _ in response.aiter_lines():
            pass


async def _jobs(base: str, url: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=600) as client:
        await asyncio.gather(*(_one_job(client, url) for _ in range(JOBS)))


def pings_idle_and_loaded(model: str, mp4: Path, idle_s: float) -> tuple[list[Ping], list[Ping]]:
    with tempfile.TemporaryDirectory() as tmp, serve_directory(mp4.parent) as media:
        settings = Settings(
            whisper_model=model, cache_dir=Path(tmp), subtide_allow_private_urls=True
        )
        options = replace(settings.engine_options(serves_others=True), use_cache=False)
        server = ServerOptions(engine_concurrency=2, rate_limit_per_minute=0)
        app = create_app(
            settings, engine_factory=lambda: Engine(options), mount_ui=False, server_options=server
        )
        with running(app) as base, httpx.Client(base_url=base, timeout=60) as client:
            wait_ready(client)
            with pinging(base, PING_TIMEOUT_S) as idle:
                time.sleep(idle_s)
            with pinging(base, PING_TIMEOUT_S) as loaded:
                started = time.monotonic()
                asyncio.run(_jobs(base, f"{media}/{mp4.name}"))
                finished = time.monotonic()
    during = [p for p in loaded if started <= p.sent and p.answered <= finished]
    return idle, during


def latency_ms(pings: list[Ping]) -> tuple[float, float]:
    if not pings or any(p.status != "200" for p in pings):
        raise SystemExit(f"a ping failed: {[p.status for p in pings if p.status != '200']}")
    seconds = [p.answered - p.sent for p in pings]
    return 1000 * statistics.median(seconds), 1000 * max(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--model", default="bundled:tiny.en")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    bare = statistics.median(process_seconds("-c", "pass") for _ in range(args.runs))
    help_s = statistics.median(process_seconds("-m", "app.cli", "--help") for _ in range(args.runs))
    print(f"python -c pass {bare:.3f} s, subtide --help {help_s:.3f} s (median of {args.runs})")
    print(f"  start-up added by subtide: {help_s - bare:.3f} s  (goal < 1 s)")

    short = synthesize([DIALOGUE_EN[i] for i in (0, 5, 2)], fixture_dir(), "short_en", gap=0.7)
    fresh, cached = cached_against_fresh(args.model, short.wav, args.runs)
    print(f"short clip ({short.duration:.1f} s): transcribed {fresh:.2f} s, cached {cached:.3f} s")
    print(f"  ratio cached/transcribed: {cached / fresh:.3f}  (goal <= 0.2)")

    mp4 = short.wav.with_suffix(".mp4")
    if not mp4.is_file():
        to_mp4(short.wav, mp4)
    idle, during = pings_idle_and_loaded(args.model, mp4, idle_s=2.0)
    idle_median, idle_max = latency_ms(idle)
    load_median, load_max = latency_ms(during)
    print(f"/ping idle: median {idle_median:.1f} ms, slowest {idle_max:.1f} ms ({len(idle)} pings)")
    print(
        f"/ping while {JOBS} jobs run: median {load_median:.1f} ms, slowest {load_max:.1f} ms "
        f"({len(during)} pings)"
    )
    print(
        f"  ratio loaded/idle (medians): {load_median / idle_median:.1f}  "
        f"(goal: slowest under load < 100 ms)"
    )


if __name__ == "__main__":
    main()
