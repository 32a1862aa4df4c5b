"""What a Kafka partition lane does with a handler's outcome, and which offset it may commit
(reference §6.5).  Pure: the consumer in :mod:`ingest.consumer` applies it.

* Success → commit the record (or batch).
* A :class:`~domain.errors.ChronoverseError` with ``retryable=True``, or any unexpected exception
  (a bug, a dead Ray actor, a dropped connection) → retry the *same* record in place, backing off
  1 s, 2 s, 4 s … up to 30 s, without a limit on attempts.
* ``retryable=False`` errors and undecodable payloads → commit and move on: replaying them can
  never succeed, and blocking the partition forever would stall every later record.
* A lane commits only while it still owns its partition (epoch check), and only the contiguous
  prefix of finished work, so nothing past an unfinished record is ever committed.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass

from pydantic import ValidationError

from domain.errors import ChronoverseError, RateLimited

# Payloads that cannot be decoded stay undecodable on every replay (reference: "treated as success").
_UNDECODABLE = (ValidationError, json.JSONDecodeError, UnicodeDecodeError)


@dataclass(frozen=True)
class RetryBackoff:
    """Exponential backoff: ``initial_s`` doubling (``factor``) per attempt, capped at ``max_s``."""

    initial_s: float = 1.0
    max_s: float = 30.0
    factor: float = 2.0

    def __post_init__(self) -> None:
        if self.initial_s <= 0 or self.max_s < self.initial_s or self.factor < 1:
            raise ValueError("need 0 < initial_s <= max_s and factor >= 1")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        if attempt < 1:
            raise ValueError("attempt is 1-based")
        # Cap the exponent so huge attempt counts cannot overflow the float.
        exponent = min(attempt - 1, 64)
        return min(self.max_s, self.initial_s * self.factor**exponent)


def is_retryable(err: BaseException) -> bool:
    """Whether a handler failure is retried in place (True) or committed and skipped (False)."""
    if isinstance(err, ChronoverseError):
        return err.retryable
    # Unknown failures are retried: losing a record to a transient bug is worse than waiting.
    return not isinstance(err, _UNDECODABLE)


def retry_delay(err: BaseException, attempt: int, backoff: RetryBackoff) -> float:
    """Backoff before retry ``attempt``; a :class:`RateLimited` hint lengthens it (never past max)."""
    delay = backoff.delay(attempt)
    if isinstance(err, RateLimited):
        delay = max(delay, min(err.retry_after_s, backoff.max_s))
    return delay


def may_commit(lane_epoch: int, owner_epoch: int | None) -> bool:
    """A lane may commit only while it is the partition's current owner.

    ``owner_epoch`` is the epoch of the lane that currently owns the partition in this consumer, or
    ``None`` when the partition is not assigned here any more (revoked or lost).  A lane created for
    an earlier assignment has a smaller epoch, so it can never commit over its successor.
    """
    return owner_epoch is not None and owner_epoch == lane_epoch


class OffsetTracker:
    """Tracks units of work (a record or a batch) dispatched in offset order and finished in any
    order, and yields the offset that is safe to commit: one past the last unit of the contiguous
    finished prefix.  With one unit in flight this is simply "the next offset after the record".
    """

    def __init__(self) -> None:
        self._in_order: deque[int] = deque()  # next-offset (last offset + 1) of each unit, in order
        self._finished: set[int] = set()
        self._watermark: int | None = None

    def dispatched(self, next_offset: int) -> None:
        """Record that a unit ending just before ``next_offset`` has been handed to the handler."""
        if self._in_order and next_offset <= self._in_order[-1]:
            raise ValueError("units must be dispatched in increasing offset order")
        if self._watermark is not None and next_offset <= self._watermark:
            raise ValueError("unit is at or below the committed watermark")
        self._in_order.append(next_offset)

    def finished(self, next_offset: int) -> int | None:
        """Mark a unit finished (handled or skipped).  Returns the new watermark if it advanced."""
        if next_offset not in self._in_order:
            raise ValueError(f"unit ending at {next_offset - 1} was not dispatched")
        self._finished.add(next_offset)
        advanced = False
        while self._in_order and self._in_order[0] in self._finished:
            self._watermark = self._in_order.popleft()
            self._finished.discard(self._watermark)
            advanced = True
        return self._watermark if advanced else None

    @property
    def watermark(self) -> int | None:
        """The offset to commit (next record to read), or None when nothing has finished yet."""
        return self._watermark

    @property
    def in_flight(self) -> int:
        """Units dispatched and not yet part of the committed prefix."""
        return len(self._in_order)
