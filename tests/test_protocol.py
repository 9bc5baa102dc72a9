"""The protocol's JSON is what every transport carries: it must round-trip exactly."""

import pytest
from pydantic import ValidationError

from engine.protocol import (
    Backend,
    CaptionTrack,
    Cue,
    CuesEvent,
    ErrorEvent,
    JobSpec,
    ProgressEvent,
    RenderedFile,
    ResultEvent,
    Source,
    Style,
    SubtideError,
    TranslationConfig,
    Word,
    parse_event,
)

CUE = Cue(
    id=3,
    start=1.25,
    end=2.5,
    text="Hello there.",
    translations={"de": "Hallo."},
    speaker="SPEAKER_1",
    words=[Word(start=1.25, end=1.6, text=" Hello", probability=0.9)],
)

EVENTS = [
    ProgressEvent(stage="transcribe", percent=42.5, message="Transcribing", eta_s=3.0),
    CuesEvent(cues=[CUE]),
    ResultEvent(
        cues=[CUE],
        language="en",
        duration=12.0,
        title="A talk",
        timings={"transcribe": 1.5},
        files=[RenderedFile(format="srt", filename="a.srt", content="1\n")],
    ),
    ResultEvent(
        cues=[CUE],
        language="de",
        duration=60.0,
        source="captions-manual",
        caption_tracks=[
            CaptionTrack(id="manual:de", lang="de", name="German", ext="vtt"),
            CaptionTrack(id="auto:en-orig", lang="en", name="English", automatic=True, ext="json3"),
        ],
        caption_track="manual:de",
    ),
    ErrorEvent(code="bad_input", message="File not found: x.mp4", hint="Check the path."),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.type)
def test_every_event_round_trips_through_json(event):
    again = parse_event(event.model_dump_json())
    assert again == event
    assert type(again) is type(event)
    assert parse_event(event.model_dump()) == event


def test_job_spec_round_trips_with_defaults_and_full_options():
    full = JobSpec(
        source=Source(url="https://example.com/v", title="T"),
        source_lang="es",
        target_langs=["de", "ja"],
        whisper_model="small",
        diarize="auto",
        num_speakers=2,
        translation=TranslationConfig(base_url="http://llm", model="m", api_key="sk-secret"),
        glossary={"Subtide": "Subtide"},
        style=Style(max_chars_per_line=37, dual=True),
        formats=["srt", "vtt"],
        force_asr=True,
        caption_track="auto:en-orig",
        recue_captions=True,
    )
    assert JobSpec.model_validate_json(full.model_dump_json()) == full
    plain = JobSpec(source=Source(path="a.mp4"))
    assert plain.formats == ["srt"] and plain.style.max_chars_per_line == 42
    assert not plain.force_asr and plain.caption_track is None and not plain.recue_captions
    assert JobSpec.model_validate_json(plain.model_dump_json()) == plain


def test_api_key_never_appears_in_repr():
    job = JobSpec(
        source=Source(url="https://x"), translation=TranslationConfig(api_key="sk-secret")
    )
    assert "sk-secret" not in repr(job)
    assert "sk-secret" not in str(job)


@pytest.mark.parametrize(
    "fields",
    [{}, {"url": "https://x", "path": "a.mp4"}, {"url": "", "path": None}],
)
def test_a_source_needs_exactly_one_origin(fields):
    with pytest.raises(ValidationError, match="exactly one"):
        Source(**fields)


def test_unknown_fields_and_bad_values_are_refused():
    with pytest.raises(ValidationError):
        JobSpec(source=Source(path="a"), formats=["doc"])
    with pytest.raises(ValidationError):
        JobSpec.model_validate({"source": {"path": "a"}, "surprise": 1})
    with pytest.raises(ValidationError):
        Style(min_duration=9, max_duration=7)
    with pytest.raises(ValidationError):
        parse_event({"type": "progress", "stage": "transcribe", "percent": 140})
    with pytest.raises(ValidationError):
        parse_event({"type": "nonsense"})


def test_subtide_error_becomes_an_error_event():
    event = SubtideError("auth", "Key refused", hint="Check the key").to_event()
    assert event == ErrorEvent(code="auth", message="Key refused", hint="Check the key")


def test_engine_satisfies_the_backend_protocol():
    from engine import Engine

    assert isinstance(Engine(), Backend)


def test_a_result_says_where_its_text_came_from():
    plain = parse_event({"type": "result", "cues": [], "language": "en", "duration": 1.0})
    assert plain.source == "asr" and plain.caption_tracks == [] and plain.caption_track is None
    with pytest.raises(ValidationError):
        parse_event({"type": "result", "cues": [], "language": "en", "duration": 1, "source": "x"})


def test_target_reports_of_the_parts_of_a_cut_file_combine():
    from engine.protocol import TargetReport

    parts = [
        TargetReport(translated=3, total=4, reason="timeout", within_limits=1.0),
        TargetReport(translated=5, total=5, within_limits=0.8),
        TargetReport(translated=0, total=2, reason="invalid"),
    ]
    whole = TargetReport.combine(parts)
    assert (whole.translated, whole.total, whole.kept) == (8, 11, 3)
    assert whole.reason == "invalid"  # the part that kept the most lines says why
    assert whole.within_limits == (3 * 1.0 + 5 * 0.8) / 8
    assert not whole.failed and TargetReport.combine([parts[2]]).failed
