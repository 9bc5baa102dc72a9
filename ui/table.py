"""Cues as the rows of the editable table, and the table's edits back onto the cues."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from engine.cues import wrap_text
from engine.languages import language_name
from engine.protocol import Cue, Style

FIXED_HEADERS = ("#", "start", "end", "speaker", "text")
# The columns a user may not edit: the id ties a row to its cue, and times are not editable.
STATIC_COLUMNS = [0, 1, 2, 3]
TEXT_COLUMN = FIXED_HEADERS.index("text")
# Percent of the table's width (Gradio takes px or %, not calc()); the text columns share the
# rest, less a little for the scroll bar.
_FIXED_WIDTHS = (5, 12, 12, 12)
_TEXT_SHARE = 99 - sum(_FIXED_WIDTHS)
# Shown in a target's cell when the LLM could not translate the cue: its files keep the source
# text there, which an empty cell would not say.
KEPT = "⚠ kept in the original language"


def headers(targets: Sequence[str]) -> list[str]:
    return [*FIXED_HEADERS, *(f"{language_name(lang)} ({lang})" for lang in targets)]


def column_widths(targets: Sequence[str]) -> list[str]:
    """Narrow fixed columns; the text columns share the rest, so none scrolls out of view."""
    text = f"{_TEXT_SHARE / (1 + len(targets)):.1f}%"
    return [*(f"{share}%" for share in _FIXED_WIDTHS), *([text] * (1 + len(targets)))]


def table(cues: Iterable[Cue], targets: Sequence[str]) -> dict[str, Any]:
    """The Dataframe value: one row per cue, one text column per language."""
    rows = [
        [
            cue.id,
            _clock(cue.start),
            _clock(cue.end),
            cue.speaker or "",
            _flat(cue.text),
            *(_cell(cue, lang) for lang in targets),
        ]
        for cue in cues
    ]
    return {"headers": headers(targets), "data": rows}


def apply_edits(
    cues: Sequence[Cue],
    rows: Sequence[Sequence[Any]],
    targets: Sequence[str],
    style: Style,
    language: str,
) -> list[Cue]:
    """The cues with the table's text; an edited cell is wrapped again to the style's lines.

    Rows are matched by id, so a row the user added or removed never shifts another cue."""
    by_id = {_row_id(row): row for row in rows}
    edited = []
    for cue in cues:
        row = by_id.get(cue.id)
        edited.append(cue if row is None else _edit(cue, row, targets, style, language))
    return edited


def _clock(seconds: float) -> str:
    minutes, rest = divmod(max(seconds, 0.0), 60)
    return f"{int(minutes)}:{rest:06.3f}"


def _edit(cue: Cue, row: Sequence[Any], targets: Sequence[str], style: Style, language: str) -> Cue:
    cells = [str(cell or "") for cell in row[TEXT_COLUMN:]]
    text = _rewrapped(cue.text, cells[0], style, language)
    translations = dict(cue.translations)
    untranslated = list(cue.untranslated)
    for lang, cell in zip(targets, cells[1:], strict=False):
        if _flat(cell) == _cell(cue, lang):
            continue  # unchanged: keeps the engine's own line breaks, and the marker stays one
        translations[lang] = wrap_text(cell, style, lang)
        # A line the user wrote is no longer the source text standing in for a translation.
        untranslated = [code for code in untranslated if code != lang]
    return cue.model_copy(
        update={"text": text, "translations": translations, "untranslated": untranslated}
    )


def _rewrapped(before: str, cell: str, style: Style, language: str) -> str:
    # Cells show the text on one line; an unchanged cell keeps the engine's own line breaks.
    if _flat(cell) == _flat(before):
        return before
    return wrap_text(cell, style, language)


def _cell(cue: Cue, lang: str) -> str:
    translated = cue.translations.get(lang, "")
    if not translated and lang in cue.untranslated:
        return KEPT
    return _flat(translated)


def _flat(text: str) -> str:
    return " ".join(text.split())


def _row_id(row: Sequence[Any]) -> int | None:
    try:
        return int(row[0])
    except (TypeError, ValueError, IndexError):
        return None
