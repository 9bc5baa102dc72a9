"""Deterministic synthetic speech: espeak-ng sentences joined by silences of known length.

Each sentence is trimmed to its first and last audible sample, so the start and end of every
sentence (and every speaker turn) is known exactly. Output is byte-identical run to run, so
fixtures are cached on disk and shared between test sessions.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tempfile
import wave
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

SAMPLE_RATE = 16000
# Bumped when the recipe changes, so stale cached fixtures are rebuilt rather than reused.
_RECIPE_VERSION = 1

DIALOGUE_EN: list[tuple[str, str]] = [
    ("en+m3", "Have you decided where we are going this summer?"),
    (
        "en+f3",
        "I was thinking about the coast, somewhere quiet with a small beach and a good bakery "
        "nearby.",
    ),
    ("en+m3", "That sounds lovely, but the drive is very long."),
    (
        "en+f3",
        "We could leave early in the morning and stop for lunch on the way, so nobody gets too "
        "tired.",
    ),
    ("en+m3", "Fair enough. Should we rent a cottage or stay in a hotel?"),
    ("en+f3", "A cottage, I think. Then we can cook our own dinners and sleep late."),
    (
        "en+m3",
        "I like that idea, as long as there is a proper kitchen and a table outside where we can "
        "eat in the evening.",
    ),
    ("en+f3", "Of course. Can you put the kettle on while I look at the map?"),
    ("en+m3", "Sure. Do you want tea or coffee?"),
    ("en+f3", "Tea, please, with a little milk."),
    ("en+m3", "Here you go. Careful, the cup is very hot!"),
    ("en+f3", "Thank you. Now let us book the cottage before somebody else does!"),
]

SPANISH: list[tuple[str, str]] = [
    ("es", "Buenos días, ¿qué tal has dormido esta noche?"),
    ("es", "Muy bien, gracias. Hoy quiero ir al mercado a comprar fruta."),
    ("es", "Me parece una idea excelente, te acompaño después del desayuno."),
]


@dataclass(frozen=True)
class Sentence:
    text: str
    start: float
    end: float
    voice: str


@dataclass(frozen=True)
class Clip:
    wav: Path
    sentences: tuple[Sentence, ...]
    duration: float

    @property
    def script(self) -> str:
        return " ".join(sentence.text for sentence in self.sentences)


def fixture_dir() -> Path:
    """A cache folder for fixtures; they are deterministic, so sessions may share it."""
    configured = os.environ.get("SUBTIDE_TEST_FIXTURES")
    default = Path(tempfile.gettempdir()) / "subtide-test-fixtures"
    folder = Path(configured) if configured else default
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def synthesize(
    lines: Sequence[tuple[str, str]],
    out_dir: Path,
    name: str,
    *,
    gap: float | Sequence[float] = 0.6,
    lead: float = 0.5,
    tail: float = 0.5,
    speed: int = 160,
) -> Clip:
    """Speak `lines` ([(voice, text), ...]) into `out_dir/name.wav`, or reuse the cached clip."""
    gaps = _gaps(gap, len(lines))
    wav = out_dir / f"{name}.wav"
    sidecar = out_dir / f"{name}.json"
    key = _cache_key(lines, gaps, lead, tail, speed)
    cached = _load_cached(wav, sidecar, key)
    if cached is not None:
        return cached

    out_dir.mkdir(parents=True, exist_ok=True)
    pcm = bytearray(_silence(lead))
    sentences = []
    with tempfile.TemporaryDirectory() as work:
        for index, (voice, text) in enumerate(lines):
            if index:
                pcm += _silence(gaps[index - 1])
            speech = _speak(voice, text, speed, Path(work))
            start = len(pcm) // 2
            pcm += speech
            sentences.append(
                Sentence(text, start / SAMPLE_RATE, (len(pcm) // 2) / SAMPLE_RATE, voice)
            )
    pcm += _silence(tail)

    clip = Clip(wav, tuple(sentences), (len(pcm) // 2) / SAMPLE_RATE)
    atomic_write(wav, wav_bytes(bytes(pcm)))
    # The sidecar is written last: its presence means the wav beside it is complete.
    atomic_write(sidecar, json.dumps(_clip_record(clip, key), indent=1).encode())
    return clip


def shifted(clip: Clip, shift_s: float, folder: Path) -> Clip:
    """The clip after `shift_s` of digital silence (zeros), its sentences as much later."""
    if not shift_s:
        return clip
    with wave.open(str(clip.wav), "rb") as reader:
        pcm = reader.readframes(reader.getnframes())
    wav = folder / f"{clip.wav.stem}+{shift_s * 1000:.0f}ms.wav"
    atomic_write(wav, wav_bytes(bytes(2 * round(shift_s * SAMPLE_RATE)) + pcm))
    later = tuple(replace(s, start=s.start + shift_s, end=s.end + shift_s) for s in clip.sentences)
    return Clip(wav, later, clip.duration + shift_s)


def to_mp4(wav: Path, out: Path, *, with_audio: bool = True) -> Path:
    """A small black video of the wav's length, with the wav as AAC audio unless told not to."""
    with wave.open(str(wav), "rb") as reader:
        duration = reader.getnframes() / reader.getframerate()
    video = f"color=c=black:s=320x240:r=10:d={duration:.3f}"
    command = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", video]
    if with_audio:
        command += ["-i", str(wav), "-c:a", "aac", "-b:a", "64k"]
    command += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-f", "mp4"]
    partial = out.with_name(f".{out.name}.{os.getpid()}.part")
    subprocess.run([*command, str(partial)], check=True, capture_output=True)
    os.replace(partial, out)
    return out


