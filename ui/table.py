"""Cues as the rows of the editable table, and the table's edits back onto the cues."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from engine.edits import Delete, Edit, SetText, SetTimes, clock, flat
from engine.languages import language_name
from engine.protocol import Cue, SubtideError

FIXED_HEADERS = ("#", "start", "end", "speaker", "text")
# The columns a user may not edit: the id ties a row to its cue, and a speaker is renamed for
# all its cues at once (the Speakers tools).
STATIC_COLUMNS = [0, 3]
START_COLUMN, END_COLUMN = FIXED_HEADERS.index("start"), FIXED_HEADERS.index("end")
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
            clock(cue.start),
            clock(cue.end),
            cue.speaker or "",
            flat(cue.text),
            *(_cell(cue, lang) for lang in targets),
        ]
        for cue in cues
    ]
    return {"headers": headers(targets), "data": rows}


def edits(
    cues: Sequence[Cue],
    rows: Sequence[Sequence[Any]],
    targets: Sequence[str],
    *,
    delete_cleared: bool = False,
) -> list[Edit]:
    """The table's changes as edits of the cue list: text, translations and times, and a
    deleted row (the row menu's) as its cue deleted. Rows are matched by id; an unchanged cell
    gives no edit, so the engine's line breaks stay. A row the menu added is no cue's: the
    table is drawn again from the list, without it (cues are added by Split and New cue).
    A cue whose text was cleared is deleted when the user confirmed it (`delete_cleared`);
    otherwise its empty text is refused."""
    width = len(FIXED_HEADERS) + len(targets)
    if any(len(row) != width for row in rows):
        # A column added or deleted (the cell menu offers both): no cell can be trusted to
        # be the one it was, so nothing is read.
        raise SubtideError(
            "bad_input",
            "The table's columns cannot be added or removed.",
            "Edit the cells of the columns there are; the table is drawn again as it was.",
        )
    by_id = {_row_id(row): row for row in rows}
    found: list[Edit] = []
    for cue in cues:
        row = by_id.get(cue.id)
        if row is None or (delete_cleared and not _text(row)):
            found.append(Delete(cue.id))
        else:
            found.extend(_row_edits(cue, row, targets))
    return found


def _text(row: Sequence[Any]) -> str:
    return flat(str(row[TEXT_COLUMN] or "")) if len(row) > TEXT_COLUMN else ""


def _row_edits(cue: Cue, row: Sequence[Any], targets: Sequence[str]) -> list[Edit]:
    found: list[Edit] = []
    start, end = (_seconds(row[k]) for k in (START_COLUMN, END_COLUMN))
    if (start, end) != (_round(cue.start), _round(cue.end)):
        found.append(SetTimes(cue.id, start, end))
    cells = [flat(str(cell or "")) for cell in row[TEXT_COLUMN:]]
    if cells[0] != flat(cue.text):
        found.append(SetText(cue.id, cells[0]))
    for lang, cell in zip(targets, cells[1:], strict=False):
        if cell != _cell(cue, lang):
            found.append(SetText(cue.id, cell, lang))
    return found


def _seconds(cell: Any) -> float:
    """A time cell ("1:02.500", "0:01:02.5" or "62.5") in seconds, to the millisecond shown."""
    text = str(cell or "").strip()
    try:
        seconds = 0.0
        for part in text.split(":"):
            seconds = seconds * 60 + float(part)
    except ValueError:
        raise SubtideError(
            "bad_input", f"{text!r} is not a time.", "Write it as minutes:seconds, e.g. 1:02.500."
        ) from None
    return _round(seconds)


def _round(seconds: float) -> float:
    return round(seconds, 3)


def _cell(cue: Cue, lang: str) -> str:
    translated = cue.translations.get(lang, "")
    if not translated and lang in cue.untranslated:
        return KEPT
    return flat(translated)


def _row_id(row: Sequence[Any]) -> int | None:
    try:
        return int(row[0])
    except (TypeError, ValueError, IndexError):
        return None
