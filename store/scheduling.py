"""Every statement of the scheduler (reference §5.3, SPEC §5.2, §5.3).

A *dispatch* moves due PENDING jobs to QUEUED — at most one per workflow, in schedule order — and
writes each job's ``jobs`` outbox row ``job:<id>:dispatch:<n>`` in the same transaction, so a job is
QUEUED if and only if its dispatch event will be published.  A *re-dispatch* gives a QUEUED job that
nobody claimed within ``redispatch_timeout`` a new dispatch attempt (and a new outbox row): the
executor's claim requires the current attempt, so the old event, if it ever arrives, is a no-op.

Serialization rules (reference §5.3): only workflows with ``build_status = COMPLETED`` and not
terminated; none while the workflow has a QUEUED or RUNNING job; the job must be due
(``scheduled_at`` and ``next_attempt_at`` passed) and be the workflow's earliest active job by
``(scheduled_at, created_at, id)``.  Rows are locked ``FOR UPDATE SKIP LOCKED`` so replicas split the
work: a row another replica holds is skipped, and it still gates its later siblings.

"Now" is the database's ``statement_timestamp()`` in UTC, so every replica agrees on what is due.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
from pydantic import BaseModel, ConfigDict

from domain.event_keys import dispatch_event_key, rfc3339nano
from store import outbox
from store.postgres import Queryable

#: Topic of dispatch events (``ingest.topics.JOBS``), keyed by workflow id for per-workflow order.
JOBS_TOPIC = "jobs"

_NOW = "(statement_timestamp() AT TIME ZONE 'utc')"

# The workflow has a QUEUED/RUNNING job, or a PENDING job ordered before j: j must wait.
_BLOCKED = """
EXISTS (
    SELECT 1
      FROM jobs a
     WHERE a.workflow_id = j.workflow_id
       AND (a.status IN ('QUEUED', 'RUNNING')
            OR (a.status = 'PENDING'
                AND (a.scheduled_at, a.created_at, a.id) < (j.scheduled_at, j.created_at, j.id)))
)
"""

_DUE_AT = "greatest(j.scheduled_at, coalesce(j.next_attempt_at, j.scheduled_at))"

DISPATCH_DUE = f"""
WITH due AS (
    SELECT j.id AS due_id
      FROM jobs j
      JOIN workflows w ON w.id = j.workflow_id
     WHERE j.status = 'PENDING'
       AND j.scheduled_at <= {_NOW}
       AND (j.next_attempt_at IS NULL OR j.next_attempt_at <= {_NOW})
       AND w.build_status = 'COMPLETED'
       AND w.terminated_at IS NULL
       AND NOT {_BLOCKED}
     ORDER BY j.scheduled_at, j.created_at, j.id
     LIMIT $1
       FOR UPDATE OF j SKIP LOCKED
)
UPDATE jobs j
   SET status = 'QUEUED',
       dispatch_attempts = j.dispatch_attempts + 1,
       queued_at = {_NOW}
  FROM due, workflows w
 WHERE j.id = due.due_id
   AND w.id = j.workflow_id
RETURNING j.id, j.workflow_id, j.scheduled_at, j.dispatch_attempts, w.generation,
          {_DUE_AT} AS due_at, j.queued_at
"""

REDISPATCH_STALE = f"""
WITH stale AS (
    SELECT j.id AS stale_id
      FROM jobs j
     WHERE j.status = 'QUEUED'
       AND j.queued_at <= {_NOW} - $2::interval
     ORDER BY j.queued_at, j.id
     LIMIT $1
       FOR UPDATE OF j SKIP LOCKED
)
UPDATE jobs j
   SET dispatch_attempts = j.dispatch_attempts + 1,
       queued_at = {_NOW}
  FROM stale, workflows w
 WHERE j.id = stale.stale_id
   AND w.id = j.workflow_id
RETURNING j.id, j.workflow_id, j.scheduled_at, j.dispatch_attempts, w.generation,
          {_DUE_AT} AS due_at, j.queued_at
