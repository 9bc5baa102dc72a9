"""Work redone after a crash: a transcription stopped at 60 % (its model process killed, as a
crash would) and run again resumes from its journal (engine/journal.py).

    python bench/resume.py [--repeat 3] [--model bundled] [--at 0.6]

The source is the two-voice dialogue of the tests, `--repeat` times over. Prints the share of
the audio decoded twice (goal: <= 0.05 on a long file; at most about two 30 s decoding windows
are redone, so the share falls as the file grows), and the time of the first part plus the
resumed run against one uninterrupted run in the same process.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.pipeline import Engine, EngineOptions  # noqa: E402
from engine.protocol import JobSpec, ProgressEvent, ResultEvent, Source  # noqa: E402
from tests.support.synth import DIALOGUE_EN, synthesize  # noqa: E402


def run(engine: Engine, wav: Path, duration: float, stop_at: float | None) -> tuple[float, str]:
    """Seconds taken, and the resume message if there was one."""
    started, said = time.monotonic(), ""
    for event in engine.run(JobSpec(source=Source(path=str(wav)))):
        if isinstance(event, ProgressEvent) and event.message.startswith("Resuming at"):
            said = event.message
        if (
            stop_at is not None
            and isinstance(event, ProgressEvent)
            and event.message.startswith("Transcribed ")
            and _seconds(event.message.split()[1]) >= stop_at * duration
        ):
            engine.cancel()
        if isinstance(event, ResultEvent):
            assert event.cues
    return time.monotonic() - started, said


def _seconds(clock: str) -> float:
    total = 0.0
    for part in clock.split(":"):
        total = total * 60 + float(part)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--at", type=float, default=0.6)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="subtide-bench-"))
    try:
        clip = synthesize(DIALOGUE_EN * args.repeat, work, "long", gap=0.7)
        options = {"whisper_model": args.model}
        whole = Engine(EngineOptions(cache_dir=work / "a", **options))
        whole.warm()
        t_whole, _ = run(whole, clip.wav, clip.duration, None)
        broken = Engine(EngineOptions(cache_dir=work / "b", **options))
        broken.warm()
        t_first, _ = run(broken, clip.wav, clip.duration, args.at)
        t_rest, said = run(broken, clip.wav, clip.duration, None)
        resumed_at = _seconds(said.split()[2]) if said else 0.0
        redone = max(args.at * clip.duration - resumed_at, 0.0) / clip.duration
        print(f"audio {clip.duration:.0f} s, stopped at {args.at:.0%}; {said or 'no resume'}")
        print(f"share of the audio decoded again: {redone:.3f}")
        print(
            f"stopped part + resumed run: {t_first:.1f} + {t_rest:.1f} s "
            f"vs one whole run {t_whole:.1f} s: ratio {(t_first + t_rest) / t_whole:.2f}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
