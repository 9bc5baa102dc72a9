"""A user's edits to a result's cues: one operation model, validated and undoable.

Every change (text, times, shift, split, merge, insert, delete, speaker names, replace) is an
`Edit` that a `CueList` applies, giving a new list that keeps the one before for undo. Every view
and export is derived from the current list, so the UI never edits a copy that could drift from
what gets written. A cue keeps its id for its life, and an id is never given twice: the UI, the
undo history and the table all name the same cue by it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from operator import attrgetter
from typing import NamedTuple

from engine.cues import wrap_text
from engine.protocol import Cue, Style, SubtideError, Word

# Undo steps kept: plenty for a session of fixes, bounded so a long one does not pin every
# version of a long list (versions share their unchanged cues, so a step costs little).
HISTORY_LIMIT = 200
# A time typed exactly at a limit must not be refused for a float sum's last digit.
_EPSILON = 1e-6
# Scripts written without spaces between words: their text may be cut, and is joined, between
# any two characters. (CJK punctuation, kana, Han ideographs, full-width forms; Hangul is
# spaced, so not here.)
_NO_SPACE_SCRIPT = re.compile(
    r"[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]"
)


@dataclass(frozen=True)
class SetText:
    """A cue's source text (`lang` None) or its translation into `lang`."""

    cue_id: int
    text: str
    lang: str | None = None

    def _apply(self, doc: CueList) -> list[Cue]:
        index, cue = doc._find(self.cue_id)
        if self.lang is not None:
            return doc._replaced(index, doc._with_translation(cue, self.lang, self.text))
        if not self.text.strip():
            raise _refused(
                f"Cue {cue.id} would have no text: delete the cue instead.",
                "Delete the cue to take it out of the subtitles.",
            )
        return doc._replaced(index, _with_source(cue, doc._rewrap(cue.text, self.text, None)))


@dataclass(frozen=True)
class SetTimes:
    """New times for a cue; None keeps that time as it is."""

    cue_id: int
    start: float | None = None
    end: float | None = None

    def _apply(self, doc: CueList) -> list[Cue]:
        index, cue = doc._find(self.cue_id)
        start = cue.start if self.start is None else self.start
        end = cue.end if self.end is None else self.end
        who = f"Cue {cue.id}"
        _check_order(who, start, end)
        before, after = doc._around(index, index + 1)
        doc._check_span(
            who, start, end, before, after, earlier=start < cue.start, later=end > cue.end
        )
        return doc._replaced(index, cue.model_copy(update={"start": start, "end": end}))


@dataclass(frozen=True)
class Shift:
    """Move the cues from `first_id` to `last_id` (None: the first / the last) by `delta_s`."""

    delta_s: float
    first_id: int | None = None
    last_id: int | None = None

    def _apply(self, doc: CueList) -> list[Cue]:
        if not doc.cues or self.delta_s == 0:
            return list(doc.cues)
        first = 0 if self.first_id is None else doc._find(self.first_id)[0]
        last = len(doc.cues) - 1 if self.last_id is None else doc._find(self.last_id)[0]
        if first > last:
            raise _refused(
                f"Cue {doc.cues[first].id} comes after cue {doc.cues[last].id}.",
                "Give the range from its earliest cue to its latest.",
            )
        moved = [_shifted(cue, self.delta_s) for cue in doc.cues[first : last + 1]]
        earlier = self.delta_s < 0
        before, after = doc._around(first, last + 1)
        doc._check_span(
            f"Cue {(moved[0] if earlier else moved[-1]).id}",
            moved[0].start,
            max(cue.end for cue in moved),
            before,
            after,
            earlier=earlier,
            later=not earlier,
        )
        return [*doc.cues[:first], *moved, *doc.cues[last + 1 :]]


