"""Edits to a cue list: each operation, its refusals, stable ids, and undo/redo."""

from __future__ import annotations

import pytest

from engine.cues import wrap_text
from engine.edits import (
    HISTORY_LIMIT,
    CueList,
    Delete,
    Edit,
    Insert,
    Merge,
    RenameSpeaker,
    Replace,
    SetText,
    SetTimes,
    Shift,
    Split,
)
from engine.protocol import Cue, Style, SubtideError, Word

STYLE = Style()
GAP = STYLE.min_gap
LONG = "This is a rather long line of dialogue that could never fit on one line"


def spoken(start: float, sentence: str) -> list[Word]:
    """Words as faster-whisper gives them (a leading space): 0.4 s each, 0.1 s apart."""
    return [
        Word(start=start + 0.5 * index, end=start + 0.5 * index + 0.4, text=f" {text}")
        for index, text in enumerate(sentence.split())
    ]


def heard(cue_id: int, start: float, sentence: str, **fields: object) -> Cue:
    words = spoken(start, sentence)
    return Cue(id=cue_id, start=start, end=words[-1].end, text=sentence, words=words, **fields)


def dialogue() -> list[Cue]:
    return [
        heard(1, 1.0, "Hello there.", speaker="Anna"),  # 1.0 – 1.9
        heard(  # 3.0 – 4.9
            2,
            3.0,
            "How are you today?",
            translations={"de": "Wie geht es dir heute?"},
            speaker="Anna",
        ),
        heard(  # 6.0 – 7.9
            3,
            6.0,
            "I am fine, thanks.",
            translations={"de": "Mir geht es gut, danke."},
            speaker="Ben",
        ),
        heard(4, 9.0, "And you?", untranslated=["de"], speaker="Ben"),  # 9.0 – 9.9
        # As captions give it: no words.
        Cue(
            id=5,
            start=12.0,
            end=15.0,
            text="See you again next week",
            translations={"de": "Bis nächste Woche"},
        ),
    ]


def listed(*cues: Cue, language: str = "en", duration: float | None = None) -> CueList:
    return CueList(cues, STYLE, language, duration)


@pytest.fixture
def doc() -> CueList:
    return listed(*dialogue(), duration=20.0)


def cue(doc: CueList, cue_id: int) -> Cue:
    return next(cue for cue in doc.cues if cue.id == cue_id)


def refusal(doc: CueList, edit: Edit) -> SubtideError:
    with pytest.raises(SubtideError) as caught:
        doc.apply(edit)
    assert caught.value.code == "bad_input"
    assert caught.value.hint
    return caught.value


# One edit of each kind that the dialogue accepts.
EDITS: list[Edit] = [
    SetText(1, "Hi there."),
    SetText(2, "Wie geht's?", "de"),
    SetTimes(2, 2.5, 5.5),
    Shift(0.5),
    Shift(-0.5, first_id=4),
    Split(3, 6.95),
    Split(5, 13.2),
    Merge(2),
    Insert(10.5, 11.5, "Wait!"),
    Delete(3),
    RenameSpeaker("Ben", "Bernard"),
    Replace("you", "ya"),
]


def test_a_list_is_kept_in_time_order_and_new_ids_start_above_the_highest() -> None:
    doc = listed(*reversed(dialogue()))
    assert [cue.id for cue in doc.cues] == [1, 2, 3, 4, 5]
    assert doc.next_id == 6
    assert not doc.can_undo and not doc.can_redo


# --- text ---------------------------------------------------------------------------------------


def test_new_source_text_replaces_the_words_it_no_longer_spells(doc: CueList) -> None:
    edited = cue(doc.apply(SetText(1, "  Hello there, friend. ")), 1)
    assert edited.text == "Hello there, friend."
    assert edited.words is None
    assert edited.speaker == "Anna"


def test_a_long_text_is_broken_into_lines_at_the_style_width(doc: CueList) -> None:
    edited = cue(doc.apply(SetText(2, LONG)).apply(SetText(2, LONG, "de")), 2)
    assert edited.text == wrap_text(LONG, STYLE, "en")
    assert edited.translations["de"] == wrap_text(LONG, STYLE, "de")
    lines = edited.text.split("\n")
    assert len(lines) == 2
    assert all(len(line) <= STYLE.max_chars_per_line for line in lines)


