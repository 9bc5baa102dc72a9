"""The waveform: peaks from the real decoded audio (ffmpeg), and its drawing's cue regions."""

from __future__ import annotations

import math
import wave
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from engine.protocol import Cue, SubtideError
from engine.waveform import Peaks, peaks
from ui.timeline import speaker_colours
from ui.waveform import waveform_html

SVG = "{http://www.w3.org/2000/svg}"


def tone_then_silence(path: Path, rate: int = 16000) -> Path:
    """One second of a loud 440 Hz tone, then one second of silence."""
    tone = [round(20000 * math.sin(2 * math.pi * 440 * k / rate)) for k in range(rate)]
    samples = tone + [0] * rate
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"".join(s.to_bytes(2, "little", signed=True) for s in samples))
    return path


def test_peaks_follow_the_loudness_of_the_audio(tmp_path):
    outline = peaks(tone_then_silence(tmp_path / "tone.wav"))

    assert outline.per_second == pytest.approx(20)
    assert len(outline.values) == pytest.approx(2 * outline.per_second, abs=1)
    # Slices wholly inside the tone are loud, those wholly inside the silence are silent.
    loud = outline.values[1 : int(outline.per_second) - 1]
    quiet = outline.values[int(outline.per_second) + 1 :]
    assert min(loud) > 0.9
    assert max(quiet) < 0.01


def test_a_file_without_audio_has_no_peaks(tmp_path):
    text = tmp_path / "notes.wav"
    text.write_text("not audio")
    with pytest.raises(SubtideError):
        peaks(text)


def test_the_drawing_has_a_region_per_cue_at_its_times_with_its_speakers_colour():
    cues = [
        Cue(id=1, start=0.5, end=2.0, text="Hello <there>", speaker="Anna"),
        Cue(id=4, start=2.5, end=3.25, text="Hi.", speaker="Ben"),
        Cue(id=5, start=4.0, end=5.0, text="Bye."),
    ]
    svg = ET.fromstring(waveform_html(Peaks(20.0, (0.5,) * 120), cues, 6.0)).find(f"{SVG}svg")
    scale = float(svg.get("width")) / 6.0

    regions = svg.findall(f"{SVG}g[@class='subtide-region']")
    assert [int(g.get("data-cue")) for g in regions] == [1, 4, 5]
    colours = speaker_colours(cues)
    for region, cue in zip(regions, cues, strict=True):
        span = region.find(f"{SVG}rect[@class='subtide-span']")
        assert float(span.get("x")) == pytest.approx(cue.start * scale, abs=0.1)
        assert float(span.get("width")) == pytest.approx((cue.end - cue.start) * scale, abs=0.1)
        edges = region.findall(f"{SVG}rect[@class='subtide-edge']")
        assert [edge.get("data-edge") for edge in edges] == ["start", "end"]
        if cue.speaker:
            assert span.get("fill") == colours[cue.speaker]
    assert "Hello &lt;there&gt;" in waveform_html(Peaks(20.0, (0.5,) * 120), cues, 6.0)


def test_an_hour_is_drawn_narrower_and_with_bounded_bars():
    hour = Peaks(6000 / 3600, (0.5,) * 6000)
    html = waveform_html(hour, [Cue(id=1, start=3500, end=3502, text="Late.")], 3600.0)
    svg = ET.fromstring(html).find(f"{SVG}svg")
    assert int(svg.get("width")) <= 40000
    assert html.count("M") <= 6001
