"""What the pipeline costs against raw faster-whisper on the same clip, in one process.

Baselines, as a user runs them (the model's default threads), consumed to the end:
`WhisperModel.transcribe` (sequential) and `BatchedInferencePipeline.transcribe` (batch 8),
with the engine's own options. Measured: `Engine.run` to the final SRT (decode, filter, cues,
formats, cache write), and when its first cue came. The clip is 60 s unless --minutes.
Runs alternate, medians are compared.
Peak RSS is that of a separate `subtide run` process on the same clip, so the baseline's model
does not count twice. Goals (issue 18): engine <= 0.75x sequential and <= 1.05x batched; the
first cue at <= 15 % of the job.

    python bench/asr_overhead.py [--runs 5] [--model bundled] [--minutes 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.asr import pick_device, resolve_model  # noqa: E402
from engine.media import decode_audio  # noqa: E402
from engine.pipeline import Engine, EngineOptions  # noqa: E402
from engine.protocol import JobSpec, Source  # noqa: E402
from tests.support.synth import DIALOGUE_EN, fixture_dir, synthesize  # noqa: E402


def clip_of(minutes: float) -> Path:
    """The dialogue, over and over, to about `minutes` of speech and pauses (60 s: the dialogue
    twice over, cut by synthesis to about a minute)."""
    if minutes <= 1:
        return synthesize((DIALOGUE_EN * 2)[:15], fixture_dir(), "bench_60s", gap=0.7).wav
    repeats = max(2, round(minutes * 60 / 52))
    return synthesize(DIALOGUE_EN * repeats, fixture_dir(), f"bench_{repeats}x", gap=0.7).wav


def whisper_model(spec: str, cache_dir: Path) -> object:
    from faster_whisper import WhisperModel

    device, compute_type = pick_device()
    path = resolve_model(spec, cache_dir / "models").path
    return WhisperModel(path, device=device, compute_type=compute_type)


_OPTIONS = {"beam_size": 5, "word_timestamps": True, "condition_on_previous_text": False}


def raw_run(model: object, wav: Path) -> float:
    start = time.perf_counter()
    segments, _ = model.transcribe(str(wav), vad_filter=True, **_OPTIONS)  # type: ignore[attr-defined]
    for _ in segments:
        pass
    return time.perf_counter() - start


def batched_run(model: object, wav: Path) -> float:
    from faster_whisper import BatchedInferencePipeline

    start = time.perf_counter()
    pipeline = BatchedInferencePipeline(model)
    segments, _ = pipeline.transcribe(str(wav), batch_size=8, **_OPTIONS)
    for _ in segments:
        pass
    return time.perf_counter() - start


def engine_run(engine: Engine, wav: Path, cache_dir: Path) -> tuple[float, float]:
    """Seconds to the result, and to the first cue."""
    shutil.rmtree(cache_dir / "transcripts", ignore_errors=True)
    start, first = time.perf_counter(), None
    for event in engine.run(JobSpec(source=Source(path=str(wav)), formats=["srt"])):
        if event.type == "cues" and first is None:
            first = time.perf_counter() - start
        if event.type == "error":
            raise SystemExit(f"engine failed: {event}")
    return time.perf_counter() - start, first or 0.0


def peak_rss_mb(wav: Path, model: str, cache_dir: Path) -> float:
    """The larger peak RSS of `subtide run`'s two processes (the CLI's and the model's) on the
    clip, without the cache. Linux keeps a process's peak across exec, and a child spawned from
    this process starts from this process's peak (the baseline's model and all): so a small
    probe starts `subtide run` and reads the peak of its children alone."""
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run(
            [sys.executable, "-c", _PEAK_PROBE, "run", str(wav), "-o", out, "-m", model, "-q"],
            check=True,
            cwd=ROOT,
            env={**os.environ, "CACHE_DIR": str(cache_dir)},
            capture_output=True,
            text=True,
        )
    return int(done.stderr.split()[-1]) / 1024


_PEAK_PROBE = """
import resource, subprocess, sys

subprocess.run([sys.executable, "-m", "app.cli", *sys.argv[1:], "--no-cache"], check=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--minutes", type=float, default=1, help="length of the clip")
    args = parser.parse_args()

    wav = clip_of(args.minutes)
    audio_s = len(decode_audio(wav)) / 16000
    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = Path(tmp)
        raw = whisper_model(args.model, cache_dir)
        engine = Engine(EngineOptions(whisper_model=args.model, cache_dir=cache_dir))
        engine.warm()
        raw_run(raw, wav), engine_run(engine, wav, cache_dir)  # warm-up: page cache, allocators
        raw_times, batched_times, engine_times, firsts = [], [], [], []
        for _ in range(args.runs):
            raw_times.append(raw_run(raw, wav))
            batched_times.append(batched_run(raw, wav))
            took, first = engine_run(engine, wav, cache_dir)
            engine_times.append(took)
            firsts.append(first)
        rss = peak_rss_mb(wav, args.model, cache_dir)

    raw_median = statistics.median(raw_times)
    batched_median = statistics.median(batched_times)
    engine_median, first_median = statistics.median(engine_times), statistics.median(firsts)
    print(f"clip: {audio_s:.1f} s, model: {args.model}, runs: {args.runs}, ", end="")
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"raw sequential      median {raw_median:.2f} s  (RTF {raw_median / audio_s:.3f})")
    print(f"raw batched (8)     median {batched_median:.2f} s")
    print(f"Engine.run to SRT   median {engine_median:.2f} s, first cue at {first_median:.2f} s")
    print(f"ratio engine/sequential: {engine_median / raw_median:.3f}  (goal <= 0.75)")
    print(f"ratio engine/batched:    {engine_median / batched_median:.3f}  (goal <= 1.05)")
    print(f"first cue / job:         {first_median / engine_median:.3f}  (goal <= 0.15)")
    print(f"peak RSS of `subtide run` on the clip (either process): {rss:.0f} MB")


if __name__ == "__main__":
    main()