def test_a_text_that_reads_the_same_keeps_its_line_breaks_and_is_no_step_to_undo() -> None:
    doc = listed(Cue(id=1, start=0.0, end=2.0, text="Hello\nthere."))
    assert doc.apply(SetText(1, "Hello   there.")) is doc


def test_a_translation_the_user_writes_is_no_longer_untranslated(doc: CueList) -> None:
    edited = cue(doc.apply(SetText(4, "Und du?", "de")), 4)
    assert edited.translations == {"de": "Und du?"}
    assert edited.untranslated == []
    assert edited.text == "And you?"


def test_clearing_a_translation_leaves_the_source_text_marked_in_its_place(doc: CueList) -> None:
    edited = cue(doc.apply(SetText(2, "  ", "de")), 2)
    assert edited.translations == {}
    assert edited.untranslated == ["de"]


def test_emptying_the_source_text_is_refused_with_advice_to_delete_the_cue(doc: CueList) -> None:
    error = refusal(doc, SetText(3, " \n "))
    assert "Cue 3 would have no text" in error.message
    assert "delete the cue" in error.message


@pytest.mark.parametrize(
    "edit",
    [
        SetText(99, "x"),
        SetTimes(99, 1.0, 2.0),
        Shift(1.0, first_id=99),
        Shift(1.0, last_id=99),
        Split(99, 1.0),
        Merge(99),
        Delete(99),
    ],
)
def test_an_edit_of_a_cue_that_is_not_there_is_refused(doc: CueList, edit: Edit) -> None:
    assert refusal(doc, edit).message == "There is no cue 99."


# --- times --------------------------------------------------------------------------------------


def test_new_times_move_a_cue_between_its_neighbours(doc: CueList) -> None:
    moved = cue(doc.apply(SetTimes(2, 2.5, 5.5)), 2)
    assert (moved.start, moved.end) == (2.5, 5.5)
    assert moved.words == cue(doc, 2).words
    only_start = cue(doc.apply(SetTimes(2, start=2.8)), 2)
    assert (only_start.start, only_start.end) == (2.8, 4.9)


def test_a_cue_ending_too_near_the_next_is_refused_naming_the_next_cues_start(
    doc: CueList,
) -> None:
    error = refusal(doc, SetTimes(2, end=5.95))
    assert error.message == "Cue 2 would overlap cue 3, which starts at 0:06.000."
    assert "0:05.917" in (error.hint or "")
    assert cue(doc.apply(SetTimes(2, end=6.0 - GAP)), 2).end == pytest.approx(6.0 - GAP)


def test_a_cue_starting_too_near_the_previous_is_refused(doc: CueList) -> None:
    error = refusal(doc, SetTimes(2, start=1.95))
    assert error.message == "Cue 2 would overlap cue 1, which ends at 0:01.900."


def test_a_cue_may_not_move_past_its_neighbour(doc: CueList) -> None:
    error = refusal(doc, SetTimes(2, 6.5, 7.0))
    assert error.message == "Cue 2 would overlap cue 3, which starts at 0:06.000."


def test_a_cue_must_start_at_zero_or_later_and_end_after_it_starts(doc: CueList) -> None:
    assert refusal(doc, SetTimes(1, start=-0.5)).message == "Cue 1 would start before 0:00.000."
    error = refusal(doc, SetTimes(2, start=5.0))
    assert error.message == "Cue 2 would end at 0:04.900, not after its start at 0:05.000."


def test_a_cue_may_not_end_after_the_media(doc: CueList) -> None:
    error = refusal(doc, SetTimes(5, end=21.0))
    assert error.message == "Cue 5 would end at 0:21.000, after the media ends at 0:20.000."
    assert cue(listed(*dialogue()).apply(SetTimes(5, end=21.0)), 5).end == 21.0


def test_a_tight_gap_the_list_already_had_blocks_only_moving_toward_it() -> None:
    doc = listed(
        Cue(id=1, start=1.0, end=2.95, text="Close"), Cue(id=2, start=3.0, end=4.0, text="call")
    )
    assert cue(doc.apply(SetTimes(1, start=0.5)), 1).start == 0.5
    assert "overlap cue 2" in refusal(doc, SetTimes(1, end=2.97)).message


# --- shift --------------------------------------------------------------------------------------


