"""Time to result for a video that carries a caption track, against transcribing it instead.

The 60 s benchmark dialogue becomes a video on an HTML page with a WebVTT <track>, served on
127.0.0.1 and read by yt-dlp's html5 extractor, as a user's link would be. One engine, one
process: `Engine.run` to the final SRT with the captions, and with `force_asr` (download, decode,
transcribe). The model is loaded before timing (a server keeps it warm); no cache is used.
Runs alternate; the medians are compared.

    python bench/captions.py [--runs 3] [--model bundled]
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

from engine.pipeline import Engine, EngineOptions  # noqa: E402
from engine.protocol import JobSpec, ResultEvent, Source  # noqa: E402
from tests.support.http_server import serve_directory  # noqa: E402
from tests.support.synth import DIALOGUE_EN, Clip, fixture_dir, synthesize, to_mp4  # noqa: E402


def clip_of_60s() -> Clip:
    # The same clip as bench/asr_overhead.py: the dialogue twice over, cut to about a minute.
    lines = (DIALOGUE_EN * 2)[:15]
    return synthesize(lines, fixture_dir(), "bench_60s", gap=0.7)


def make_site(clip: Clip, root: Path) -> None:
    to_mp4(clip.wav, root / "clip.mp4")
    cues = [f"{_vtt(s.start)} --> {_vtt(s.end)}\n{s.text}\n" for s in clip.sentences]
    (root / "en.vtt").write_text("WEBVTT\n\n" + "\n".join(cues))
    track = '<track kind="subtitles" src="en.vtt" srclang="en" label="English">'
    page = f'<html><head><title>Bench</title></head><body><video src="clip.mp4">{track}</video>'
    (root / "index.html").write_text(page + "</body></html>")


def _vtt(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"00:{ms // 60000:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def timed_run(engine: Engine, url: str, *, force_asr: bool) -> tuple[float, ResultEvent]:
    job = JobSpec(source=Source(url=url), formats=["srt"], force_asr=force_asr)
    start = time.perf_counter()
    events = list(engine.run(job))
    elapsed = time.perf_counter() - start
    result = events[-1]
    if not isinstance(result, ResultEvent):
        raise SystemExit(f"engine failed: {result}")
    expected = "asr" if force_asr else "captions-manual"
    if result.source != expected:
        raise SystemExit(f"expected text from {expected}, got {result.source}")
    return elapsed, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", default="bundled")
    args = parser.parse_args()

    clip = clip_of_60s()
    with tempfile.TemporaryDirectory() as tmp:
        root, cache_dir = Path(tmp) / "site", Path(tmp) / "cache"
        root.mkdir()
        make_site(clip, root)
        options = EngineOptions(
            whisper_model=args.model, cache_dir=cache_dir, use_cache=False, allow_private_urls=True
        )
        engine = Engine(options)
        engine.warm()
        with serve_directory(root) as base:
            url = f"{base}/index.html"
            # Warm-up: imports, yt-dlp's extractors, the language detector, page cache.
            timed_run(engine, url, force_asr=False), timed_run(engine, url, force_asr=True)
            caption_times, asr_times = [], []
            for _ in range(args.runs):
                caption_times.append(timed_run(engine, url, force_asr=False)[0])
                asr_times.append(timed_run(engine, url, force_asr=True)[0])

    captions, asr = statistics.median(caption_times), statistics.median(asr_times)
    print(f"clip: {clip.duration:.1f} s, {len(clip.sentences)} captions, model: {args.model}")
    print(f"runs: {args.runs}")
    print(f"with the caption track    median {captions:.3f} s")
    print(f"transcribed (force_asr)   median {asr:.3f} s")
    print(f"ratio transcribe/captions: {asr / captions:.1f}x")


if __name__ == "__main__":
    main()
