"""The engine end to end on the bundled model: accuracy, timing, readability, streaming, errors."""

from pathlib import Path

import pytest

from engine.pipeline import Engine, EngineOptions
from engine.protocol import Cue, CuesEvent, ErrorEvent, JobSpec, ProgressEvent, ResultEvent, Source
from tests.support.http_server import serve_directory
from tests.support.wer import wer

pytestmark = pytest.mark.slow


def run(engine: Engine, source: Source, **job) -> list:
    return list(engine.run(JobSpec(source=source, **job)))


def result_of(events: list) -> ResultEvent:
    assert isinstance(events[-1], ResultEvent), events[-1]
    return events[-1]


def text_of(cues: list[Cue]) -> str:
    return " ".join(c.text.replace("\n", " ") for c in cues)


@pytest.fixture(scope="module")
def dialogue_events(engine, clips) -> list:
    return run(engine, Source(path=str(clips.dialogue.wav)), formats=["srt", "vtt", "json"])


def test_dialogue_is_transcribed_accurately(dialogue_events, clips):
    result = result_of(dialogue_events)
    assert result.language == "en"
    assert result.duration == pytest.approx(clips.dialogue.duration, abs=0.05)
    error = wer(clips.dialogue.script, text_of(result.cues))
    assert error < 0.15, f"WER {error:.3f}"


def test_mp4_and_wav_give_the_same_text(engine, clips):
    wav = result_of(run(engine, Source(path=str(clips.short.wav))))
    mp4 = result_of(run(engine, Source(path=str(clips.short_mp4))))
    # AAC is lossy: its VAD edges differ by a few ms, so do the chunks, and a word Whisper
    # is unsure of may come out otherwise ("cook" / "call"); nothing is lost or shifted.
    assert wer(text_of(wav.cues), text_of(mp4.cues)) <= 0.05
    assert len(mp4.cues) == len(wav.cues)
    for theirs, mine in zip(wav.cues, mp4.cues, strict=True):
        assert abs(theirs.start - mine.start) < 0.1 and abs(theirs.end - mine.end) < 0.1


def test_spanish_is_detected(engine, clips):
    result = result_of(run(engine, Source(path=str(clips.spanish.wav))))
    assert result.language == "es"
    assert wer(clips.spanish.script, text_of(result.cues)) < 0.3


def test_cue_boundaries_on_sentence_boundaries_are_within_a_quarter_second(dialogue_events, clips):
    cues = result_of(dialogue_events).cues
    for sentence in clips.dialogue.sentences:
        start_error = min(abs(c.start - sentence.start) for c in cues)
        end_error = min(abs(c.end - sentence.end) for c in cues)
        assert start_error <= 0.25, f"start of {sentence.text!r} off by {start_error:.2f} s"
        assert end_error <= 0.25, f"end of {sentence.text!r} off by {end_error:.2f} s"


def test_every_cue_obeys_the_readability_rules(dialogue_events):
    cues = result_of(dialogue_events).cues
    style = JobSpec(source=Source(path="x")).style
    for cue, following in zip(cues, [*cues[1:], None], strict=True):
        lines = cue.text.split("\n")
        duration = cue.end - cue.start
        assert len(lines) <= style.max_lines, cue
        assert all(len(line) <= style.max_chars_per_line for line in lines), cue
        assert duration <= style.max_duration + 1e-6, cue
        room = following.start - style.min_gap if following else float("inf")
        if following:
            assert following.start - cue.end >= style.min_gap - 1e-3, (cue, following)
        # Short or fast cues may only break the rule when the next cue left no room to extend.
        constrained = cue.end >= room - 1e-3
        if duration < style.min_duration - 1e-3:
            assert constrained, f"cue {cue.id} too short ({duration:.2f} s) with room to extend"
        cps = len(cue.text.replace("\n", "")) / duration
        if cps > style.max_cps + 0.01:
            assert constrained, f"cue {cue.id} at {cps:.1f} chars/s with room to extend"


def test_events_stream_cues_before_transcription_ends(dialogue_events):
    kinds = [type(e).__name__ for e in dialogue_events]
    first_cues = kinds.index("CuesEvent")
    transcribing = [
        i
        for i, e in enumerate(dialogue_events)
        if isinstance(e, ProgressEvent) and e.stage == "transcribe"
    ]
    assert first_cues < transcribing[-1], "cues only arrived after transcription finished"
    streamed = [c for e in dialogue_events if isinstance(e, CuesEvent) for c in e.cues]
    assert streamed == result_of(dialogue_events).cues
    assert [c.id for c in streamed] == list(range(1, len(streamed) + 1))


def test_progress_never_goes_down_and_ends_at_100(dialogue_events):
    percents = [e.percent for e in dialogue_events if isinstance(e, ProgressEvent)]
    assert percents == sorted(percents)
    assert percents[-1] == 100
    assert any(e.eta_s is not None for e in dialogue_events if isinstance(e, ProgressEvent))


