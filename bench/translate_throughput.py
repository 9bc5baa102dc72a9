"""Translation throughput against a local OpenAI-compatible server with a fixed latency.

1. 600 cues, batch 25, concurrency 4, 300 ms a request: wall time against the ideal
   ceil(600 / batch) / concurrency x 0.3 s (goal: ratio <= 1.25).
2. The 60 s clip with translation on against transcription alone, same engine, same process
   (goal: ratio <= 1.15, i.e. translation hidden behind transcription).

    python bench/translate_throughput.py [--runs 3]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.asr_overhead import clip_of_60s  # noqa: E402
from engine.pipeline import Engine, EngineOptions  # noqa: E402
from engine.protocol import Cue, JobSpec, Source, TranslationConfig  # noqa: E402
from engine.translate import LLMConfig, TranslateOptions, Translator, translate_cues  # noqa: E402
from tests.support.openai_server import serve_openai  # noqa: E402

LATENCY = 0.3
CUES = 600
BATCH = 25
CONCURRENCY = 4


def throughput(url: str) -> float:
    cues = [
        Cue(id=i, start=i * 2.0, end=i * 2.0 + 1.5, text=f"This is subtitle line number {i}.")
        for i in range(1, CUES + 1)
    ]
    llm = LLMConfig(model="bench", base_url=f"{url}/v1")
    options = TranslateOptions(batch_size=BATCH, concurrency=CONCURRENCY)
    with Translator(llm, options) as translator:
        start = time.perf_counter()
        lines = translate_cues(translator, cues, "de", "en")
        elapsed = time.perf_counter() - start
    if len(lines) != CUES or any(line.text is None for line in lines):
        raise SystemExit("translation lost or failed lines")
    return elapsed


def run_job(engine: Engine, wav: Path, targets: list[str]) -> float:
    start = time.perf_counter()
    events = list(engine.run(JobSpec(source=Source(path=str(wav)), target_langs=targets)))
    if events[-1].type != "result":
        raise SystemExit(f"engine failed: {events[-1]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    with serve_openai(latency=LATENCY) as fake:
        ideal = math.ceil(CUES / BATCH) / CONCURRENCY * LATENCY
        walls = [throughput(fake.url) for _ in range(args.runs)]
        wall = statistics.median(walls)
        print(f"{CUES} cues, batch {BATCH}, concurrency {CONCURRENCY}, {LATENCY * 1000:.0f} ms/req")
        print(f"  wall median {wall:.2f} s, ideal {ideal:.2f} s, ratio {wall / ideal:.3f}")
        print("  (goal <= 1.25)")

        wav = clip_of_60s()
        with tempfile.TemporaryDirectory() as tmp:
            engine = Engine(
                EngineOptions(
                    cache_dir=Path(tmp),
                    use_cache=False,
                    llm=TranslationConfig(base_url=f"{fake.url}/v1", model="bench"),
                )
            )
            run_job(engine, wav, [])  # warm-up: loads the model
            alone, translated = [], []
            for _ in range(args.runs):
                alone.append(run_job(engine, wav, []))
                translated.append(run_job(engine, wav, ["de"]))
        alone_s, translated_s = statistics.median(alone), statistics.median(translated)
        print(f"60 s clip: transcription alone {alone_s:.2f} s, translated {translated_s:.2f} s")
        print(f"  ratio {translated_s / alone_s:.3f}  (goal <= 1.15)")


if __name__ == "__main__":
    main()
