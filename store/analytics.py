"""The ``analytics`` table (reference §3.1, §8): one row per (user, workflow), kept after the
workflow is deleted.

Read side (the API): :func:`get_user` sums every row of the user (zeros for a new user);
:func:`get_workflow` is ``NotFound`` until the workflow has a row.
Write side (the processors): an event becomes an :class:`AnalyticsChange` (:func:`workflow_created`,
:func:`job_finished`, :func:`log_count`); :func:`apply_changes` applies a batch of them in one
transaction with their dedupe records (:mod:`store.processed_events`), so a replayed event changes
nothing; an empty event key applies without dedupe (seed behaviour).  The ``apply_*`` functions
apply one event.  Each says whether it was applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from domain.enums import WorkflowKind
from domain.errors import NotFound
from domain.ids import uuid7
from domain.models import UserAnalytics, WorkflowAnalytics
from store.postgres import Queryable
from store.processed_events import mark_processed_many
from store.transaction import transaction

#: ``processed_events`` consumer of the analytics-processor (WORKFLOWS/JOBS/LOGS events).
ANALYTICS_CONSUMER = "analytics-processor"
#: ``processed_events`` consumer of the joblogs-processor's per-line log counts.
LOG_COUNT_CONSUMER = "joblogs-processor:analytics"

SELECT_USER_TOTALS = """
SELECT count(DISTINCT workflow_id)::bigint AS total_workflows,
       COALESCE(sum(jobs_count), 0)::bigint AS total_jobs,
       COALESCE(sum(logs_count), 0)::bigint AS total_joblogs,
       COALESCE(sum(total_job_execution_duration), 0)::bigint AS total_job_execution_duration
  FROM analytics
 WHERE user_id = $1
"""

# Percentiles come from the workflow's finished jobs (gone once the workflow is deleted; the
# counters above survive deletion like the seed's analytics rows).
SELECT_WORKFLOW = """
SELECT a.workflow_id, a.kind, a.total_job_execution_duration, a.jobs_count AS total_jobs,
       a.logs_count AS total_joblogs, a.jobs_succeeded, a.jobs_failed,
       d.p50 AS duration_p50_s, d.p95 AS duration_p95_s
  FROM analytics a
  LEFT JOIN LATERAL (
        SELECT percentile_cont(0.5)
                   WITHIN GROUP (ORDER BY extract(epoch FROM completed_at - started_at)) AS p50,
               percentile_cont(0.95)
                   WITHIN GROUP (ORDER BY extract(epoch FROM completed_at - started_at)) AS p95
          FROM jobs j
         WHERE j.workflow_id = a.workflow_id AND j.user_id = a.user_id
           AND j.status IN ('COMPLETED', 'FAILED')
           AND j.started_at IS NOT NULL AND j.completed_at IS NOT NULL
  ) d ON TRUE
 WHERE a.user_id = $1 AND a.workflow_id = $2
"""

UPSERT_WORKFLOW_KIND = """
INSERT INTO analytics (id, user_id, workflow_id, kind)
VALUES ($1, $2, $3, $4)
ON CONFLICT (user_id, workflow_id) DO UPDATE SET kind = EXCLUDED.kind
"""

UPSERT_JOB_FINISHED = """
INSERT INTO analytics (id, user_id, workflow_id, jobs_count, total_job_execution_duration,
                       jobs_succeeded, jobs_failed)
VALUES ($1, $2, $3, 1, $4, $5, $6)
ON CONFLICT (user_id, workflow_id) DO UPDATE
   SET jobs_count = analytics.jobs_count + 1,
       total_job_execution_duration =
           analytics.total_job_execution_duration + EXCLUDED.total_job_execution_duration,
       jobs_succeeded = analytics.jobs_succeeded + EXCLUDED.jobs_succeeded,
       jobs_failed = analytics.jobs_failed + EXCLUDED.jobs_failed
"""

UPSERT_LOG_COUNT = """
INSERT INTO analytics (id, user_id, workflow_id, logs_count)
VALUES ($1, $2, $3, $4)
ON CONFLICT (user_id, workflow_id) DO UPDATE SET logs_count = analytics.logs_count + EXCLUDED.logs_count
"""


# ------------------------------------------------------------------------------------------------
# read side
# ------------------------------------------------------------------------------------------------


async def get_user(db: Queryable, user_id: UUID) -> UserAnalytics:
    """Totals over all the user's rows (deleted workflows included); zeros for a new user."""
    row = await db.fetchrow(SELECT_USER_TOTALS, user_id)
    return UserAnalytics.model_validate(dict(row))


async def get_workflow(db: Queryable, user_id: UUID, workflow_id: UUID) -> WorkflowAnalytics:
    """The user's row for ``workflow_id``.  ``NotFound`` until one exists (or for a foreign one)."""
    row = await db.fetchrow(SELECT_WORKFLOW, user_id, workflow_id)
    if row is None:
        raise NotFound("analytics not found for workflow")
    return WorkflowAnalytics.model_validate(dict(row))


# ------------------------------------------------------------------------------------------------
# write side (processors)
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AnalyticsChange:
    """One event's effect on the ``analytics`` table; apply with :func:`apply_changes`."""

    event_key: str  # empty: applied without dedupe (seed behaviour)
    statement: str
    args: tuple[Any, ...]