def _gaps(gap: float | Sequence[float], count: int) -> list[float]:
    if isinstance(gap, int | float):
        return [float(gap)] * max(count - 1, 0)
    if len(gap) != count - 1:
        raise ValueError(f"need {count - 1} gaps for {count} lines, got {len(gap)}")
    return [float(value) for value in gap]


def _speak(voice: str, text: str, speed: int, work: Path) -> bytes:
    """One sentence as 16 kHz mono 16-bit PCM, trimmed to its audible part."""
    raw, trimmed = work / "raw.wav", work / "trimmed.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), "--", text],
        check=True,
        capture_output=True,
    )
    # -D: sox dithers 16-bit output by default, which would make every run differ.
    trim = ["silence", "1", "0.02", "0.5%", "reverse"] * 2
    subprocess.run(
        ["sox", str(raw), "-D", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(trimmed), *trim],
        check=True,
        capture_output=True,
    )
    with wave.open(str(trimmed), "rb") as reader:
        return reader.readframes(reader.getnframes())


def _silence(seconds: float) -> bytes:
    return bytes(2 * round(seconds * SAMPLE_RATE))


def wav_bytes(pcm: bytes) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(SAMPLE_RATE)
        writer.writeframes(pcm)
    return buffer.getvalue()


def _cache_key(
    lines: Sequence[tuple[str, str]], gaps: list[float], lead: float, tail: float, speed: int
) -> str:
    recipe = {
        "version": _RECIPE_VERSION,
        "lines": [list(line) for line in lines],
        "gaps": gaps,
        "lead": lead,
        "tail": tail,
        "speed": speed,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def _clip_record(clip: Clip, key: str) -> dict:
    return {
        "key": key,
        "duration": clip.duration,
        "sentences": [
            {"text": s.text, "start": s.start, "end": s.end, "voice": s.voice}
            for s in clip.sentences
        ],
    }


def _load_cached(wav: Path, sidecar: Path, key: str) -> Clip | None:
    try:
        record = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None
    if record.get("key") != key or not wav.is_file():
        return None
    sentences = tuple(Sentence(**sentence) for sentence in record["sentences"])
    return Clip(wav, sentences, record["duration"])


def atomic_write(path: Path, data: bytes) -> None:
    # Parallel test sessions may build the same fixture at once; neither sees a half-written file.
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    partial.write_bytes(data)
    os.replace(partial, path)
