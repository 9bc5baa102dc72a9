"""Real human speech: recordings from Debian's pocketsphinx-testdata joined into clips.

The package ships LibriVox excerpts of one reader (five sentences) and five short read
utterances (`cards`), each a 16 kHz mono WAV with its transcript. A clip joins recordings with
pauses of given lengths, optionally with music or noise under them. A sentence's true onset is
where its recording starts in the clip plus the recording's leading silence, and its end is
where the recording's trailing silence begins, both measured by energy on the clean recording:
the times are those of the voice, whatever is mixed under it. Clips are deterministic.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from tests.support.synth import SAMPLE_RATE, Clip, Sentence, atomic_write, wav_bytes

DATA = Path("/usr/share/pocketsphinx/test/data")
LIBRIVOX = DATA / "librivox"
CARDS = DATA / "cards"
Background = Literal["music", "noise"]

# Energy frames of 10 ms; a frame is voiced when it is this far above the recording's floor
# (its 10th percentile: the room between words), for two frames running (a click is one).
_FRAME = SAMPLE_RATE // 100
_ABOVE_FLOOR_DB = 12.0
_RUN = 2
_TRANSCRIPT = re.compile(r"<s>(.*)</s>\s*\((\S+)\)")


@dataclass(frozen=True)
class Recording:
    samples: np.ndarray  # int16
    text: str
    onset: float  # seconds of leading silence
    offset: float  # where the trailing silence begins


def available() -> bool:
    return (LIBRIVOX / "transcription").is_file() and (CARDS / "cards.transcription").is_file()


def recordings(folder: Path, transcript: str) -> list[Recording]:
    """The folder's recordings in transcript order (e.g. `LIBRIVOX, "transcription"`)."""
    found = []
    for line in (folder / transcript).read_text().splitlines():
        if match := _TRANSCRIPT.search(line):
            text, name = " ".join(match[1].split()), match[2]
            samples = _read(folder / f"{Path(name).name}.wav")
            onset, offset = voiced_span(samples)
            found.append(Recording(samples, text, onset, offset))
    return found


def librivox() -> list[Recording]:
    return recordings(LIBRIVOX, "transcription")


def cards() -> list[Recording]:
    return recordings(CARDS, "cards.transcription")


def voiced_span(samples: np.ndarray) -> tuple[float, float]:
    """Seconds from the start to the first voiced frame, and to the end of the last one."""
    frames = len(samples) // _FRAME
    power = np.square(samples[: frames * _FRAME].astype(np.float64).reshape(frames, _FRAME))
    level = 10 * np.log10(power.mean(axis=1) + 1e-9)
    voiced = level > np.percentile(level, 10) + _ABOVE_FLOOR_DB
    # A frame that starts a run of voiced ones (and one that ends a run, read backwards).
    runs = np.convolve(voiced, np.ones(_RUN), mode="valid") == _RUN
    first = int(np.argmax(runs))
    last = len(runs) - 1 - int(np.argmax(runs[::-1])) + _RUN
    return first / 100, last / 100


def join(
    parts: Sequence[Recording],
    out_dir: Path,
    name: str,
    *,
    pauses: Sequence[float],
    under: Background | None = None,
    under_db: float = -15.0,
) -> Clip:
    """The recordings one after another, `pauses` seconds from the end of one voice to the
    onset of the next (the recordings' own quiet is kept up to that much, silence added where
    it is too short), written to `out_dir/name.wav`. With `under`, music or noise `under_db`
    below the speech's level runs under the whole clip."""
    if len(pauses) != len(parts) - 1:
        raise ValueError(f"need {len(parts) - 1} pauses for {len(parts)} recordings")
    cuts = [_cut(*pair, pause) for *pair, pause in zip(parts, parts[1:], pauses, strict=False)]
    pieces, sentences, at = [], [], 0
    for k, part in enumerate(parts):
        start = 0 if k == 0 else cuts[k - 1][1]
        end = len(part.samples) if k == len(parts) - 1 else cuts[k][0]
        if k:
            pieces.append(np.zeros(cuts[k - 1][2], np.int16))
            at += len(pieces[-1])
        clock = (at - start) / SAMPLE_RATE  # where the recording's own time 0 falls
        onset, offset = round(clock + part.onset, 3), round(clock + part.offset, 3)
        sentences.append(Sentence(part.text, onset, offset, name))
        pieces.append(part.samples[start:end])
        at += len(pieces[-1])
    speech = np.concatenate(pieces).astype(np.float64)
    if under is not None:
        speech += _background(under, len(speech), _level(speech) * 10 ** (under_db / 20))
    pcm = np.clip(np.rint(speech), -32768, 32767).astype("<i2")
    wav = out_dir / f"{name}.wav"
    atomic_write(wav, wav_bytes(pcm.tobytes()))
    return Clip(wav, tuple(sentences), len(pcm) / SAMPLE_RATE)