def test_shifting_every_cue_moves_their_words_too(doc: CueList) -> None:
    shifted = doc.apply(Shift(0.5))
    for before, after in zip(doc.cues, shifted.cues, strict=True):
        assert after.id == before.id
        assert (after.start, after.end) == (before.start + 0.5, before.end + 0.5)
        assert [w.start for w in after.words or []] == [w.start + 0.5 for w in before.words or []]


def test_shifting_a_range_leaves_the_other_cues_as_they_were(doc: CueList) -> None:
    shifted = doc.apply(Shift(0.5, first_id=2, last_id=3))
    assert [cue.start for cue in shifted.cues] == [1.0, 3.5, 6.5, 9.0, 12.0]
    assert shifted.cues[0] is doc.cues[0] and shifted.cues[3] is doc.cues[3]
    to_the_end = doc.apply(Shift(-0.5, first_id=4))
    assert [cue.start for cue in to_the_end.cues] == [1.0, 3.0, 6.0, 8.5, 11.5]


def test_a_shift_before_zero_is_refused(doc: CueList) -> None:
    assert refusal(doc, Shift(-1.5)).message == "Cue 1 would start before 0:00.000."


def test_a_shifted_range_may_not_run_into_the_cues_around_it(doc: CueList) -> None:
    later = refusal(doc, Shift(1.1, first_id=2, last_id=3))
    assert later.message == "Cue 3 would overlap cue 4, which starts at 0:09.000."
    earlier = refusal(doc, Shift(-1.05, first_id=2, last_id=3))
    assert earlier.message == "Cue 2 would overlap cue 1, which ends at 0:01.900."
    assert "after the media ends" in refusal(doc, Shift(5.5)).message


def test_a_range_given_back_to_front_is_refused(doc: CueList) -> None:
    assert refusal(doc, Shift(1.0, first_id=3, last_id=2)).message == "Cue 3 comes after cue 2."


# --- split --------------------------------------------------------------------------------------


def test_a_split_at_a_word_keeps_both_halves_timed_by_their_words(doc: CueList) -> None:
    split = doc.apply(Split(3, 6.95))
    left, right = cue(split, 3), cue(split, 6)
    assert [c.id for c in split.cues] == [1, 2, 3, 6, 4, 5]
    assert (left.text, left.start, left.end) == ("I am", 6.0, 6.9)
    assert (right.text, right.start, right.end) == ("fine, thanks.", 7.0, 7.9)
    assert [w.text for w in left.words or []] == [" I", " am"]
    assert [w.text for w in right.words or []] == [" fine,", " thanks."]
    assert left.speaker == right.speaker == "Ben"
    # The translation stays whole on the first half; the second is marked untranslated.
    assert left.translations == {"de": "Mir geht es gut, danke."}
    assert left.untranslated == []
    assert (right.translations, right.untranslated) == ({}, ["de"])
    assert split.next_id == 7


def test_a_split_keeps_the_gap_between_halves_whose_words_touch() -> None:
    words = [Word(start=0.0, end=0.5, text=" one"), Word(start=0.5, end=1.0, text=" two")]
    doc = listed(Cue(id=1, start=0.0, end=1.0, text="one two", words=words))
    left, right = doc.apply(Split(1, 0.4)).cues
    assert left.end == pytest.approx(0.5 - GAP)
    assert right.start == 0.5


def test_a_split_without_words_cuts_the_text_in_proportion_to_the_time(doc: CueList) -> None:
    split = doc.apply(Split(5, 13.2))
    left, right = cue(split, 5), cue(split, 6)
    assert (left.text, right.text) == ("See you", "again next week")
    assert (left.start, left.end) == (12.0, pytest.approx(13.2 - GAP / 2))
    assert (right.start, right.end) == (pytest.approx(13.2 + GAP / 2), 15.0)
    assert left.words is None and right.words is None


def test_a_split_ignores_words_that_no_longer_spell_the_text() -> None:
    stale = Cue(id=1, start=0.0, end=2.0, text="Goodbye everyone", words=spoken(0.0, "Hi all"))
    left, right = listed(stale).apply(Split(1, 0.5)).cues
    assert (left.text, right.text) == ("Goodbye", "everyone")
    assert left.words is None and right.words is None


def test_a_split_in_a_script_without_spaces_may_cut_between_characters() -> None:
    doc = listed(Cue(id=1, start=0.0, end=4.0, text="你好世界"), language="zh")
    left, right = doc.apply(Split(1, 2.0)).cues
    assert (left.text, right.text) == ("你好", "世界")


