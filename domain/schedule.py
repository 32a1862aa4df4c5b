"""Interval schedule math (reference §5.3): minutes between runs, a chain of AUTOMATIC slots.

The first run is at build-completion time + interval; each claimed AUTOMATIC job schedules the next
at *its own* ``scheduled_at`` + interval, so missed slots are run back to back after downtime.
Results are naive UTC (the PostgreSQL convention).  The idempotency key of a slot is
:func:`domain.event_keys.automatic_job_key`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def _naive_utc(value: datetime) -> datetime:
    return value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)


def interval_delta(interval_minutes: int) -> timedelta:
    """The interval column (minutes) as a timedelta."""
    if interval_minutes < 1:
        raise ValueError("interval must be at least one minute")
    return timedelta(minutes=interval_minutes)


def first_run_at(built_at: datetime, interval_minutes: int) -> datetime:
    """When the first AUTOMATIC job of a (re)built or rescheduled workflow is due (naive UTC)."""
    return _naive_utc(built_at) + interval_delta(interval_minutes)


def next_run_at(scheduled_at: datetime, interval_minutes: int) -> datetime:
    """The slot after an AUTOMATIC job's ``scheduled_at`` (not after "now": no slot is skipped)."""
    return _naive_utc(scheduled_at) + interval_delta(interval_minutes)

