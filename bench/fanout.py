"""What cutting a long file into parallel serverless jobs buys, and what the remote path costs.

One file of synthesised speech (the dialogue in several voices and speeds, joined by ffmpeg),
three kinds of run in one session, taken in turn `--runs` times (medians are compared):

- baseline: `Engine.run` of the file in this process;
- remote, 1 worker: `ServerlessBackend.run` through the RunPod stand-in, one worker process;
- remote, N workers: the same with N worker processes (4 by default).

Every run uses one CPU thread (OMP_NUM_THREADS=1), as every worker has one device of its own;
workers are real (`runpod/start.sh`: the runpod SDK's worker loop and our handler) and warm
before the clock starts, and their cache is emptied before each run, so no run reuses another's
transcripts. The file is cut into parts of `--chunk-s` so N workers have work.

With `--link`, the remote runs get the speech as a link instead: an M4A (AAC, what video sites
serve as audio; `--ext mp3` for an MP3) served over HTTP on 127.0.0.1 behind a page that states
its duration (JSON-LD, as video sites do), so the client plans time ranges from the page and
each worker reads only its range of the media (engine.relay). `--bare` sends the media's own
link: the client reads its length from the media's header. The server counts the bytes it
sends in each run: what the workers read (and the client's look at the link), beside what a
whole download per worker would cost.

    python bench/fanout.py [--minutes 10] [--workers 4] [--chunk-s 160] [--model bundled] [--runs 1]
    python bench/fanout.py --link [--bare] [--ext m4a] --minutes 5 --chunk-s 75

Goals: remote with N workers at least 0.8 × min(N, cores) times as fast as with 1 worker; the
1-worker run at most 1.15 × the local run.
"""

from __future__ import annotations

# Before ctranslate2 loads: it reads the thread count once.
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cloud.detect import Kind, Target  # noqa: E402
from cloud.serverless import ServerlessBackend  # noqa: E402
from engine.pipeline import Engine, EngineOptions  # noqa: E402
from engine.protocol import JobSpec, ResultEvent, Source  # noqa: E402
from tests.support.http_server import Traffic, serve_directory  # noqa: E402
from tests.support.runpod_standin import serve_runpod  # noqa: E402
from tests.support.runpod_workers import WorkerPool  # noqa: E402
from tests.support.synth import DIALOGUE_EN, fixture_dir, synthesize  # noqa: E402
from tests.support.wer import wer  # noqa: E402

ENDPOINT = "ep-bench"
API_KEY = "rpa_bench"
# Variants of the dialogue, so the file is not one clip over and over: speed, voices swapped.
VARIANTS = [(160, False), (140, True), (180, False), (150, True), (170, False), (190, True)]


def long_clip(minutes: float) -> tuple[Path, float, str]:
    """The dialogue in turns of voice and speed, joined until it lasts `minutes` (cached):
    the file, its length and its script."""
    folder = fixture_dir()
    out = folder / f"bench_fanout_{minutes:g}min.wav"
    clips, total = [], 0.0
    while total < minutes * 60:
        speed, swapped = VARIANTS[len(clips) % len(VARIANTS)]
        lines = [(_swap(voice) if swapped else voice, text) for voice, text in DIALOGUE_EN]
        clip = synthesize(lines, folder, f"bench_dialogue_{speed}_{int(swapped)}", speed=speed)
        clips.append(clip.wav)
        total += clip.duration
    if not out.is_file():
        listing = folder / f".{out.stem}.txt"
        listing.write_text("".join(f"file '{wav}'\n" for wav in clips))
        partial = out.with_name(f".{out.name}.part")
        concat = ["-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", "-f", "wav"]
        subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-y", *concat, str(partial)], check=True
        )
        os.replace(partial, out)
    script = " ".join(text for _, text in DIALOGUE_EN)
    return out, total, " ".join([script] * len(clips))


def _swap(voice: str) -> str:
    return {"en+m3": "en+f3", "en+f3": "en+m3"}.get(voice, voice)


def spec_for(wav: Path, model: str) -> JobSpec:
    # The title the serverless client sends for a file (its stem), here too: same decoding.
    return JobSpec(source=Source(path=str(wav), title=wav.stem), whisper_model=model)