@dataclass(frozen=True)
class Split:
    """Cut a cue in two at `at` (the playhead, or a word's start); the second half is a new cue."""

    cue_id: int
    at: float

    def _apply(self, doc: CueList) -> list[Cue]:
        index, cue = doc._find(self.cue_id)
        if not cue.start < self.at < cue.end:
            raise _refused(
                f"{clock(self.at)} is not inside cue {cue.id}, which runs from "
                f"{clock(cue.start)} to {clock(cue.end)}.",
                "Split it at a time between its start and its end.",
            )
        gap = doc.style.min_gap
        if cue.words and _spells(cue.words, cue.text):
            halves = _halves_by_words(cue, cue.words, self.at, gap)
        else:
            halves = _halves_by_text(cue, self.at, gap)
        if halves is None or not all(half.text and half.start < half.end for half in halves):
            raise _refused(
                f"Cue {cue.id} cannot be split at {clock(self.at)}: one half would be empty.",
                "Split it between two words, away from its start and its end.",
            )
        left, right = halves
        # A translation cannot be cut where its source is (word order differs), so the first
        # half keeps it whole and the second is listed as untranslated: exports show its source
        # text there, and the UI marks it for the user to translate.
        first = cue.model_copy(
            update={"end": left.end, "text": doc._wrap(left.text, None), "words": left.words}
        )
        second = Cue(
            id=doc.next_id,
            start=right.start,
            end=right.end,
            text=doc._wrap(right.text, None),
            untranslated=_union(cue.untranslated, cue.translations),
            speaker=cue.speaker,
            words=right.words,
        )
        return [*doc.cues[:index], first, second, *doc.cues[index + 1 :]]


@dataclass(frozen=True)
class Merge:
    """Join a cue and the one after it into one cue, which keeps the first one's id."""

    cue_id: int

    def _apply(self, doc: CueList) -> list[Cue]:
        index, first = doc._find(self.cue_id)
        if index + 1 == len(doc.cues):
            raise _refused(
                f"Cue {first.id} is the last cue: there is none after it to merge it with.",
                "Merge the cue before it instead.",
            )
        second = doc.cues[index + 1]
        langs = _union(first.translations, second.translations)
        # A half with no translation joins with its source text, as the exports showed it; the
        # language is then listed as untranslated, so the UI marks the line for checking.
        partial = [lang for lang in langs if not (_has(first, lang) and _has(second, lang))]
        merged = first.model_copy(
            update={
                "end": second.end,
                "text": doc._wrap(_join(first.text, second.text), None),
                "translations": {
                    lang: doc._wrap(_join(_text_in(first, lang), _text_in(second, lang)), lang)
                    for lang in langs
                },
                "untranslated": _union(first.untranslated, second.untranslated, partial),
                # Words must spell the whole text, or a later split would lose the rest.
                "words": None
                if first.words is None or second.words is None
                else [*first.words, *second.words],
            }
        )
        return [*doc.cues[:index], merged, *doc.cues[index + 2 :]]


@dataclass(frozen=True)
class Insert:
    """A new cue, placed among the others by its start."""

    start: float
    end: float
    text: str
    speaker: str | None = None

    def _apply(self, doc: CueList) -> list[Cue]:
        who = "The new cue"
        if not self.text.strip():
            raise _refused(f"{who} has no text.", "Type the line it should show.")
        _check_order(who, self.start, self.end)
        index = sum(cue.start <= self.start for cue in doc.cues)
        before, after = doc._around(index, index)
        doc._check_span(who, self.start, self.end, before, after, earlier=True, later=True)
        # No translation yet: listed as untranslated in every target the list has, so exports
        # show its source text there and the UI marks it.
        targets = _union(*(c.translations for c in doc.cues), *(c.untranslated for c in doc.cues))
        cue = Cue(
            id=doc.next_id,
            start=self.start,
            end=self.end,
            text=doc._wrap(self.text, None),
            untranslated=targets,
            speaker=(self.speaker or "").strip() or None,
        )
        return [*doc.cues, cue]


