"""The pure retry/commit policy of the partition runner (reference §6.5)."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, ValidationError

from domain.commit_policy import OffsetTracker, RetryBackoff, is_retryable, may_commit, retry_delay
from domain.errors import (
    AlreadyExists,
    Conflict,
    Internal,
    Invalid,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    RateLimited,
    Timeout,
    Unauthenticated,
    Unavailable,
)


def test_backoff_starts_at_one_second_doubles_and_caps_at_thirty() -> None:
    backoff = RetryBackoff()
    assert [backoff.delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 30, 30, 30]


def test_backoff_survives_huge_attempt_counts() -> None:
    assert RetryBackoff().delay(10_000) == 30


@pytest.mark.parametrize("attempt", [0, -1])
def test_backoff_attempts_are_one_based(attempt: int) -> None:
    with pytest.raises(ValueError):
        RetryBackoff().delay(attempt)


@pytest.mark.parametrize("kwargs", [{"initial_s": 0}, {"initial_s": 5, "max_s": 1}, {"factor": 0.5}])
def test_backoff_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryBackoff(**kwargs)


@pytest.mark.parametrize(
    "err",
    [Conflict("aborted"), Unavailable("down"), Timeout("slow"), Internal("bug"), RateLimited("busy")],
    ids=lambda e: type(e).__name__,
)
def test_retryable_domain_errors_are_retried_in_place(err: Exception) -> None:
    assert is_retryable(err)


@pytest.mark.parametrize(
    "err",
    [Invalid("bad"), NotFound("gone"), AlreadyExists("dup"), PreconditionFailed("state"),
     Unauthenticated("who"), PermissionDenied("no")],
    ids=lambda e: type(e).__name__,
)
def test_permanent_domain_errors_are_committed(err: Exception) -> None:
    assert not is_retryable(err)


@pytest.mark.parametrize(
    "err", [RuntimeError("boom"), KeyError("k"), ConnectionResetError(), ValueError("odd")],
    ids=lambda e: type(e).__name__,
)
def test_unexpected_exceptions_are_retried(err: Exception) -> None:
    assert is_retryable(err)


class _Payload(BaseModel):
    n: int


def _validation_error() -> ValidationError:
    try:
        _Payload.model_validate_json('{"n": "x"}')
    except ValidationError as err:
        return err
    raise AssertionError("expected a ValidationError")


def _json_error() -> json.JSONDecodeError:
    try:
        json.loads("{")
    except json.JSONDecodeError as err:
        return err
    raise AssertionError("expected a JSONDecodeError")


@pytest.mark.parametrize(
    "err",
    [_validation_error(), _json_error(), UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad")],
    ids=lambda e: type(e).__name__,
)
def test_undecodable_payloads_are_committed(err: Exception) -> None:
    assert not is_retryable(err)


def test_rate_limit_hint_lengthens_the_delay_but_not_past_the_cap() -> None:
    backoff = RetryBackoff()
    assert retry_delay(RateLimited("busy", retry_after_s=7), 1, backoff) == 7
    assert retry_delay(RateLimited("busy", retry_after_s=600), 1, backoff) == 30
    assert retry_delay(RateLimited("busy", retry_after_s=0.1), 3, backoff) == 4
    assert retry_delay(Unavailable("down"), 3, backoff) == 4


def test_only_the_current_owner_epoch_may_commit() -> None:
    assert may_commit(3, 3)
    assert not may_commit(3, 4)  # partition re-assigned to a newer lane
    assert not may_commit(3, None)  # partition revoked or lost


def test_tracker_commits_each_sequential_record() -> None:
    tracker = OffsetTracker()
    assert tracker.watermark is None
    tracker.dispatched(11)
    assert tracker.finished(11) == 11
    tracker.dispatched(12)
    assert tracker.in_flight == 1
    assert tracker.finished(12) == 12
    assert tracker.in_flight == 0


def test_tracker_never_commits_past_an_unfinished_record() -> None:
    tracker = OffsetTracker()
    for next_offset in (1, 2, 3):
        tracker.dispatched(next_offset)
    assert tracker.finished(2) is None
    assert tracker.finished(3) is None
    assert tracker.watermark is None
    assert tracker.finished(1) == 3  # the gap closed: everything up to offset 2 is done


def test_tracker_handles_batches_as_units() -> None:
    tracker = OffsetTracker()
    tracker.dispatched(10)  # offsets 0..9
    tracker.dispatched(15)  # offsets 10..14
    assert tracker.finished(15) is None
    assert tracker.finished(10) == 15


def test_tracker_rejects_out_of_order_dispatch_and_unknown_units() -> None:
    tracker = OffsetTracker()
    tracker.dispatched(5)
    with pytest.raises(ValueError):
        tracker.dispatched(5)
    with pytest.raises(ValueError):
        tracker.finished(9)
    tracker.finished(5)
    with pytest.raises(ValueError):
        tracker.dispatched(4)
