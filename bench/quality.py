"""What the subtitles say and when, on real voices and synthetic ones: our engine beside raw
faster-whisper with the same options.

For each bundled model and clip: WER (normalised: case, punctuation, hyphens, titles, numbers)
and the sentence onset error, the seconds between a sentence being spoken and being shown
(median of its size, and the worst, signed: - is early). Real speech: the pocketsphinx-testdata
clips of tests/support/real_speech.py (LibriVox sentences with pauses of 0.12-1.2 s, the same
under music, short read utterances under noise); synthetic: the espeak-ng dialogue. Raw
faster-whisper is `WhisperModel.transcribe` (sequential, beam 5, word timestamps, VAD, no
conditioning on earlier text), its words made into cues by the same cue builder. Goals (issue
21): worst onset error <= 0.25 s on every real-speech clip; WER no worse than raw.

A word Whisper hears on a knife's edge comes out one way or the other by chance: where the
10 ms frames and the VAD's 32 ms ones fall, where a chunk starts. --shifts N runs each clip N
times, after 0, 13, 27... ms of silence, and prints the WER of all its runs with its range
(every run's onsets pooled), so that a change can be told from chance. The "all" rows pool
every real-speech run of a model (WER: all their errors over all their words): one word heard
one way or the other moves a clip's row, and a change is judged on the pool first. --varied N
adds N clips of the same recordings with pauses and a background drawn at random (seeded): a
rule fitted to the standard clips' layout shows there, and one fitted to those with one --seed
shows on another's.

    python bench/quality.py [--models bundled,bundled:tiny.en] [--shifts 1] [--varied 0] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Raw faster-whisper's mel features on one BLAS thread, as the engine's model process has them
# (engine/asr.py): set before numpy loads, so that no row depends on the shell's OMP_NUM_THREADS.
os.environ["OPENBLAS_NUM_THREADS"] = "1"

from engine.asr import decoding_setup, resolve_model  # noqa: E402
from engine.cues import build_cues  # noqa: E402
from engine.media import decode_audio  # noqa: E402
from engine.pipeline import Engine, EngineOptions  # noqa: E402
from engine.protocol import Cue, JobSpec, ResultEvent, Source, Style, Word  # noqa: E402
from tests.support import real_speech  # noqa: E402
from tests.support.onsets import shown  # noqa: E402
from tests.support.synth import (  # noqa: E402
    DIALOGUE_EN,
    Clip,
    fixture_dir,
    shifted,
    synthesize,
)
from tests.support.wer import edits, wer  # noqa: E402


def clips(varied: int, seed: int, folder: Path) -> list[tuple[str, Clip]]:
    synthetic = synthesize(DIALOGUE_EN, fixture_dir(), "dialogue_en", gap=0.7)
    real = []
    if real_speech.available():
        real = real_speech.standard_clips(fixture_dir())
        real += real_speech.varied_clips(folder, varied, seed)
    else:
        print("pocketsphinx-testdata is not installed: synthetic speech only", file=sys.stderr)
    return [*(("real", clip) for clip in real), ("synthetic", synthetic)]


def engine_cues(engine: Engine, clip: Clip, model: str) -> list[Cue]:
    job = JobSpec(source=Source(path=str(clip.wav)), whisper_model=model, formats=["srt"])
    result = list(engine.run(job))[-1]
    if not isinstance(result, ResultEvent):
        raise SystemExit(f"engine failed on {clip.wav.name}: {result}")
    return result.cues


def raw_cues(model: object, clip: Clip) -> list[Cue]:
    segments, info = model.transcribe(  # type: ignore[attr-defined]
        decode_audio(clip.wav),
        vad_filter=True,
        word_timestamps=True,
        beam_size=5,
        condition_on_previous_text=False,
    )
    words = [
        Word(start=w.start, end=w.end, text=w.word, probability=w.probability)
        for segment in segments
        for w in segment.words or ()
    ]
    return build_cues(words, Style(), info.language)


def row(model: str, kind: str, name: str, decoder: str, runs: list[tuple[Clip, list[Cue]]]) -> str:
    """One line for the runs of a clip (shifted or not), or of several clips: WER of all
    their words and its range over the runs, onsets pooled."""
    texts = [(clip.script, " ".join(cue.text for cue in cues)) for clip, cues in runs]
    wers = [wer(*text) for text in texts]
    counts = [edits(*text) for text in texts]
    pooled = sum(changed for changed, _ in counts) / max(sum(said for _, said in counts), 1)
    found = [shown(clip.sentences, cues) for clip, cues in runs]
    errors = [s.onset_error for sentences in found for s in sentences]
    median = statistics.median(abs(e) for e in errors) if errors else float("nan")
    worst = max(errors, key=abs) if errors else float("nan")
    spread = f"{min(wers):.3f}-{max(wers):.3f}" if len(runs) > 1 else ""
    sentences = sum(len(clip.sentences) for clip, _ in runs)
    return (
        f"{model:<16} {kind:<9} {name:<16} {decoder:<6} "
        f"{pooled:>6.3f} {spread:<11} {median:>9.3f} {worst:>+9.3f} "
        f"{len(errors):>3}/{sentences:<3}"
    )


def main() -> None:
    import ctranslate2
    from faster_whisper import WhisperModel

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="bundled,bundled:tiny.en")
    parser.add_argument("--shifts", type=int, default=1, help="runs per clip, each shifted")
    parser.add_argument(
        "--varied", type=int, default=0, help="real-speech clips with random pauses and background"
    )
    parser.add_argument("--seed", type=int, default=0, help="of the --varied clips")
    args = parser.parse_args()
    shifts = [k / 75 for k in range(args.shifts)]  # 13.3 ms apart: off the 10 ms frames
    # Raw faster-whisper falls back to sampling at higher temperatures; CTranslate2 seeds each
    # of its threads once, on its first sample, from this: the raw rows repeat run to run.
    ctranslate2.set_random_seed(0)
    setup = decoding_setup()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(EngineOptions(cache_dir=Path(tmp), use_cache=False))
        for spec in args.models.split(","):
            path = resolve_model(spec, Path(tmp) / "models").path
            raw = WhisperModel(
                path,
                device=setup.device,
                compute_type=setup.compute_type,
                cpu_threads=setup.cpu_threads,  # the engine's: a thread count rounds its own way
            )
            real: dict[str, list[tuple[Clip, list[Cue]]]] = {"raw": [], "engine": []}
            for kind, clip in clips(args.varied, args.seed, Path(tmp)):
                runs = [shifted(clip, shift, Path(tmp)) for shift in shifts]
                name = clip.wav.stem
                done = {
                    "raw": [(c, raw_cues(raw, c)) for c in runs],
                    "engine": [(c, engine_cues(engine, c, spec)) for c in runs],
                }
                rows += [row(spec, kind, name, decoder, done[decoder]) for decoder in done]
                print(*rows[-2:], sep="\n", file=sys.stderr, flush=True)
                if kind == "real":
                    for decoder, found in done.items():
                        real[decoder] += found
            if real["raw"]:
                rows += [row(spec, "real", "all", decoder, real[decoder]) for decoder in real]
            del raw
    print(
        f"{'model':<16} {'speech':<9} {'clip':<16} {'ASR':<6} {'WER':>6} {'WER range':<11} "
        f"{'onset|med|':>9} {'onset max':>9} {'sentences'}"
    )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
