"""Interval schedule math (reference §5.3)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from domain.schedule import first_run_at, interval_delta, next_run_at


def test_first_run_is_build_time_plus_interval() -> None:
    built = datetime(2025, 3, 1, 12, 0, 0, 250000)
    assert first_run_at(built, 5) == datetime(2025, 3, 1, 12, 5, 0, 250000)


def test_next_slot_follows_the_previous_slot_not_the_clock() -> None:
    slot = datetime(2025, 3, 1, 12, 0)
    assert next_run_at(slot, 60) == datetime(2025, 3, 1, 13, 0)
    # Missed slots are not skipped: each one yields the one right after it.
    chain = [slot]
    for _ in range(3):
        chain.append(next_run_at(chain[-1], 1))
    assert chain[-1] - chain[0] == timedelta(minutes=3)


def test_longest_interval_is_one_week() -> None:
    assert next_run_at(datetime(2025, 1, 1), 10080) == datetime(2025, 1, 8)


def test_aware_times_become_naive_utc() -> None:
    aware = datetime(2025, 1, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    result = first_run_at(aware, 1)
    assert result == datetime(2025, 1, 1, 12, 1)
    assert result.tzinfo is None
    assert next_run_at(datetime(2025, 1, 1, tzinfo=UTC), 1).tzinfo is None


@pytest.mark.parametrize("interval", [0, -5])
def test_interval_below_one_minute_is_rejected(interval: int) -> None:
    with pytest.raises(ValueError):
        interval_delta(interval)