def test_a_split_outside_the_cue_is_refused(doc: CueList) -> None:
    error = refusal(doc, Split(1, 2.5))
    assert error.message == "0:02.500 is not inside cue 1, which runs from 0:01.000 to 0:01.900."


def test_a_split_that_would_leave_a_half_empty_is_refused() -> None:
    one_word = Cue(id=1, start=0.0, end=1.0, text="Yes.", words=spoken(0.0, "Yes."))
    untimed = Cue(id=2, start=2.0, end=3.0, text="No.")
    doc = listed(one_word, untimed)
    for edit in (Split(1, 0.5), Split(2, 2.5)):
        assert "one half would be empty" in refusal(doc, edit).message


# --- merge --------------------------------------------------------------------------------------


def test_merging_joins_text_times_words_and_translations(doc: CueList) -> None:
    merged = doc.apply(Merge(2))
    assert [c.id for c in merged.cues] == [1, 2, 4, 5]
    both = cue(merged, 2)
    assert (both.start, both.end) == (3.0, 7.9)
    assert both.text == wrap_text("How are you today? I am fine, thanks.", STYLE, "en")
    assert both.translations == {
        "de": wrap_text("Wie geht es dir heute? Mir geht es gut, danke.", STYLE, "de")
    }
    assert both.untranslated == []
    assert both.words == [*(cue(doc, 2).words or []), *(cue(doc, 3).words or [])]
    assert both.speaker == "Anna"


def test_merging_with_an_untranslated_cue_keeps_its_source_text_and_marks_it(
    doc: CueList,
) -> None:
    both = cue(doc.apply(Merge(3)), 3)
    assert both.translations == {"de": "Mir geht es gut, danke. And you?"}
    assert both.untranslated == ["de"]
    assert both.speaker == "Ben"
    # Cue 5 has no words: the merged cue's words could not spell its text.
    assert cue(doc.apply(Merge(4)), 4).words is None


def test_the_last_cue_cannot_be_merged_with_a_next_one(doc: CueList) -> None:
    assert refusal(doc, Merge(5)).message.startswith("Cue 5 is the last cue")


# --- insert and delete ----------------------------------------------------------------------------


def test_an_inserted_cue_gets_a_new_id_and_its_place_in_time(doc: CueList) -> None:
    inserted = doc.apply(Insert(10.5, 11.5, LONG, speaker=" Ben "))
    assert [c.id for c in inserted.cues] == [1, 2, 3, 4, 6, 5]
    new = cue(inserted, 6)
    assert (new.start, new.end, new.speaker) == (10.5, 11.5, "Ben")
    assert new.text == wrap_text(LONG, STYLE, "en")
    # Not translated yet, into the one target the list has.
    assert (new.translations, new.untranslated) == ({}, ["de"])


def test_an_insert_is_refused_without_text_or_time_or_room(doc: CueList) -> None:
    assert refusal(doc, Insert(10.5, 11.5, "  ")).message == "The new cue has no text."
    assert "not after its start" in refusal(doc, Insert(11.0, 11.0, "Hm")).message
    assert (
        refusal(doc, Insert(9.5, 10.5, "Hm")).message
        == "The new cue would overlap cue 4, which ends at 0:09.900."
    )
    assert (
        refusal(doc, Insert(10.0, 11.95, "Hm")).message
        == "The new cue would overlap cue 5, which starts at 0:12.000."
    )


def test_ids_are_never_reused_after_a_delete_or_an_undo(doc: CueList) -> None:
    deleted = doc.apply(Delete(5))
    assert [c.id for c in deleted.cues] == [1, 2, 3, 4]
    inserted = deleted.apply(Insert(16.0, 17.0, "Bye."))
    assert inserted.cues[-1].id == 6
    again = inserted.undo().apply(Insert(16.0, 17.0, "Bye."))
    assert again.cues[-1].id == 7
    assert cue(again.apply(Split(1, 1.45)), 8).text == "there."


# --- speakers -------------------------------------------------------------------------------------


def test_renaming_a_speaker_renames_every_cue_of_theirs(doc: CueList) -> None:
    renamed = doc.apply(RenameSpeaker("Ben", "  Bernard "))
    assert [c.speaker for c in renamed.cues] == ["Anna", "Anna", "Bernard", "Bernard", None]


