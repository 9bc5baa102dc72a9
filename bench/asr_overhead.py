"""What the pipeline costs on top of raw faster-whisper, on the same 60 s clip, in one process.

Baseline: `WhisperModel.transcribe` with the engine's own options, consumed to the end.
Measured: `Engine.run` to the final SRT (decode, filter, cues, formats, cache write).
Runs alternate, the median of each is compared. Peak RSS is that of a separate
`subtide run` process on the same clip, so the baseline's model does not count twice.

    python bench/asr_overhead.py [--runs 5] [--model bundled]
"""

from __future__ import annotations

import argparse
import os
import resource
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


def clip_of_60s() -> Path:
    # The dialogue twice over, cut by synthesis to about a minute of speech and pauses.
    lines = (DIALOGUE_EN * 2)[:15]
    return synthesize(lines, fixture_dir(), "bench_60s", gap=0.7).wav


def whisper_model(spec: str, cache_dir: Path) -> object:
    from faster_whisper import WhisperModel

    device, compute_type = pick_device()
    path = resolve_model(spec, cache_dir / "models").path
    return WhisperModel(path, device=device, compute_type=compute_type)


def raw_run(model: object, wav: Path) -> float:
    start = time.perf_counter()
    segments, _ = model.transcribe(  # type: ignore[attr-defined]
        str(wav),
        beam_size=5,
        vad_filter=True,
        word_timestamps=True,
        condition_on_previous_text=False,
    )
    for _ in segments:
        pass
    return time.perf_counter() - start


def engine_run(engine: Engine, wav: Path, cache_dir: Path) -> float:
    shutil.rmtree(cache_dir / "transcripts", ignore_errors=True)
    start = time.perf_counter()
    events = list(engine.run(JobSpec(source=Source(path=str(wav)), formats=["srt"])))
    elapsed = time.perf_counter() - start
    if events[-1].type != "result":
        raise SystemExit(f"engine failed: {events[-1]}")
    return elapsed


def peak_rss_mb(wav: Path, model: str, cache_dir: Path) -> float:
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(
            [sys.executable, "-m", "app.cli", "run", str(wav), "-o", out, "-m", model, "-q"],
            check=True,
            cwd=ROOT,
            env={**os.environ, "CACHE_DIR": str(cache_dir)},
        )
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--model", default="bundled")
    args = parser.parse_args()

    wav = clip_of_60s()
    audio_s = len(decode_audio(wav)) / 16000
    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = Path(tmp)
        raw = whisper_model(args.model, cache_dir)
        engine = Engine(EngineOptions(whisper_model=args.model, cache_dir=cache_dir))
        raw_run(raw, wav), engine_run(engine, wav, cache_dir)  # warm-up: page cache, allocators
        raw_times, engine_times = [], []
        for _ in range(args.runs):
            raw_times.append(raw_run(raw, wav))
            engine_times.append(engine_run(engine, wav, cache_dir))
        rss = peak_rss_mb(wav, args.model, cache_dir)

    raw_median, engine_median = statistics.median(raw_times), statistics.median(engine_times)
    print(f"clip: {audio_s:.1f} s, model: {args.model}, runs: {args.runs}")
    print(f"raw faster-whisper  median {raw_median:.2f} s  (RTF {raw_median / audio_s:.3f})")
    print(f"Engine.run to SRT   median {engine_median:.2f} s  (RTF {engine_median / audio_s:.3f})")
    print(f"ratio engine/raw: {engine_median / raw_median:.3f}  (goal <= 1.10)")
    print(f"peak RSS of `subtide run` on the clip: {rss:.0f} MB")


if __name__ == "__main__":
    main()
