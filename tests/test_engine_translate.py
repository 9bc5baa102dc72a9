"""Translation inside the pipeline: overlap with transcription, skip, auth, resume, key safety.

The LLM is the fake OpenAI server in tests/support (the real SDK talks to it over HTTP)."""

import dataclasses
import json
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
from tests.support.openai_server import (
    FakeOpenAI,
    Reply,
    fake_translation,
    lines_of,
    serve_openai,
)
from tests.support.subtitles import numbered_srt

pytestmark = pytest.mark.slow
KEY = "sk-test-5ecret-do-not-leak"


def engine_for(
    url: str, cache: Path, *, batch: int = 4, concurrency: int | None = None, **llm
) -> Engine:
    translate = TranslateOptions(batch_size=batch, context=1, backoff=0.05)
    if concurrency:
        translate = dataclasses.replace(translate, concurrency=concurrency)
    return Engine(
        EngineOptions(
            whisper_model="bundled:tiny.en",
            # Whisper's speech chunks one at a time: cues come chunk by chunk, as on a long file.
            batch_size=1,
            cache_dir=cache,
            llm=TranslationConfig(base_url=f"{url}/v1", model="test-model", **llm),
            translate=translate,
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


@pytest.mark.parametrize(
    "source, lang",
    [("short.wav", "en"), ("talk.srt", None)],
    ids=["media-in-a-given-language", "subtitle-file"],
)
def test_no_llm_is_refused_before_any_work_when_a_target_surely_needs_one(
    clips, tmp_path, source, lang
):
    # No caption track can cover a file, and its language is given (a subtitle file's is never
    # detected): the target needs translating, whatever the job finds.
    path = clips.short.wav if source == "short.wav" else numbered_srt(tmp_path, 2)
    engine = Engine(EngineOptions(cache_dir=tmp_path, whisper_model="bundled:tiny.en"))
    events = list(engine.run(job(path, source_lang=lang, target_langs=["de"])))
    assert isinstance(events[-1], ErrorEvent) and events[-1].code == "bad_input"
    assert "SERVER_API_KEY" in (events[-1].hint or "")
    assert not any(isinstance(e, CuesEvent) for e in events)


def test_without_an_llm_a_target_that_turns_out_to_need_one_fails_alone(clips, tmp_path):
    # The spoken language is detected, so only then is it known that German needs translating.
    engine = Engine(EngineOptions(cache_dir=tmp_path, whisper_model="bundled:tiny.en"))
    events = list(engine.run(job(clips.short.wav, target_langs=["de", "en"])))
    result = result_of(events)
    assert [f.filename for f in result.files] == ["short_en.srt"]
    assert result.targets["de"].failed and result.targets["de"].reason == "no_model"
    assert all(c.untranslated == ["de"] for c in result.cues)
    assert any(
        "Nothing could be translated into German" in e.message
        for e in events
        if isinstance(e, ProgressEvent)
    )


def _asks_for(language: str, cue_id: int | None = None):
    """A fake-server predicate: a batch into `language` (holding `cue_id`, when given)."""

    def matches(body: dict) -> bool:
        lines = lines_of(body) or {}
        in_language = language in json.dumps(body)
        return in_language and (cue_id is None or str(cue_id) in lines)

    return matches


def test_lines_the_llm_never_translates_are_counted_listed_and_kept(tmp_path):
    with serve_openai() as fake:
        fake.when(_asks_for("German", 4), Reply("invalid_json"))
        engine = engine_for(fake.url, tmp_path, batch=3)
        spec = job(
            numbered_srt(tmp_path, 6),
            source_lang="en",
            target_langs=["de"],
            formats=["srt", "json"],
        )
        events = list(engine.run(spec))
    result = result_of(events)
    report = result.targets["de"]
    assert (report.translated, report.total, report.kept) == (5, 6, 1)
    assert report.reason == "invalid"
    assert [c.id for c in result.cues if c.untranslated] == [4]
    files = {f.filename: f.content for f in result.files}
    assert json.loads(files["talk.json"])["untranslated"] == {"de": [4]}
    assert "\nLine 4.\n" in files["talk.de.srt"]  # the source text stands in
    assert any(
        "5 of 6 lines translated into German; 1 kept in English" in e.message
        for e in events
        if isinstance(e, ProgressEvent)
    )


def test_a_target_that_fails_entirely_gets_no_file_and_another_still_does(tmp_path):
    with serve_openai() as fake:
        fake.when(_asks_for("German"), Reply("status", status=503))
        engine = engine_for(fake.url, tmp_path, batch=4)
        spec = job(numbered_srt(tmp_path, 3), source_lang="en", target_langs=["de", "fr"])
        events = list(engine.run(spec))
    result = result_of(events)
    assert [f.filename for f in result.files] == ["talk.srt", "talk.fr.srt"]
    german, french = result.targets["de"], result.targets["fr"]
    assert german.failed and german.reason == "unavailable"
    assert (french.translated, french.kept) == (3, 0) and french.within_limits == 1.0
    shown = [e.message for e in events if isinstance(e, ProgressEvent)]
    assert any("Nothing could be translated into German" in m for m in shown)
    assert "French: 100 % of cues within the line and reading-speed limits" in shown
    # All within the limits: said in passing, not as a lasting notice.
    notices = [e.message for e in events if isinstance(e, ProgressEvent) and e.notice]
    assert not any("reading-speed limits" in m for m in notices)


def test_translation_progress_counts_lines_and_estimates_the_time_left(tmp_path):
    with serve_openai() as fake:
        engine = engine_for(fake.url, tmp_path, batch=2)
        spec = job(numbered_srt(tmp_path, 8), source_lang="en", target_langs=["de", "fr"])
        events = list(engine.run(spec))
    result_of(events)
    counted = [
        e for e in events if isinstance(e, ProgressEvent) and e.message.startswith("Translated ")
    ]
    assert counted and counted[-1].message.startswith("Translated 16 of 16 lines (de, fr)")
    # The time left comes only from lines already done, and is never negative.
    assert all(e.eta_s is None or e.eta_s >= 0 for e in counted)
    assert all(("left" in e.message) == (e.eta_s is not None) for e in counted)


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


def batches_sent(fake: FakeOpenAI) -> int:
    """Translation batches sent, not counting a request for shorter lines (it has a note)."""
    return sum(
        1
        for r in fake.requests
        if lines_of(r.json) is not None and '"note"' not in r.json["messages"][-1]["content"]
    )


def test_a_rerun_after_cancel_sends_only_the_missing_batches(clips, tmp_path):
    with serve_openai(latency=0.3) as fake:
        # One batch at a time: the cancel comes while most are still to be sent.
        engine = engine_for(fake.url, tmp_path, batch=3, concurrency=1)
        spec = job(clips.dialogue.wav, target_langs=["de"])
        first = []
        for event in engine.run(spec):
            first.append(event)
            if isinstance(event, CuesEvent) and any(c.translations for c in event.cues):
                engine.cancel()
        assert isinstance(first[-1], ErrorEvent) and first[-1].code == "cancelled"
        cached = len(list((tmp_path / "translations").rglob("*.json")))
        sent_first = batches_sent(fake)
        fake.reset()
        result = result_of(list(engine.run(spec)))
    batches = -(-len(result.cues) // 3)
    assert 0 < cached < batches
    assert batches_sent(fake) == batches - cached
    assert sent_first >= cached
    assert all(c.translations["de"] == expected(c.text) for c in result.cues)
