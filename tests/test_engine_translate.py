"""Translation inside the pipeline: overlap with transcription, skip, auth, resume, key safety.

The LLM is the fake OpenAI server in tests/support (the real SDK talks to it over HTTP)."""

from pathlib import Path

import pytest

from engine.cues import wrap_text
from engine.pipeline import Engine, EngineOptions
from engine.protocol import (
    CuesEvent,
    ErrorEvent,
    JobSpec,
    ProgressEvent,
    ResultEvent,
    Source,
    Style,
    TranslationConfig,
)
from engine.translate import TranslateOptions
from tests.support.openai_server import fake_translation, serve_openai

pytestmark = pytest.mark.slow
KEY = "sk-test-5ecret-do-not-leak"


def engine_for(url: str, cache: Path, *, batch: int = 4, **llm) -> Engine:
    return Engine(
        EngineOptions(
            whisper_model="bundled:tiny.en",
            cache_dir=cache,
            llm=TranslationConfig(base_url=f"{url}/v1", model="test-model", **llm),
            translate=TranslateOptions(batch_size=batch, context=1, backoff=0.05),
        )
    )


def job(clip: Path, **fields) -> JobSpec:
    return JobSpec(source=Source(path=str(clip)), **fields)


def result_of(events: list) -> ResultEvent:
    assert isinstance(events[-1], ResultEvent), events[-1]
    return events[-1]


def expected(text: str, language: str = "German") -> str:
    return wrap_text(fake_translation(text.replace("\n", " "), language), Style(), "de")


def test_every_cue_is_translated_while_transcription_goes_on(clips, tmp_path):
    with serve_openai(api_key=KEY) as fake:
        engine = engine_for(fake.url, tmp_path, api_key=KEY)
        events = list(engine.run(job(clips.dialogue.wav, target_langs=["de"], formats=["srt"])))
    result = result_of(events)
    assert result.cues and all(c.translations["de"] == expected(c.text) for c in result.cues)
    assert all(not c.untranslated for c in result.cues)
    assert [f.filename for f in result.files] == ["dialogue_en.srt", "dialogue_en.de.srt"]
    # A translation arrived in a cues event before the last transcription progress event.
    first_translated = next(
        i
        for i, e in enumerate(events)
        if isinstance(e, CuesEvent) and any(c.translations for c in e.cues)
    )
    last_transcribing = max(
        i for i, e in enumerate(events) if isinstance(e, ProgressEvent) and e.stage == "transcribe"
    )
    assert first_translated < last_transcribing, "translation only started after transcription"
    percents = [e.percent for e in events if isinstance(e, ProgressEvent)]
    assert percents == sorted(percents)


def test_dual_and_several_targets(clips, tmp_path):
    with serve_openai() as fake:
        engine = engine_for(fake.url, tmp_path, batch=25)
        spec = job(clips.short.wav, target_langs=["de", "ja"], style=Style(dual=True))
        result = result_of(list(engine.run(spec)))
    names = {f.filename for f in result.files}
    assert names == {
        "short_en.srt",
        "short_en.de.srt",
        "short_en.ja.srt",
        "short_en.en-de.srt",
        "short_en.en-ja.srt",
    }
    dual = next(f for f in result.files if f.filename == "short_en.en-de.srt").content
    first = result.cues[0]
    assert first.text.split("\n")[0] in dual and first.translations["de"].split("\n")[0] in dual
    assert {tuple(sorted(c.translations)) for c in result.cues} == {("de", "ja")}


def test_no_translation_when_the_video_already_is_in_the_target(clips, tmp_path):
    with serve_openai() as fake:
        engine = engine_for(fake.url, tmp_path)
        events = list(engine.run(job(clips.short.wav, target_langs=["en-US"])))
    assert not fake.requests
    assert any("already in en-US" in getattr(e, "message", "") for e in events)
    assert [f.filename for f in result_of(events).files] == ["short_en.srt"]


def test_a_refused_key_stops_the_job_at_once(clips, tmp_path):
    with serve_openai(api_key="the-right-key") as fake:
        engine = engine_for(fake.url, tmp_path, batch=2, api_key=KEY)
        events = list(engine.run(job(clips.dialogue.wav, target_langs=["de"])))
    assert isinstance(events[-1], ErrorEvent) and events[-1].code == "auth", events[-1]
    assert KEY not in events[-1].model_dump_json()
    assert len(fake.requests) == 1, "requests went on after the key was refused"


def test_no_llm_configured_is_refused_before_any_work(clips, tmp_path):
    engine = Engine(EngineOptions(cache_dir=tmp_path, whisper_model="bundled:tiny.en"))
    events = list(engine.run(job(clips.short.wav, target_langs=["de"])))
    assert isinstance(events[-1], ErrorEvent) and events[-1].code == "bad_input"
    assert "SERVER_API_KEY" in (events[-1].hint or "")
    assert not any(isinstance(e, CuesEvent) for e in events)


def test_the_servers_key_never_goes_to_a_url_the_job_chose(clips, tmp_path):
    with serve_openai() as fake:
        engine = Engine(
            EngineOptions(
                whisper_model="bundled:tiny.en",
                cache_dir=tmp_path,
                allow_private_urls=True,
                llm=TranslationConfig(base_url="https://llm.example/v1", model="m", api_key=KEY),
            )
        )
        spec = job(
            clips.short.wav,
            target_langs=["de"],
            translation=TranslationConfig(base_url=f"{fake.url}/v1", model="local"),
        )
        result_of(list(engine.run(spec)))
    assert fake.requests
    assert all(KEY not in str(r.headers) for r in fake.requests)


def test_a_job_may_not_point_a_serving_engine_at_a_private_llm(clips, tmp_path):
    engine = Engine(EngineOptions(cache_dir=tmp_path, allow_private_urls=False))
    spec = job(
        clips.short.wav,
        target_langs=["de"],
        translation=TranslationConfig(base_url="http://169.254.169.254/v1", model="m"),
    )
    [*_, last] = engine.run(spec)
    assert isinstance(last, ErrorEvent) and last.code == "unsupported_source"


def test_a_rerun_after_cancel_sends_only_the_missing_batches(clips, tmp_path):
    with serve_openai(latency=0.3) as fake:
        engine = engine_for(fake.url, tmp_path, batch=3)
        spec = job(clips.dialogue.wav, target_langs=["de"])
        first = []
        for event in engine.run(spec):
            first.append(event)
            if isinstance(event, CuesEvent) and any(c.translations for c in event.cues):
                engine.cancel()
        assert isinstance(first[-1], ErrorEvent) and first[-1].code == "cancelled"
        cached = len(list((tmp_path / "translations").rglob("*.json")))
        sent_first = len(fake.requests)
        fake.reset()
        result = result_of(list(engine.run(spec)))
    batches = -(-len(result.cues) // 3)
    assert 0 < cached < batches
    assert len(fake.requests) == batches - cached
    assert sent_first >= cached
    assert all(c.translations["de"] == expected(c.text) for c in result.cues)
