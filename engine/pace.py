"""How many translation requests go to a server at once, and how many lines each carries,
adapted to how the server answers (engine.translate's Translator keeps one Pace)."""

from __future__ import annotations

import logging
import statistics
import threading
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

log = logging.getLogger(__name__)


class Reply(NamedTuple):
    text: str
    first_chunk_s: float | None  # from sending to the first chunk; None when not streamed
    generation_s: float | None  # from the first chunk to the last


@dataclass(frozen=True)
class Slot:
    in_flight: int  # requests in flight with this one, when it was sent
    limit: int  # the limit when it was sent


# The pace: how the number in flight and the batch size follow the server's answers.
_GROW_AFTER = 3  # good answers in a row before one more request or a larger batch
_QUEUED_FACTOR = 1.5  # a first chunk later than this many typical generations: it waited
_QUICK_FACTOR = 0.5  # a first chunk within this many typical generations: it did not wait
_MIN_WAIT_S = 0.2  # first chunks sooner than this never count as queued
_SLOT_POLL_S = 0.1  # how often a request waiting for a slot looks whether the translator closed


class Pace:
    """The requests in flight and the lines per batch, adapted to how the server answers.

    A server that answers one request at a time (llama.cpp, Ollama) queues the others: their
    first chunk comes only after other replies were generated, and past the silence timeout
    they are re-sent onto the same queue. So the limit halves when a request clearly waited,
    drops to what the server has answered quickly when one timed out, and grows by one after
    a few quick answers; a timed-out request goes again only when no more are in flight than
    the server answered quickly before.
    """

    def __init__(self, concurrency: int, batch_size: int) -> None:
        self._most, self._largest = concurrency, batch_size
        self.limit, self.batch_size = concurrency, batch_size
        self._in_flight = 0
        self._proven = 1  # the most in flight at once that still got a quick answer
        self._quick = 0  # quick answers in a row
        self._valid = 0  # valid replies in a row
        self._generation_s: deque[float] = deque(maxlen=8)
        self._first_chunk_s: deque[float] = deque(maxlen=8)
        self._changed = threading.Condition()

    def acquire(self, halt: threading.Event, after_timeout: bool) -> Slot | None:
        """A slot for one request, once one is free; None when `halt` is set first."""
        with self._changed:
            while not halt.is_set():
                room = min(self.limit, self._proven) if after_timeout else self.limit
                if self._in_flight < room:
                    self._in_flight += 1
                    return Slot(self._in_flight, self.limit)
                self._changed.wait(_SLOT_POLL_S)
        return None

    def release(self, slot: Slot, reply: Reply | None, timed_out: bool = False) -> None:
        with self._changed:
            self._in_flight -= 1
            if timed_out:
                self._slow_down(slot, timed_out=True)
            elif reply is not None and reply.first_chunk_s is not None:
                self._judge(slot, reply)
            self._changed.notify_all()

    def broke(self) -> None:
        """A reply kept breaking the format: later batches are smaller."""
        with self._changed:
            self.batch_size = max(1, self.batch_size // 2)
            self._valid = 0

    def kept(self) -> None:
        """A reply kept the format: after a few, batches grow back."""
        with self._changed:
            self._valid += 1
            if self._valid >= _GROW_AFTER and self.batch_size < self._largest:
                self.batch_size = min(self._largest, self.batch_size * 2)
                self._valid = 0

    def _judge(self, slot: Slot, reply: Reply) -> None:
        # Against what this server takes when it is free: its quickest first chunk (network
        # and prompt) plus its usual time to write a reply.
        seen = bool(self._generation_s)
        base = min(self._first_chunk_s, default=0.0)
        typical = statistics.median(self._generation_s) if seen else 0.0
        if reply.generation_s is not None and reply.first_chunk_s is not None:
            self._generation_s.append(reply.generation_s)
            self._first_chunk_s.append(reply.first_chunk_s)
        if not seen or reply.first_chunk_s is None:
            return
        waited = reply.first_chunk_s - base
        if waited > max(_MIN_WAIT_S, _QUEUED_FACTOR * typical):
            self._slow_down(slot)
        elif waited <= max(_MIN_WAIT_S, _QUICK_FACTOR * typical):
            self._proven = max(self._proven, min(slot.in_flight, self.limit))
            self._quick += 1
            if self._quick >= _GROW_AFTER and self.limit < self._most:
                self.limit += 1
                self._quick = 0
        else:
            self._quick = 0

    def _slow_down(self, slot: Slot, timed_out: bool = False) -> None:
        self._quick = 0
        # Requests sent together report together: only the first report of a burst counts.
        if slot.limit > self.limit or self.limit == 1:
            return
        self.limit = max(1, self.limit // 2)
        if timed_out:
            # More than the server can take: back to what it showed it answers quickly.
            self.limit = min(self.limit, self._proven)
        self._proven = min(self._proven, self.limit)
        log.info("The translation service is queueing requests; %d at a time now", self.limit)
