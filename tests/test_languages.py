"""engine.languages: names, comparisons and the checks every front end applies to a code."""

from __future__ import annotations

import pytest

from engine.languages import (
    WHISPER_LANGUAGES,
    check_spoken,
    check_target,
    language_name,
    same_language,
)
from engine.protocol import SubtideError


def test_language_names() -> None:
    assert language_name("de") == "German"
    assert language_name("pt-BR") == "Portuguese (Brazil)"
    assert language_name("zh_Hant") == "Chinese (Traditional)"
    assert language_name("es-419") == "Spanish (Latin America)"
    assert language_name("tlh") == "tlh"
    assert same_language("en", "en-US")
    assert same_language("PT_br", "pt")
    assert not same_language("en", "de")
    assert not same_language(None, "en")


def test_every_whisper_language_has_a_name() -> None:
    assert len(WHISPER_LANGUAGES) == 100
    assert [code for code in WHISPER_LANGUAGES if language_name(code) == code] == []


@pytest.mark.parametrize(
    ("given", "code"), [("en", "en"), ("EN", "en"), (" ja ", "ja"), ("en-US", "en"), ("yue", "yue")]
)
def test_a_spoken_language_is_the_code_whisper_takes(given: str, code: str) -> None:
    assert check_spoken(given) == code


@pytest.mark.parametrize(
    ("given", "suggested"), [("xx", None), ("fil", None), ("english", "en"), ("Deutsch", "de")]
)
def test_a_spoken_language_whisper_does_not_know_is_refused(
    given: str, suggested: str | None
) -> None:
    with pytest.raises(SubtideError) as caught:
        check_spoken(given)
    assert caught.value.code == "bad_input"
    assert f"'{given}'" in caught.value.message
    hint = caught.value.hint or ""
    assert "en, es, de, ja" in hint and "leave it out to detect" in hint
    assert (f"Did you mean {suggested}?" in hint) == bool(suggested)


@pytest.mark.parametrize(
    ("given", "code"),
    [
        ("de", "de"),
        ("DE", "de"),
        ("PT_br", "pt-BR"),
        ("es-419", "es-419"),
        ("fr-ca", "fr-CA"),
        ("zh-hant", "zh-Hant"),
        ("zh-Hans", "zh-Hans"),
        ("zh-Hant-TW", "zh-Hant-TW"),
        ("fil", "fil"),
        ("zu", "zu"),  # ISO 639-1, though Whisper does not transcribe it
    ],
)
def test_a_target_is_checked_and_spelled_as_usual(given: str, code: str) -> None:
    assert check_target(given) == code


@pytest.mark.parametrize(
    ("given", "suggested"),
    [
        ("zz", None),
        ("german", "de"),
        ("Deutsch", "de"),
        ("Portuguese", "pt"),
        ("en-english", None),
        ("zh-Hant-TW-x", None),
        ("", None),
    ],
)
def test_a_target_that_is_no_language_code_is_refused(given: str, suggested: str | None) -> None:
    with pytest.raises(SubtideError) as caught:
        check_target(given)
    assert caught.value.code == "bad_input"
    assert f"'{given}'" in caught.value.message
    hint = caught.value.hint or ""
    assert (f"Did you mean {suggested}?" in hint) == bool(suggested)


@pytest.mark.parametrize("given", ["en-AA", "de-QX", "pt-ZZ", "es-999", "zh-Hant-XY"])
def test_a_target_whose_region_is_none_is_refused(given: str) -> None:
    """Each target is a pass through the LLM: a made-up variant is never one worth paying for."""
    with pytest.raises(SubtideError) as caught:
        check_target(given)
    assert "names no region" in caught.value.message and "ISO 3166" in (caught.value.hint or "")


def test_the_app_offers_exactly_the_languages_the_engine_accepts() -> None:
    from ui.options import source_choices, target_choices

    spoken = [code for _, code in source_choices()[1:]]
    assert sorted(spoken) == sorted(WHISPER_LANGUAGES)
    assert all(check_target(code) == code for _, code in target_choices())
