"""What a job's translations came to, worded once for the engine's messages, the command line
and the app. Model-free: the front ends import it."""

from __future__ import annotations

from collections.abc import Sequence

from engine.languages import language_name, same_language
from engine.protocol import ResultEvent, TargetReport, TranslationProblem

_WHY: dict[TranslationProblem, str] = {
    "timeout": "the translation service never answered in time",
    "unavailable": "the translation service answered with errors or could not be reached",
    "invalid": "the model's replies never carried the lines as asked",
    "unchanged": "the model gave the lines back untranslated",
    "no_model": "no LLM is configured to translate with",
}
_WHAT_TO_DO: dict[TranslationProblem, str] = {
    "timeout": "on a local server, try a smaller or faster model, a longer TRANSLATION_TIMEOUT, "
    "or TRANSLATION_CONCURRENCY=1",
    "unavailable": "check that the LLM server runs and answers at its URL, SERVER_API_URL or "
    "--llm-url, then run again: the lines done are cached",
    "invalid": "try a more capable model, SERVER_MODEL or --llm-model",
    "unchanged": "try a more capable model, SERVER_MODEL or --llm-model",
    "no_model": "set SERVER_API_KEY, and SERVER_API_URL for a server other than OpenAI, or pass "
    "--llm-url and --llm-key; Ollama or LM Studio need only the URL and model",
}


def incomplete(reports: dict[str, TargetReport]) -> dict[str, TargetReport]:
    """The targets with lines kept in the source language, in the job's order."""
    return {lang: report for lang, report in reports.items() if report.kept}


def written(reports: dict[str, TargetReport], targets: list[str]) -> list[str]:
    """The targets that get subtitle files: all but those where nothing could be translated."""
    return [lang for lang in targets if not (lang in reports and reports[lang].failed)]


def file_targets(asked: Sequence[str], result: ResultEvent) -> list[str]:
    """The target languages of a job's files and video tracks: asked for, not the spoken
    language (its text is the original), and translated."""
    others = [lang for lang in asked if not same_language(lang, result.language)]
    return written(result.targets, others)


def kept_message(lang: str, report: TargetReport, source_lang: str) -> str:
    """ "38 of 40 lines translated into German; 2 kept in English" """
    kept_in = "the original language" if source_lang == "und" else language_name(source_lang)
    return (
        f"{report.translated} of {report.total} lines translated into {language_name(lang)}; "
        f"{report.kept} kept in {kept_in}"
    )


def failure_message(lang: str, report: TargetReport) -> tuple[str, str | None]:
    """Why nothing could be translated into `lang`, and what to do: (message, hint)."""
    reason = report.reason or "unavailable"
    message = (
        f"Nothing could be translated into {language_name(lang)}: {_WHY[reason]}. "
        f"No {language_name(lang)} subtitles were written."
    )
    return message, _WHAT_TO_DO[reason]


def why(report: TargetReport) -> str:
    """The reason lines were kept, with what to do, for a partial translation."""
    reason = report.reason or "unavailable"
    return f"{_WHY[reason]}; {_WHAT_TO_DO[reason]}"


def fit_message(lang: str, report: TargetReport) -> str | None:
    """ "German: 97 % of cues within the line and reading-speed limits" """
    if report.within_limits is None:
        return None
    share = round(report.within_limits * 100)
    return f"{language_name(lang)}: {share} % of cues within the line and reading-speed limits"
