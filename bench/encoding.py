"""A batch's encoding on a CPU: the chunks encoded one at a time (as engine/asr_worker.py does)
against all at once (faster-whisper's `WhisperModel.encode`), on the same model and the same
30 s windows of speech, in one process. Prints the time of each (median), the peak memory each
adds (Linux: VmHWM, reset before each), and whether the encodings are the same.
Goal: one at a time no slower, with less memory, and the same encodings.

    python bench/encoding.py [--chunks 8] [--runs 3] [--model bundled]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.asr import resolve_model  # noqa: E402
from engine.asr_worker import Load, _model  # noqa: E402
from engine.media import decode_audio  # noqa: E402
from tests.support.synth import DIALOGUE_EN, fixture_dir, synthesize  # noqa: E402


def _memory_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return float("nan")


def measured(encode: Callable[[], object], runs: int) -> tuple[float, float, object]:
    """Median seconds, peak MB added, and the last encoding, as a numpy array."""
    import numpy as np

    times, peaks, encoded = [], [], None
    for _ in range(runs):
        encoded = None
        before = _memory_mb("VmRSS:")
        Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM)
        start = time.perf_counter()
        encoded = np.array(encode())
        times.append(time.perf_counter() - start)
        peaks.append(_memory_mb("VmHWM:") - before)
    return statistics.median(times), max(peaks), encoded


def main() -> None:
    import numpy as np
    from faster_whisper import WhisperModel
    from faster_whisper.audio import pad_or_trim

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", default="bundled")
    args = parser.parse_args()

    wav = synthesize(DIALOGUE_EN * 12, fixture_dir(), "bench_12x", gap=0.7).wav
    audio = decode_audio(wav)
    with tempfile.TemporaryDirectory() as tmp:
        path = resolve_model(args.model, Path(tmp) / "models").path
        model = _model(Load(path, "cpu", "int8", 0, args.chunks)).model
    window = 30 * 16000
    features = np.stack(
        [
            pad_or_trim(model.feature_extractor(audio[k * window : (k + 1) * window])[..., :-1])
            for k in range(args.chunks)
        ]
    )
    whole_s, whole_mb, whole = measured(lambda: WhisperModel.encode(model, features), args.runs)
    ours_s, ours_mb, ours = measured(lambda: model.encode(features), args.runs)
    print(f"{args.chunks} chunks of {args.model}, {args.runs} runs, CPU int8")
    print(f"all at once:     {whole_s:.2f} s, peak +{whole_mb:.0f} MB")
    print(f"one at a time:   {ours_s:.2f} s, peak +{ours_mb:.0f} MB")
    print(f"ratio (one at a time / at once): {ours_s / whole_s:.3f}  (goal <= 1.0)")
    print(f"same encodings: {np.array_equal(whole, ours)}")


if __name__ == "__main__":
    main()