def serve_link(stack: ExitStack, wav: Path, link: Link) -> str:
    """The speech as a link: `link.ext` audio (encoded once, cached) served on 127.0.0.1,
    counting what is sent, behind a page whose JSON-LD gives its duration (or bare); the URL."""
    audio = wav.with_suffix(f".{link.ext}")
    if not audio.is_file():
        partial = audio.with_name(f".{audio.name}.part")
        codec = ["-c:a", "aac"] if link.ext == "m4a" else []
        encode = ["-i", str(wav), "-ac", "1", *codec, "-b:a", "64k", "-f", link.muxer]
        subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-y", *encode, str(partial)], check=True
        )
        os.replace(partial, audio)
    link.folder.mkdir(parents=True, exist_ok=True)
    (link.folder / audio.name).symlink_to(audio)
    link.size = audio.stat().st_size
    base = stack.enter_context(serve_directory(link.folder, traffic=link.traffic))
    if link.bare:
        return f"{base}/{audio.name}"
    page = {
        "@context": "https://schema.org",
        "@type": "VideoObject",
        "name": "Planning a summer holiday",  # the title primes Whisper, as for any link
        "uploadDate": "2024-01-01",
        "contentUrl": f"{base}/{audio.name}",
        "duration": f"PT{int(link.duration)}S",
    }
    script = f'<script type="application/ld+json">{json.dumps(page)}</script>'
    (link.folder / "watch.html").write_text(f"<html><head>{script}</head><body></body></html>")
    return f"{base}/watch.html"


@dataclass
class Link:
    """How the remote runs get the speech as a link, and what its server sent."""

    folder: Path
    duration: float
    ext: str
    bare: bool
    traffic: Traffic = field(default_factory=Traffic)
    size: int = 0  # the media file's bytes

    @property
    def muxer(self) -> str:
        return "ipod" if self.ext == "m4a" else self.ext


class Local:
    """The baseline: the engine in this process, its model loaded once."""

    def __init__(self, model: str, cache_dir: Path) -> None:
        self.model = model
        self.engine = Engine(
            EngineOptions(whisper_model=model, cache_dir=cache_dir, use_cache=False)
        )
        self.engine.warm()

    def run(self, wav: Path) -> tuple[float, ResultEvent]:
        start = time.perf_counter()
        events = list(self.engine.run(spec_for(wav, self.model)))
        return time.perf_counter() - start, _result(events, "local")


class Remote:
    """An endpoint (the stand-in) with `workers` warm worker processes."""

    def __init__(self, stack: ExitStack, model: str, workers: int, home: Path) -> None:
        self.model, self.workers = model, workers
        self.standin = stack.enter_context(serve_runpod(api_key=API_KEY, endpoint_id=ENDPOINT))
        self.pool = WorkerPool(self.standin, ENDPOINT, home / f"{workers}-workers", model=model)
        stack.callback(self.pool.stop)
        self.pool.ensure([f"worker-{i}" for i in range(workers)])

    def run(self, spec: JobSpec, chunk_s: float) -> tuple[float, ResultEvent]:
        self.pool.forget()  # no transcript or download of an earlier run is reused
        target = Target.assume(Kind.SERVERLESS, f"{self.standin.url}/v2/{ENDPOINT}")
        backend = ServerlessBackend(target.url, API_KEY, target=target, chunk_s=chunk_s)
        start = time.perf_counter()
        events = list(backend.run(spec))
        elapsed = time.perf_counter() - start
        return elapsed, _result(events, f"{self.workers} worker(s)")

    def busy(self) -> int:
        """How many of the workers have taken a part so far."""
        return len({job.worker for job in self.standin.jobs.values() if job.worker})


def _result(events: list, what: str) -> ResultEvent:
    if not isinstance(events[-1], ResultEvent):
        raise SystemExit(f"{what} failed: {events[-1]}")
    return events[-1]