@dataclass(frozen=True)
class Delete:
    cue_id: int

    def _apply(self, doc: CueList) -> list[Cue]:
        index, _ = doc._find(self.cue_id)
        return [*doc.cues[:index], *doc.cues[index + 1 :]]


@dataclass(frozen=True)
class RenameSpeaker:
    """Give every cue of speaker `old` the name `new` (an existing name merges the two)."""

    old: str
    new: str

    def _apply(self, doc: CueList) -> list[Cue]:
        new = self.new.strip()
        if not new:
            raise _refused(f"A speaker needs a name: '{self.old}' was given none.", "Type a name.")
        if not any(cue.speaker == self.old for cue in doc.cues):
            raise _refused(f"No cue has the speaker '{self.old}'.", "Pick a speaker the cues name.")
        return [
            cue.model_copy(update={"speaker": new}) if cue.speaker == self.old else cue
            for cue in doc.cues
        ]


@dataclass(frozen=True)
class Replace:
    """Replace `find` with `replace_with` in the source text (`lang` None) or one translation.

    Lines are matched as the viewer reads them, with their line breaks as spaces, so a phrase
    found across a break is still found."""

    find: str
    replace_with: str
    lang: str | None = None
    whole_word: bool = False
    case_sensitive: bool = False

    def _apply(self, doc: CueList) -> list[Cue]:
        find = flat(self.find)
        if not find:
            raise _refused("There is nothing to find.", "Type the text to replace.")
        pattern = re.escape(find)
        if self.whole_word:
            pattern = rf"(?<!\w){pattern}(?!\w)"
        matcher = re.compile(pattern, 0 if self.case_sensitive else re.IGNORECASE)
        cues = list(doc.cues)
        found = False
        for index, cue in enumerate(cues):
            before = cue.text if self.lang is None else cue.translations.get(self.lang, "")
            text, count = matcher.subn(lambda _match: self.replace_with, flat(before))
            found = found or count > 0
            if count and text != flat(before):
                cues[index] = self._changed(doc, cue, text)
        if not found:
            raise _refused(
                f"No line contains '{self.find}'.",
                "Check the spelling, the language searched and the match options.",
            )
        return cues

    def _changed(self, doc: CueList, cue: Cue, text: str) -> Cue:
        if self.lang is not None:
            if not text.strip():
                return _without_translation(cue, self.lang)
            # Left as untranslated if it was: replacing a name is no review of the line.
            translations = {**cue.translations, self.lang: doc._wrap(text, self.lang)}
            return cue.model_copy(update={"translations": translations})
        if not text.strip():
            raise _refused(
                f"Replacing would leave cue {cue.id} with no text.",
                f"Delete cue {cue.id} first, or replace with other text.",
            )
        return _with_source(cue, doc._wrap(text, None))


Edit = SetText | SetTimes | Shift | Split | Merge | Insert | Delete | RenameSpeaker | Replace