def workflow_created(
    *, event_key: str, user_id: UUID, workflow_id: UUID, kind: WorkflowKind | str
) -> AnalyticsChange:
    """WORKFLOWS event: create the workflow's row (it now counts in ``total_workflows``), set ``kind``."""
    args = (uuid7(), user_id, workflow_id, WorkflowKind(kind).value)
    return AnalyticsChange(event_key, UPSERT_WORKFLOW_KIND, args)


def job_finished(
    *, event_key: str, user_id: UUID, workflow_id: UUID, duration_s: int, succeeded: bool | None = None
) -> AnalyticsChange:
    """JOBS event of a COMPLETED or FAILED job: ``jobs_count + 1`` and ``duration_s`` (whole
    seconds, negative clamped to 0) added to the execution time; ``succeeded`` feeds the
    per-workflow success/failure counters (``None``: an event without the outcome counts in neither).
    """
    return AnalyticsChange(event_key, UPSERT_JOB_FINISHED, (
        uuid7(), user_id, workflow_id, max(0, int(duration_s)),
        1 if succeeded is True else 0, 1 if succeeded is False else 0,
    ))


def log_count(*, event_key: str, user_id: UUID, workflow_id: UUID, count: int) -> AnalyticsChange | None:
    """LOGS event (``{"count"}``) with one event key: ``logs_count + count`` (``None`` for nothing)."""
    if count <= 0:
        return None
    return AnalyticsChange(event_key, UPSERT_LOG_COUNT, (uuid7(), user_id, workflow_id, count))


async def apply_changes(
    db: Queryable, changes: Sequence[AnalyticsChange], *, consumer: str = ANALYTICS_CONSUMER
) -> list[bool]:
    """Apply ``changes`` and their dedupe records in ONE transaction; one bool per change: applied
    (``False``: its key was already processed, or repeats an earlier change of the batch).

    One commit per batch instead of per event (each commit waits for a WAL flush), one dedupe
    statement, and one pipelined ``executemany`` per statement kind: the updates are increments and
    an idempotent ``kind`` upsert, so they commute and may be grouped.  ``NotFound`` (nothing
    applied) when a change's user no longer exists: the caller retries the batch change by change.
    """
    if not changes:
        return []
    async with transaction(db) as conn:
        fresh = set(await mark_processed_many(conn, consumer, [c.event_key for c in changes if c.event_key]))
        applied: list[bool] = []
        rows: dict[str, list[tuple[Any, ...]]] = {}
        for change in changes:
            ok = not change.event_key or change.event_key in fresh
            fresh.discard(change.event_key)  # a key repeated within the batch applies once
            applied.append(ok)
            if ok:
                rows.setdefault(change.statement, []).append(change.args)
        try:
            for statement, args in rows.items():
                await conn.executemany(statement, args)
        except asyncpg.ForeignKeyViolationError:
            raise NotFound("user not found") from None
    return applied


async def apply_workflow_created(
    db: Queryable,
    *,
    event_key: str,
    user_id: UUID,
    workflow_id: UUID,
    kind: WorkflowKind | str,
    consumer: str = ANALYTICS_CONSUMER,
) -> bool:
    """:func:`workflow_created`, applied on its own.  ``NotFound`` if the user no longer exists."""
    change = workflow_created(event_key=event_key, user_id=user_id, workflow_id=workflow_id, kind=kind)
    return (await apply_changes(db, [change], consumer=consumer))[0]


async def apply_job_finished(
    db: Queryable,
    *,
    event_key: str,
    user_id: UUID,
    workflow_id: UUID,
    duration_s: int,
    succeeded: bool | None = None,
    consumer: str = ANALYTICS_CONSUMER,
) -> bool:
    """:func:`job_finished`, applied on its own.  ``NotFound`` if the user no longer exists."""
    change = job_finished(event_key=event_key, user_id=user_id, workflow_id=workflow_id,
                          duration_s=duration_s, succeeded=succeeded)
    return (await apply_changes(db, [change], consumer=consumer))[0]


async def apply_log_count(
    db: Queryable,
    *,
    event_key: str,
    user_id: UUID,
    workflow_id: UUID,
    count: int,
    consumer: str = ANALYTICS_CONSUMER,
) -> bool:
    """:func:`log_count`, applied on its own (``False`` for a non-positive count)."""
    change = log_count(event_key=event_key, user_id=user_id, workflow_id=workflow_id, count=count)
    return change is not None and (await apply_changes(db, [change], consumer=consumer))[0]


async def add_log_lines(
    db: Queryable,
    *,
    event_keys: Sequence[str],
    user_id: UUID,
    workflow_id: UUID,
    consumer: str = LOG_COUNT_CONSUMER,
) -> int:
    """Count log lines by their deterministic event ids (``log:<job>:…``): every key not yet
    recorded for ``consumer`` adds one to ``logs_count``, in one transaction.  Returns how many
    lines were new (replayed lines count 0)."""
    if not event_keys:
        return 0
    async with transaction(db) as conn:
        fresh = len(await mark_processed_many(conn, consumer, event_keys))
        if fresh:
            await _execute(conn, UPSERT_LOG_COUNT, uuid7(), user_id, workflow_id, fresh)
    return fresh


async def _execute(conn: Any, statement: str, *args: Any) -> None:
    try:
        await conn.execute(statement, *args)
    except asyncpg.ForeignKeyViolationError:
        raise NotFound("user not found") from None