"""

# The earliest moment something may need the scheduler: the due time of the head PENDING job of each
# dispatchable workflow, or the moment a QUEUED job becomes stale.  NULL when there is nothing.
NEXT_WAKE = f"""
SELECT {_NOW} AS now,
       least(
           (SELECT min({_DUE_AT})
              FROM jobs j
              JOIN workflows w ON w.id = j.workflow_id
             WHERE j.status = 'PENDING'
               AND w.build_status = 'COMPLETED'
               AND w.terminated_at IS NULL
               AND NOT {_BLOCKED}),
           (SELECT min(q.queued_at) + $1::interval FROM jobs q WHERE q.status = 'QUEUED')
       ) AS wake_at
"""


class DispatchedJob(BaseModel):
    """A job that was just (re)queued, with its dispatch attempt and the event that announces it."""

    model_config = ConfigDict(frozen=True)

    id: UUID
    workflow_id: UUID
    scheduled_at: datetime
    dispatch_attempts: int
    generation: int
    due_at: datetime
    queued_at: datetime

    @property
    def latency(self) -> timedelta:
        """How late the job was queued relative to when it became due."""
        return self.queued_at - self.due_at

    @property
    def event_key(self) -> str:
        return dispatch_event_key(self.id, self.dispatch_attempts)

    def entry(self) -> dict[str, Any]:
        """The ``jobs`` topic payload announcing this dispatch attempt: the fields of
        ``ingest.events.ScheduledJobEntry`` (store does not import ingest)."""
        return {
            "event_key": self.event_key,
            "job_id": str(self.id),
            "workflow_id": str(self.workflow_id),
            "scheduled_at": rfc3339nano(self.scheduled_at),
            "dispatch_attempt": self.dispatch_attempts,
            "workflow_generation": self.generation,
        }


class Wake(BaseModel):
    """The database clock and the next moment the scheduler has work (``None``: nothing planned)."""

    model_config = ConfigDict(frozen=True)

    now: datetime
    wake_at: datetime | None

    def delay(self) -> float | None:
        """Seconds until ``wake_at`` (0 when it has passed), or ``None``."""
        if self.wake_at is None:
            return None
        return max(0.0, (self.wake_at - self.now).total_seconds())


async def _write_dispatch_events(conn: Queryable, jobs: list[DispatchedJob]) -> None:
    # One statement for the whole batch (ON CONFLICT DO NOTHING), so the relay gets one NOTIFY.
    await outbox.add_events(conn, [
        outbox.NewEvent(topic=JOBS_TOPIC, kafka_key=str(job.workflow_id), event_key=job.event_key,
                        payload=job.entry())
        for job in jobs
    ])


async def dispatch_due(pool: asyncpg.Pool, *, batch_size: int) -> list[DispatchedJob]:
    """Queue up to ``batch_size`` due jobs (one per workflow) and write their dispatch events, in one
    transaction.  Returned oldest-due first."""
    async with pool.acquire() as conn, conn.transaction():
        records = await conn.fetch(DISPATCH_DUE, batch_size)
        jobs = [DispatchedJob.model_validate(dict(r)) for r in records]
        await _write_dispatch_events(conn, jobs)
    jobs.sort(key=lambda job: (job.due_at, job.id))
    return jobs


async def redispatch_stale(
    pool: asyncpg.Pool, *, batch_size: int, stale_after: timedelta
) -> list[DispatchedJob]:
    """Give QUEUED jobs unclaimed for ``stale_after`` a new dispatch attempt and a new dispatch event,
    in one transaction."""
    async with pool.acquire() as conn, conn.transaction():
        records = await conn.fetch(REDISPATCH_STALE, batch_size, stale_after)
        jobs = [DispatchedJob.model_validate(dict(r)) for r in records]
        await _write_dispatch_events(conn, jobs)
    return jobs


async def next_wake(conn: Queryable, *, redispatch_timeout: timedelta) -> Wake:
    """When the scheduler should run next, by the database clock."""
    record = await conn.fetchrow(NEXT_WAKE, redispatch_timeout)
    assert record is not None
    return Wake(now=record["now"], wake_at=record["wake_at"])
