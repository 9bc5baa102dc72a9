"""The editor's buttons: each names an edit of the cue list (engine.edits), made from the
selected cue, the player's position and the editor's boxes."""

from __future__ import annotations

from dataclasses import dataclass

from engine.edits import (
    Delete,
    Edit,
    Insert,
    Merge,
    RenameSpeaker,
    Replace,
    SetTimes,
    Shift,
    Split,
)
from engine.protocol import SubtideError
from ui.session import Subtitles

# Button label → operation, in the order shown; the keys are in KEYS on the page too.
OPERATIONS = {
    "Split at playhead": "split",
    "Merge with next": "merge",
    "Delete cue": "delete",
    "New cue at playhead": "insert",
    "Start at playhead": "set_start",
    "End at playhead": "set_end",
    "Shift cue": "shift_cue",
    "Shift from cue on": "shift_from",
    "Shift all": "shift_all",
    "Undo": "undo",
    "Redo": "redo",
}
# A new cue lasts this long where the next one leaves room.
_NEW_CUE_S = 2.0


@dataclass(frozen=True)
class EditorInput:
    """What the editor's boxes hold when a button is pressed."""

    cue_id: float | None
    playhead: float | None
    shift_ms: float | None
    speaker: str | None
    new_name: str | None
    find: str | None
    replace_with: str | None

    def edit(self, operation: str, subtitles: Subtitles) -> Edit:
        if operation == "rename":
            return RenameSpeaker(self.speaker or "", (self.new_name or "").strip())
        if operation == "replace":
            return Replace(self.find or "", self.replace_with or "")
        if operation == "shift_all":
            return Shift(self._shift())
        if operation == "insert":
            return self._insert(subtitles)
        cue = self._cue(subtitles)
        if operation == "merge":
            return Merge(cue)
        if operation == "delete":
            return Delete(cue)
        if operation == "shift_cue":
            return Shift(self._shift(), cue, cue)
        if operation == "shift_from":
            return Shift(self._shift(), first_id=cue)
        at = self._playhead()
        if operation == "split":
            return Split(cue, at)
        if operation == "set_start":
            return SetTimes(cue, start=at)
        if operation == "set_end":
            return SetTimes(cue, end=at)
        raise ValueError(f"unknown operation {operation!r}")

    def _cue(self, subtitles: Subtitles) -> int:
        if not self.cue_id:
            raise SubtideError(
                "bad_input", "No cue is selected.", "Click a cue's row, or type its number."
            )
        return int(self.cue_id)

    def _playhead(self) -> float:
        if self.playhead is None:
            raise SubtideError(
                "bad_input", "There is no player position.", "Play the video to the moment first."
            )
        return round(self.playhead, 3)

    def _shift(self) -> float:
        if not self.shift_ms:
            raise SubtideError(
                "bad_input", "Shift by how much?", "Type the milliseconds (negative: earlier)."
            )
        return self.shift_ms / 1000

    def _insert(self, subtitles: Subtitles) -> Insert:
        start = self._playhead()
        later = [cue.start for cue in subtitles.cues if cue.start > start]
        room = (min(later) - subtitles.style.min_gap) if later else start + _NEW_CUE_S
        return Insert(start, min(start + _NEW_CUE_S, room), "New subtitle")
