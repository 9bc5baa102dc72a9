"""Translation throughput against a local OpenAI-compatible server with a fixed latency.

1. 600 cues, batch 25, concurrency 4, 300 ms a request: wall time against the ideal
   ceil(600 / batch) / concurrency x 0.3 s (goal: ratio <= 1.25).
2. The 60 s clip with translation on against transcription alone, same engine, same process
   (goal: ratio <= 1.15, i.e. translation hidden behind transcription).
3. A local model as a laptop runs one: the 40 cues of bench/translate_local_llm.py against the
   stand-in generating 25 tokens a second, one request at a time: every line translated, and
   the wall time against the ideal serial time, the tokens it generated at 25 a second (goal:
   ratio <= 1.25).
4. The same cues against a stand-in whose first rendering of 20 % of the lines is too long for
   the screen: the share of translated cues within the style's limits (goal: >= 95 %).

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

from bench.asr_overhead import clip_of  # noqa: E402
from bench.translate_local_llm import LINES  # noqa: E402
from engine.cues import fits  # noqa: E402
from engine.pipeline import Engine, EngineOptions  # noqa: E402
from engine.protocol import Cue, JobSpec, Source, Style, TranslationConfig  # noqa: E402
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


def talk_cues() -> list[Cue]:
    return [
        Cue(id=i, start=i * 2.5, end=i * 2.5 + 2.4, text=line)
        for i, line in enumerate(LINES, start=1)
    ]


def local_model() -> None:
    with serve_openai() as fake:
        fake.tokens_per_second, fake.one_at_a_time = 25, True
        llm = LLMConfig(model="bench", base_url=f"{fake.url}/v1")
        with Translator(llm, TranslateOptions(batch_size=BATCH, concurrency=4)) as translator:
            start = time.perf_counter()
            lines = translate_cues(translator, talk_cues(), "de", "en")
            wall = time.perf_counter() - start
        ideal = sum(fake.generated) / fake.tokens_per_second
        done = sum(line.text is not None for line in lines)
    print(
        f"{len(LINES)} cues, one request at a time at 25 tokens/s: {done} translated, "
        f"{len(fake.requests)} requests"
    )
    print(
        f"  wall {wall:.1f} s, ideal serial {ideal:.1f} s, ratio {wall / ideal:.3f}  (goal <= 1.25)"
    )


def screen_fit() -> None:
    with serve_openai() as fake:
        fake.overlong_fraction = 0.2
        llm = LLMConfig(model="bench", base_url=f"{fake.url}/v1")
        cues = talk_cues()
        with Translator(llm, TranslateOptions(batch_size=BATCH)) as translator:
            lines = translate_cues(translator, cues, "de", "en")
    by_id = {cue.id: cue for cue in cues}
    done = [(line, by_id[line.cue_id]) for line in lines if line.text is not None]
    within = sum(fits(line.text or "", Style(), "de", cue.end - cue.start) for line, cue in done)
    print(
        f"20 % too long at first: {within} of {len(done)} translated cues within the limits "
        f"({within / len(done):.0%}; goal >= 95 %)"
    )


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

    local_model()
    screen_fit()
    with serve_openai(latency=LATENCY) as fake:
        ideal = math.ceil(CUES / BATCH) / CONCURRENCY * LATENCY
        walls = [throughput(fake.url) for _ in range(args.runs)]
        wall = statistics.median(walls)
        print(f"{CUES} cues, batch {BATCH}, concurrency {CONCURRENCY}, {LATENCY * 1000:.0f} ms/req")
        print(f"  wall median {wall:.2f} s, ideal {ideal:.2f} s, ratio {wall / ideal:.3f}")
        print("  (goal <= 1.25)")

        wav = clip_of(1)
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
