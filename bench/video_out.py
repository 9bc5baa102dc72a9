"""What video outputs cost (issue 20), against the transcription of the same video in this run.

1. A 10-minute synthetic video: ffmpeg's testsrc at 640x360, 25 fps, with the 12-fold English
   dialogue (tests/support/synth) as its sound; built once into the fixture folder.
2. The engine transcribes it (bundled model, no cache): the baseline.
3. Soft subtitles: the original and two translated tracks muxed into MKV (ASS) and MP4
   (mov_text), picture and sound copied; each as a share of the transcription time (the issue
   asks for at most 5 %).
4. Burned: the first --burn-seconds of the video with its cues drawn in (libx264 veryfast +
   AAC), as a real-time factor (seconds of work per second of video; under 1 is faster than
   real time).

    python bench/video_out.py [--model bundled:tiny.en] [--burn-seconds 120] [--runs 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.pipeline import Engine, EngineOptions  # noqa: E402
from engine.protocol import Cue, JobSpec, ResultEvent, Source, VideoOptions  # noqa: E402
from engine.video import burn, burn_subtitles, make_video  # noqa: E402
from tests.support.synth import DIALOGUE_EN, fixture_dir, synthesize  # noqa: E402

REPEATS = 12  # the dialogue 12 times: about 10 minutes


def bench_video() -> Path:
    """The 10-minute video, built once (its build is not measured)."""
    wav = synthesize(DIALOGUE_EN * REPEATS, fixture_dir(), f"bench_{REPEATS}x", gap=0.7).wav
    out = fixture_dir() / f"bench_video_{REPEATS}x.mp4"
    if out.is_file() and out.stat().st_mtime >= wav.stat().st_mtime:
        return out
    picture = ["-f", "lavfi", "-i", "testsrc=s=640x360:r=25"]
    encode = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac"]
    partial = out.with_name(f".{out.name}.part.mp4")
    command = ["ffmpeg", "-v", "error", "-y", *picture, "-i", str(wav), "-shortest", *encode]
    subprocess.run([*command, str(partial)], check=True)
    partial.replace(out)
    return out


def transcribe(video: Path, model: str, cache_dir: Path) -> tuple[float, ResultEvent]:
    engine = Engine(EngineOptions(whisper_model=model, cache_dir=cache_dir, use_cache=False))
    engine.warm()  # the model's load is not transcription
    started = time.perf_counter()
    events = list(engine.run(JobSpec(source=Source(path=str(video)))))
    elapsed = time.perf_counter() - started
    result = events[-1]
    assert isinstance(result, ResultEvent), result
    return elapsed, result


def with_translations(cues: list[Cue]) -> list[Cue]:
    """Two stand-in translations per cue, so the soft video carries three tracks."""
    return [
        cue.model_copy(update={"translations": {"de": cue.text[::-1], "fr": cue.text.upper()}})
        for cue in cues
    ]


def best_of(runs: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def cut(video: Path, seconds: float, out: Path) -> Path:
    """The first `seconds` of `video`, streams copied."""
    command = ["ffmpeg", "-v", "error", "-y", "-i", str(video), "-t", f"{seconds}", "-c", "copy"]
    subprocess.run([*command, str(out)], check=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="bundled:tiny.en")
    parser.add_argument("--burn-seconds", type=float, default=120)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    video = bench_video()
    with tempfile.TemporaryDirectory(prefix="subtide-bench-") as work_dir:
        work = Path(work_dir)
        transcription, result = transcribe(video, args.model, work / "cache")
        cues = with_translations(result.cues)
        print(f"video: {result.duration:.0f} s, 640x360 25 fps; {len(cues)} cues")
        print(f"transcription ({args.model}, whole engine run): {transcription:.1f} s")
        for container in ("mkv", "mp4"):
            options = VideoOptions(container=container)

            def mux(options: VideoOptions = options) -> None:
                out = work / f"soft.{options.container}"
                make_video(
                    "video_soft",
                    video,
                    out,
                    cues,
                    language="en",
                    target_langs=["de", "fr"],
                    options=options,
                )

            seconds = best_of(args.runs, mux)
            share = 100 * seconds / transcription
            print(f"soft {container}, 3 tracks: {seconds:.2f} s = {share:.2f} % of transcription")

        part = cut(video, args.burn_seconds, work / "part.mp4")
        shown = [cue for cue in cues if cue.end <= args.burn_seconds]
        ass = burn_subtitles(shown, language="en", burn_lang="de")
        seconds = best_of(1, lambda: burn(part, ass, work / "burned.mp4"))
        factor = seconds / args.burn_seconds
        print(
            f"burn (libx264 veryfast, 360p), first {args.burn_seconds:g} s: {seconds:.1f} s, "
            f"real-time factor {factor:.2f} ({1 / factor:.1f}x real time)"
        )


if __name__ == "__main__":
    main()