def test_result_carries_the_rendered_files(dialogue_events):
    from engine.formats import read_json, read_srt

    result = result_of(dialogue_events)
    files = {f.filename: f for f in result.files}
    assert set(files) == {"dialogue_en.srt", "dialogue_en.vtt", "dialogue_en.json"}
    assert len(read_srt(files["dialogue_en.srt"].content)) == len(result.cues)
    assert read_json(files["dialogue_en.json"].content) == result.cues
    assert set(result.timings) >= {"decode", "transcribe", "finalize", "total"}


def test_a_second_run_uses_the_transcript_cache(cache_root, clips, tmp_path):
    engine = Engine(EngineOptions(cache_dir=tmp_path, whisper_model="bundled:tiny.en"))
    source = Source(path=str(clips.short.wav))
    first = run(engine, source)
    second = run(engine, source)
    messages = [[getattr(e, "message", "") or "" for e in events] for events in (first, second)]
    assert any("cached transcript" in m for m in messages[1])
    # Nothing was transcribed again (how much faster that is: bench/responsiveness.py).
    assert any(m.startswith("Transcribing with") for m in messages[0])
    assert not any(m.startswith("Transcribing with") for m in messages[1])
    assert result_of(second).cues == result_of(first).cues


def test_a_url_is_downloaded_and_transcribed(engine, clips):
    with serve_directory(clips.short_mp4.parent) as base:
        result = result_of(run(engine, Source(url=f"{base}/{clips.short_mp4.name}")))
    assert wer(clips.short.script, text_of(result.cues)) < 0.15


def test_cancel_stops_the_job(engine, clips):
    events = []
    for event in engine.run(JobSpec(source=Source(path=str(clips.dialogue.wav)))):
        events.append(event)
        if isinstance(event, CuesEvent):
            engine.cancel()
    assert isinstance(events[-1], ErrorEvent) and events[-1].code == "cancelled"
    assert not any(isinstance(e, ResultEvent) for e in events)


def _bad_files(folder: Path, clips) -> dict[str, Path]:
    import subprocess

    empty = folder / "empty.mp4"
    empty.write_bytes(b"")
    corrupt = folder / "corrupt.mp4"
    corrupt.write_bytes(bytes(range(256)) * 64)
    text = folder / "notes.txt"
    text.write_text("this is not a video\n")
    silent = folder / "video_only.mp4"
    command = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(clips.short_mp4)]
    subprocess.run([*command, "-an", "-c", "copy", str(silent)], check=True)
    return {"empty": empty, "corrupt": corrupt, "text": text, "no audio": silent}


BAD_FILE_MESSAGES = {
    "empty": "empty",
    "corrupt": "not an audio or video file",
    "text": "not an audio or video file",
    "no audio": "no audio track",
}


def test_every_bad_input_gets_its_code_and_the_engine_survives(engine, clips, tmp_path):
    for kind, path in _bad_files(tmp_path, clips).items():
        [*_, last] = run(engine, Source(path=str(path)))
        assert isinstance(last, ErrorEvent) and last.code == "bad_input", (kind, last)
        assert BAD_FILE_MESSAGES[kind] in last.message.lower(), (kind, last.message)
        assert "Traceback" not in last.message and str(tmp_path) not in last.message
    [*_, missing] = run(engine, Source(path=str(tmp_path / "nope.mp4")))
    assert missing.code == "bad_input" and "not found" in missing.message.lower()
    result_of(run(engine, Source(path=str(clips.short.wav))))  # still works afterwards


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("ftp://example.com/a.mp4", "unsupported_source"),
        ("file:///etc/passwd", "unsupported_source"),
        ("http://127.0.0.1:9/a.mp4", "unsupported_source"),
        ("http://169.254.169.254/latest/meta-data", "unsupported_source"),
        ("http://10.1.2.3/video.mp4", "unsupported_source"),
    ],
)
def test_urls_a_server_must_not_fetch_are_refused(cache_root, url, code):
    serving = Engine(EngineOptions(cache_dir=cache_root, use_cache=False))
    [*_, last] = run(serving, Source(url=url))
    assert isinstance(last, ErrorEvent) and last.code == code, last


def test_unreachable_and_missing_urls_are_source_unavailable(engine, clips):
    with serve_directory(clips.short_mp4.parent) as base:
        [*_, missing] = run(engine, Source(url=f"{base}/no-such-clip.mp4"))
    [*_, closed] = run(engine, Source(url=base))  # the server is gone now
    for event in (missing, closed):
        assert isinstance(event, ErrorEvent) and event.code == "source_unavailable", event


def test_a_target_in_the_spoken_language_needs_no_llm(engine, clips):
    # No LLM is configured: the language is detected as English, so nothing needs translating.
    [*_, last] = run(engine, Source(path=str(clips.short.wav)), target_langs=["en"])
    assert isinstance(last, ResultEvent), last
    assert last.targets == {} and [f.filename for f in last.files] == ["short_en.srt"]