def _text(result: ResultEvent) -> str:
    return " ".join(cue.text for cue in result.cues)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--chunk-s", type=float, default=160)
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--runs", type=int, default=1, help="rounds of the three runs (medians)")
    parser.add_argument("--link", action="store_true", help="remote runs get it as a link")
    parser.add_argument("--bare", action="store_true", help="the link is the media itself")
    parser.add_argument("--ext", choices=["m4a", "mp3"], default="m4a", help="the link's media")
    args = parser.parse_args()

    wav, audio_s, script = long_clip(args.minutes)
    cores = os.cpu_count() or 1
    times: dict[str, list[float]] = {"local": [], "one": [], "many": []}
    served: dict[str, list[int]] = {"one": [], "many": []}  # bytes the link's server sent
    with tempfile.TemporaryDirectory(prefix="subtide-bench-") as tmp, ExitStack() as stack:
        home = Path(tmp)
        local = Local(args.model, home / "local-cache")
        one = Remote(stack, args.model, 1, home)
        many = Remote(stack, args.model, args.workers, home)
        remote = spec_for(wav, args.model)
        link = Link(home / "site", audio_s, args.ext, args.bare)
        if args.link:
            url = serve_link(stack, wav, link)
            remote = JobSpec(source=Source(url=url), whisper_model=args.model)
        for _ in range(args.runs):  # alternated, so drift in the machine's speed hits all three
            seconds, local_result = local.run(wav)
            times["local"].append(seconds)
            mark = link.traffic.bytes_sent
            seconds, one_result = one.run(remote, args.chunk_s)
            times["one"].append(seconds)
            served["one"].append(link.traffic.bytes_sent - mark)
            mark = link.traffic.bytes_sent
            seconds, many_result = many.run(remote, args.chunk_s)
            times["many"].append(seconds)
            served["many"].append(link.traffic.bytes_sent - mark)
        parts = len(one.standin.jobs) // args.runs
        busy = {"one": one.busy(), "many": many.busy()}

    local_s, one_s, many_s = (statistics.median(times[k]) for k in ("local", "one", "many"))
    goal = 0.8 * min(args.workers, cores)
    sent = f"a link ({args.ext.upper()} over HTTP, time ranges)" if args.link else "the file"
    print(f"file: {audio_s / 60:.1f} min of speech and pauses, model: {args.model}; sent: {sent}")
    print(f"cpu cores: {cores}, parts: {parts} of about {args.chunk_s:g} s, one thread each")
    print(f"runs: {args.runs}, medians of each; all times: " + _all(times))
    print(f"local Engine.run        {local_s:7.1f} s  (RTF {local_s / audio_s:.3f})")
    print(f"serverless, 1 worker    {one_s:7.1f} s")
    print(f"serverless, {args.workers} workers   {many_s:7.1f} s")
    print(f"speed-up {args.workers} workers / 1: {one_s / many_s:.2f}  (goal >= {goal:.2f})")
    print(f"overhead 1 worker / local: {one_s / local_s:.3f}  (goal <= 1.15)")
    if args.link:
        _print_bytes(link, served, busy)
    last = {"local": local_result, "1 worker": one_result, f"{args.workers} workers": many_result}
    for name, result in last.items():
        timings = ", ".join(f"{k} {v:.1f}" for k, v in result.timings.items())
        print(f"  timings (last run), {name}: {timings}")
    # Compressed parts are heard as well as the whole file: the same word error rate.
    errors = ", ".join(f"{name} {wer(script, _text(r)):.3f}" for name, r in last.items())
    print(f"WER against the script: {errors}")


def _print_bytes(link: Link, served: dict[str, list[int]], busy: dict[str, int]) -> None:
    """What the link's server sent per run (medians), per worker that took parts, beside a whole
    download per worker (what each worker fetched before ranges were read by themselves)."""
    print(f"link's media: {link.size / 1e6:.2f} MB ({link.ext}, {'bare' if link.bare else 'page'})")
    for name, label in (("one", "1 worker "), ("many", f"{busy['many']} workers")):
        total = statistics.median(served[name])
        each = total / max(busy[name], 1)
        print(
            f"bytes read, {label}: {total / 1e6:6.2f} MB in all, {each / 1e6:6.2f} MB per worker "
            f"({each / link.size:.0%} of the file; a whole download each: 100%)"
        )


def _all(times: dict[str, list[float]]) -> str:
    return "; ".join(f"{k} " + " ".join(f"{t:.1f}" for t in v) for k, v in times.items())


if __name__ == "__main__":
    main()
