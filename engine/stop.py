"""The stop a long step asks for between its parts: a cancelled job, or one that ended."""

from __future__ import annotations

from collections.abc import Callable

from engine.protocol import SubtideError

Stop = Callable[[], bool]


def never() -> bool:
    return False


def stopped_if(stop: Stop) -> None:
    """Raises the `cancelled` SubtideError when `stop` says so."""
    if stop():
        raise cancelled()


def cancelled() -> SubtideError:
    return SubtideError("cancelled", "The job was cancelled.")
