"""Diarization speed and accuracy on CPU, and what it adds to a job.

1. Real-time factor (time / audio length) and frame accuracy of the built-in backend on the
   two-voice dialogue and the 60 s clip.
2. Real-time factor of the pyannote path (a community-1-shaped pipeline with random weights:
   the same models, so the same compute as the real one) on the dialogue.
3. Total job time for the 60 s clip with diarization on vs off, same engine, same process
   (goal <= 1.3: diarization runs beside transcription).

    python bench/diarize.py [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.asr_overhead import clip_of  # noqa: E402
from engine.diarize_builtin import BuiltinDiarizer  # noqa: E402
from engine.media import decode_audio  # noqa: E402
from engine.pipeline import Engine, EngineOptions  # noqa: E402
from engine.protocol import JobSpec, Source  # noqa: E402
from tests.support.speakers import frame_accuracy  # noqa: E402
from tests.support.synth import DIALOGUE_EN, fixture_dir, synthesize  # noqa: E402


def timed(work: object) -> tuple[float, object]:
    start = time.perf_counter()
    value = work()  # type: ignore[operator]
    return time.perf_counter() - start, value


def job_time(engine: Engine, wav: Path, diarize: str) -> float:
    spec = JobSpec(source=Source(path=str(wav)), diarize=diarize)  # type: ignore[arg-type]
    elapsed, events = timed(lambda: list(engine.run(spec)))
    if events[-1].type != "result":  # type: ignore[index]
        raise SystemExit(f"job failed: {events[-1]}")  # type: ignore[index]
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    dialogue = synthesize(DIALOGUE_EN, fixture_dir(), "dialogue_en", gap=0.7)
    audio = decode_audio(dialogue.wav)
    seconds = len(audio) / 16000
    builtin = BuiltinDiarizer()
    builtin.diarize(audio[: 16000 * 5])  # warm-up: loads the weights
    runs = [timed(lambda: builtin.diarize(audio)) for _ in range(args.runs)]
    rtf = statistics.median(t for t, _ in runs) / seconds
    print(f"built-in on the dialogue ({seconds:.1f} s): RTF {rtf:.4f}  (goal < 0.1)")
    print(f"  frame accuracy {frame_accuracy(runs[0][1], dialogue):.3f}")

    from engine.diarize_pyannote import PyannoteDiarizer
    from tests.support.pyannote_pipeline import build_random_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        pyannote = PyannoteDiarizer(str(build_random_pipeline(Path(tmp) / "pipeline")))
        elapsed, _ = timed(lambda: pyannote.diarize(audio))
    print(f"pyannote path (community-1 shape) on the dialogue: RTF {elapsed / seconds:.3f}")

    wav = clip_of(1)
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(EngineOptions(cache_dir=Path(tmp), use_cache=False))
        job_time(engine, wav, "builtin")  # warm-up: loads both models
        off, on = [], []
        for _ in range(args.runs):
            off.append(job_time(engine, wav, "off"))
            on.append(job_time(engine, wav, "builtin"))
    off_s, on_s = statistics.median(off), statistics.median(on)
    print(f"60 s clip: job without speakers {off_s:.2f} s, with built-in speakers {on_s:.2f} s")
    print(f"  ratio {on_s / off_s:.3f}  (goal <= 1.3)")


if __name__ == "__main__":
    main()
