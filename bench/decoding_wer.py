"""Word error rate of our chunked, batched decoding beside raw sequential faster-whisper.

The same audio and options (beam 5, word timestamps, VAD, no conditioning on earlier text) for
both bundled models, on the synthetic dialogue once and three times over. Goal (issue 18): the
engine's WER within 0.01 of sequential decoding's.

    python bench/decoding_wer.py [--models bundled,bundled:tiny.en]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.asr import DecodeOptions, Transcriber, pick_device, resolve_model  # noqa: E402
from engine.media import decode_audio  # noqa: E402
from tests.support.synth import DIALOGUE_EN, fixture_dir, synthesize  # noqa: E402
from tests.support.wer import wer  # noqa: E402


def main() -> None:
    from faster_whisper import WhisperModel

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="bundled,bundled:tiny.en")
    args = parser.parse_args()
    clips = [
        synthesize(DIALOGUE_EN, fixture_dir(), "dialogue_en", gap=0.7),
        synthesize(DIALOGUE_EN * 3, fixture_dir(), "dialogue_en_x3", gap=0.7),
    ]
    device, compute_type = pick_device()
    print(f"{'model':<16} {'clip':<16} {'sequential':>10} {'engine':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.models.split(","):
            choice = resolve_model(spec, Path(tmp))
            raw = WhisperModel(choice.path, device=device, compute_type=compute_type)
            engine = Transcriber(choice)
            for clip in clips:
                audio = decode_audio(clip.wav)
                segments, _ = raw.transcribe(
                    audio,
                    vad_filter=True,
                    word_timestamps=True,
                    beam_size=5,
                    condition_on_previous_text=False,
                )
                sequential = " ".join(s.text for s in segments)
                _, ours = engine.transcribe(audio, DecodeOptions())
                mine = " ".join(s.text for s in ours if s is not None)
                print(
                    f"{spec:<16} {clip.wav.stem:<16} "
                    f"{wer(clip.script, sequential):>10.3f} {wer(clip.script, mine):>8.3f}"
                )
            engine.close()


if __name__ == "__main__":
    main()