@dataclass(frozen=True)
class CueList:
    """A result's cues in time order, with the versions before (and after) for undo and redo.

    Every edit goes through `apply`, which refuses an invalid one with SubtideError
    ("bad_input") and leaves this list as it was."""

    cues: tuple[Cue, ...]
    style: Style
    language: str
    # The media's length, when known: no edit moves a cue past its end.
    duration: float | None = None
    # The id the next new cue gets: above every id this list has held, an undone cue's too.
    next_id: int = 1
    past: tuple[tuple[Cue, ...], ...] = field(default=(), repr=False, compare=False)
    future: tuple[tuple[Cue, ...], ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        # Frozen: these are the fields as built, put in order once.
        object.__setattr__(self, "cues", tuple(sorted(self.cues, key=attrgetter("start"))))
        object.__setattr__(self, "next_id", max([self.next_id, *(cue.id + 1 for cue in self.cues)]))

    @property
    def can_undo(self) -> bool:
        return bool(self.past)

    @property
    def can_redo(self) -> bool:
        return bool(self.future)

    def apply(self, edit: Edit) -> CueList:
        """The list after `edit`. An edit that changes nothing is no step to undo."""
        cues = tuple(edit._apply(self))
        if cues == self.cues:
            return self
        past = (*self.past, self.cues)[-HISTORY_LIMIT:]
        return replace(self, cues=cues, past=past, future=())

    def undo(self) -> CueList:
        """The list before the last edit (this list when there is none)."""
        if not self.past:
            return self
        future = (self.cues, *self.future)
        return replace(self, cues=self.past[-1], past=self.past[:-1], future=future)

    def redo(self) -> CueList:
        """The list with the last undone edit made again (this list when there is none)."""
        if not self.future:
            return self
        past = (*self.past, self.cues)
        return replace(self, cues=self.future[0], past=past, future=self.future[1:])

    def _find(self, cue_id: int) -> tuple[int, Cue]:
        for index, cue in enumerate(self.cues):
            if cue.id == cue_id:
                return index, cue
        raise _refused(
            f"There is no cue {cue_id}.",
            "It may have been deleted or merged; pick a cue from the current list.",
        )

    def _around(self, start: int, stop: int) -> tuple[Cue | None, Cue | None]:
        """The cues just before and just after the slice `cues[start:stop]`."""
        before = self.cues[start - 1] if start > 0 else None
        after = self.cues[stop] if stop < len(self.cues) else None
        return before, after

    def _replaced(self, index: int, cue: Cue) -> list[Cue]:
        return [*self.cues[:index], cue, *self.cues[index + 1 :]]

    def _wrap(self, text: str, lang: str | None) -> str:
        return wrap_text(text, self.style, lang or self.language)

    def _rewrap(self, before: str, text: str, lang: str | None) -> str:
        # Text that reads the same keeps its line breaks, which may have been placed by hand.
        return before if flat(text) == flat(before) else self._wrap(text, lang)

    def _with_translation(self, cue: Cue, lang: str, text: str) -> Cue:
        if not text.strip():
            return _without_translation(cue, lang)
        text = self._rewrap(cue.translations.get(lang, ""), text, lang)
        translations = {**cue.translations, lang: text}
        # A line the user wrote is no longer the source text standing in for a translation.
        untranslated = [code for code in cue.untranslated if code != lang]
        return cue.model_copy(update={"translations": translations, "untranslated": untranslated})

    def _check_span(
        self,
        who: str,
        start: float,
        end: float,
        before: Cue | None,
        after: Cue | None,
        *,
        earlier: bool,
        later: bool,
    ) -> None:
        """Refuse a span that comes too near its neighbours or leaves the media.

        Only an end that moves toward its neighbour is held to the gap: cue building lets a gap
        fall below min_gap to keep a cue visible, and an edit elsewhere must not be refused
        for it."""
        gap = self.style.min_gap
        apart = f"cues stay {gap:g} s apart"
        if earlier and start < 0:
            raise _refused(f"{who} would start before 0:00.000.", "Start it at 0:00.000 or later.")
        if earlier and before is not None and start < before.end + gap - _EPSILON:
            raise _refused(
                f"{who} would overlap cue {before.id}, which ends at {clock(before.end)}.",
                f"Start it at {clock(before.end + gap)} or later: {apart}.",
            )
        if later and after is not None and end > after.start - gap + _EPSILON:
            raise _refused(
                f"{who} would overlap cue {after.id}, which starts at {clock(after.start)}.",
                f"End it at {clock(after.start - gap)} or earlier: {apart}.",
            )
        if later and self.duration is not None and end > self.duration + _EPSILON:
            raise _refused(
                f"{who} would end at {clock(end)}, after the media ends at {clock(self.duration)}.",
                f"End it at {clock(self.duration)} or earlier.",
            )


class _Half(NamedTuple):
    start: float
    end: float
    text: str
    words: list[Word] | None


def _halves_by_words(
    cue: Cue, words: list[Word], at: float, gap: float
) -> tuple[_Half, _Half] | None:
    """Cut at the word boundary nearest `at`: each half is timed by its own words."""
    if len(words) < 2:
        return None
    cut = min(range(1, len(words)), key=lambda index: abs(words[index].start - at))
    right_start = words[cut].start
    left_end = min(words[cut - 1].end, right_start - gap)
    return (
        _Half(cue.start, left_end, _spelled(words[:cut]), words[:cut]),
        _Half(right_start, cue.end, _spelled(words[cut:]), words[cut:]),
    )


def _halves_by_text(cue: Cue, at: float, gap: float) -> tuple[_Half, _Half] | None:
    """Cut at the word boundary whose share of the text is nearest `at`'s share of the time."""
    text = flat(cue.text)
    cuts = [
        index
        for index in range(1, len(text))
        if text[index] == " "
        or (_NO_SPACE_SCRIPT.match(text[index - 1]) and _NO_SPACE_SCRIPT.match(text[index]))
    ]
    if not cuts:
        return None
    share = (at - cue.start) / (cue.end - cue.start)
    cut = min(cuts, key=lambda index: abs(index / len(text) - share))
    return (
        _Half(cue.start, at - gap / 2, text[:cut].strip(), None),
        _Half(at + gap / 2, cue.end, text[cut:].strip(), None),
    )


def _with_source(cue: Cue, text: str) -> Cue:
    if text == cue.text:
        return cue
    # Words spell the text they were heard as; an edited text no longer matches them, and a
    # split by them would bring the old text back.
    return cue.model_copy(update={"text": text, "words": None})


def _without_translation(cue: Cue, lang: str) -> Cue:
    if lang not in cue.translations:
        return cue
    # The exports show the source text where a translation is missing; the cue says so.
    translations = {code: text for code, text in cue.translations.items() if code != lang}
    untranslated = _union(cue.untranslated, [lang])
    return cue.model_copy(update={"translations": translations, "untranslated": untranslated})


def _shifted(cue: Cue, delta: float) -> Cue:
    words = cue.words and [
        word.model_copy(update={"start": word.start + delta, "end": word.end + delta})
        for word in cue.words
    ]
    return cue.model_copy(
        update={"start": cue.start + delta, "end": cue.end + delta, "words": words}
    )


def _check_order(who: str, start: float, end: float) -> None:
    if start >= end:
        raise _refused(
            f"{who} would end at {clock(end)}, not after its start at {clock(start)}.",
            "Give it an end later than its start.",
        )


def _text_in(cue: Cue, lang: str) -> str:
    """A cue's text in `lang` as the exports write it: the source text where none is."""
    return cue.translations[lang] if _has(cue, lang) else cue.text


def _has(cue: Cue, lang: str) -> bool:
    return bool(cue.translations.get(lang, "").strip())


def _join(left: str, right: str) -> str:
    left, right = flat(left), flat(right)
    if _NO_SPACE_SCRIPT.match(left[-1:]) and _NO_SPACE_SCRIPT.match(right[:1]):
        return left + right
    return f"{left} {right}"


def _spelled(words: Sequence[Word]) -> str:
    # Words carry their own leading space, as faster-whisper gives them.
    return flat("".join(word.text for word in words))


def _spells(words: Sequence[Word], text: str) -> bool:
    """Whether the words still spell the text (spacing and line breaks aside)."""
    return "".join(_spelled(words).split()) == "".join(text.split())


def flat(text: str) -> str:
    return " ".join(text.split())


def _union(*groups: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(code for group in groups for code in group))


def clock(seconds: float) -> str:
    """A time as the table shows it: minutes, then seconds to the millisecond (0:12.300)."""
    minutes, millis = divmod(round(max(seconds, 0.0) * 1000), 60_000)
    return f"{minutes}:{millis // 1000:02d}.{millis % 1000:03d}"


def _refused(message: str, hint: str) -> SubtideError:
    return SubtideError("bad_input", message, hint)