def _cut(before: Recording, after: Recording, pause: float) -> tuple[int, int, int]:
    """Where `before` ends and `after` starts (samples into each) and the silence between them
    (samples), for a pause of `pause` seconds between the two voices: half of it from each
    recording's quiet where each has enough."""
    trailing = len(before.samples) / SAMPLE_RATE - before.offset
    kept_after = min(after.onset, max(pause / 2, pause - trailing))
    kept_before = min(trailing, pause - kept_after)
    added = pause - kept_before - kept_after
    return (
        round((before.offset + kept_before) * SAMPLE_RATE),
        round((after.onset - kept_after) * SAMPLE_RATE),
        round(added * SAMPLE_RATE),
    )


def _read(path: Path) -> np.ndarray:
    import wave

    with wave.open(str(path), "rb") as reader:
        if (reader.getframerate(), reader.getnchannels()) != (SAMPLE_RATE, 1):
            raise ValueError(f"{path.name}: expected 16 kHz mono")
        return np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")


def _level(signal: np.ndarray) -> float:
    """RMS of the loud half of the frames: the speech, not the pauses between it."""
    frames = len(signal) // _FRAME
    power = np.square(signal[: frames * _FRAME].reshape(frames, _FRAME)).mean(axis=1)
    return float(np.sqrt(np.mean(np.sort(power)[frames // 2 :])))


def _background(kind: Background, length: int, rms: float) -> np.ndarray:
    signal = _music(length) if kind == "music" else _noise(length)
    return signal * (rms / np.sqrt(np.mean(np.square(signal))))


def _music(length: int) -> np.ndarray:
    """Chords of a simple progression, a new one every 0.8 s, each note with a few harmonics
    and a plucked envelope: tonal and rhythmic, like a soundtrack."""
    chords = [(220.0, 277.2, 329.6), (196.0, 246.9, 293.7), (174.6, 220.0, 261.6)]
    step = int(0.8 * SAMPLE_RATE)
    t = np.arange(step) / SAMPLE_RATE
    envelope = np.minimum(t / 0.02, 1.0) * np.exp(-t / 0.5)
    bars = []
    for k in range(-(-length // step)):
        tones = sum(
            np.sin(2 * np.pi * f * h * t) / h for f in chords[k % len(chords)] for h in (1, 2, 3)
        )
        bars.append(tones * envelope)
    return np.concatenate(bars)[:length]


def _noise(length: int) -> np.ndarray:
    """Seeded noise, low-passed (most of its power below 1 kHz, like a room or a crowd)."""
    white = np.random.default_rng(21).standard_normal(length)
    kernel = np.hanning(17)
    return np.convolve(white, kernel / kernel.sum(), mode="same")


def standard_clips(out_dir: Path) -> list[Clip]:
    """The real-speech clips the tests and bench/quality.py share: the LibriVox sentences
    with pauses from a tenth of a second (shorter than the VAD's minimum silence) to over a
    second, the same under music, and the cards' short utterances under noise."""
    lv, cd = librivox(), cards()
    return [
        join(lv, out_dir, "librivox_pauses", pauses=[0.25, 0.12, 0.6, 1.2]),
        join(lv, out_dir, "librivox_music", pauses=[0.3, 0.15, 1.0, 0.5], under="music"),
        join(cd, out_dir, "cards_noise", pauses=[0.3, 0.8, 0.2, 1.5], under="noise", under_db=-20),
    ]


def varied_clips(out_dir: Path, count: int, seed: int = 0) -> list[Clip]:
    """`count` more clips of the same recordings, LibriVox and cards in turn, each with
    pauses of 0.1-1.6 s and a background (none, music, noise; 20, 15 or 12 dB under the
    voice) drawn at random from `seed`: a timing rule fitted to the standard clips' layout
    shows here."""
    import random

    draw = random.Random(seed)
    lv, cd = librivox(), cards()
    found = []
    for k in range(count):
        parts = lv if k % 2 == 0 else cd
        pauses = [round(draw.uniform(0.1, 1.6), 2) for _ in parts[1:]]
        under = draw.choice([None, "music", "noise"])
        under_db = draw.choice([-20.0, -15.0, -12.0])
        name = f"{'librivox' if parts is lv else 'cards'}_varied{k}"
        found.append(join(parts, out_dir, name, pauses=pauses, under=under, under_db=under_db))
    return found