def test_renaming_a_speaker_nobody_is_or_to_no_name_is_refused(doc: CueList) -> None:
    assert refusal(doc, RenameSpeaker("Carl", "Karl")).message == "No cue has the speaker 'Carl'."
    assert "needs a name" in refusal(doc, RenameSpeaker("Ben", " ")).message


# --- replace --------------------------------------------------------------------------------------


def test_replace_changes_every_matching_line_ignoring_case_by_default(doc: CueList) -> None:
    replaced = doc.apply(Replace("YOU", "ya"))
    assert [c.text for c in replaced.cues] == [
        "Hello there.",
        "How are ya today?",
        "I am fine, thanks.",
        "And ya?",
        "See ya again next week",
    ]
    assert replaced.cues[0] is doc.cues[0] and replaced.cues[2] is doc.cues[2]
    assert replaced.cues[1].words is None


def test_replace_matches_case_and_whole_words_when_asked(doc: CueList) -> None:
    error = refusal(doc, Replace("YOU", "ya", case_sensitive=True))
    assert error.message == "No line contains 'YOU'."
    assert "No line contains 'the'" in refusal(doc, Replace("the", "da", whole_word=True)).message
    assert cue(doc.apply(Replace("the", "whe")), 1).text == "Hello where."


def test_replace_in_a_translation_leaves_the_source_and_the_marks(doc: CueList) -> None:
    merged = doc.apply(Merge(3))
    replaced = merged.apply(Replace("geht", "läuft", lang="de"))
    assert cue(replaced, 2).translations["de"] == "Wie läuft es dir heute?"
    assert cue(replaced, 3).translations["de"] == "Mir läuft es gut, danke. And you?"
    assert cue(replaced, 3).untranslated == ["de"]
    assert [c.text for c in replaced.cues] == [c.text for c in merged.cues]


def test_replace_finds_a_phrase_across_a_line_break_and_wraps_the_result() -> None:
    doc = listed(Cue(id=1, start=0.0, end=5.0, text=wrap_text(LONG, STYLE, "en")))
    replaced = doc.apply(Replace("could never fit", "does not fit"))
    expected = LONG.replace("could never fit", "does not fit")
    assert replaced.cues[0].text == wrap_text(expected, STYLE, "en")


def test_replace_takes_the_replacement_literally(doc: CueList) -> None:
    assert cue(doc.apply(Replace("there", r"\1 \g<0>")), 1).text == r"Hello \1 \g<0>."


def test_replace_that_would_empty_a_line_is_refused_naming_the_cue(doc: CueList) -> None:
    error = refusal(doc, Replace("And you?", ""))
    assert error.message == "Replacing would leave cue 4 with no text."


# --- undo and redo --------------------------------------------------------------------------------


@pytest.mark.parametrize("edit", EDITS, ids=lambda edit: type(edit).__name__)
def test_undo_restores_exactly_the_cues_before_and_redo_makes_the_edit_again(
    doc: CueList, edit: Edit
) -> None:
    after = doc.apply(edit)
    assert after.cues != doc.cues
    assert after.can_undo and not after.can_redo
    undone = after.undo()
    assert undone.cues == doc.cues
    assert undone.can_redo and not undone.can_undo
    assert undone.redo().cues == after.cues


def test_a_new_edit_after_an_undo_clears_redo(doc: CueList) -> None:
    undone = doc.apply(Delete(1)).undo()
    assert undone.can_redo
    edited = undone.apply(Delete(2))
    assert not edited.can_redo
    assert edited.redo() is edited


def test_undo_and_redo_with_nothing_to_do_change_nothing(doc: CueList) -> None:
    assert doc.undo() is doc
    assert doc.redo() is doc


def test_the_history_keeps_only_the_latest_steps(doc: CueList) -> None:
    for step in range(HISTORY_LIMIT + 5):
        doc = doc.apply(SetText(1, f"Take {step}."))
    for _ in range(HISTORY_LIMIT):
        doc = doc.undo()
    assert not doc.can_undo
    assert cue(doc, 1).text == "Take 4."


def test_edits_never_change_the_cues_they_were_given(doc: CueList) -> None:
    before = [c.model_dump() for c in doc.cues]
    for edit in EDITS:
        doc.apply(edit).undo().redo()
    assert [c.model_dump() for c in doc.cues] == before
