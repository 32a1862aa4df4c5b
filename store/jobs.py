"""The ``jobs`` table, except the lease protocol (claim/renew/complete/fail/release/recover), which
lives with the execution worker's lease repository (reference §3.1, §5.3).

User-facing reads are scoped by ``user_id`` (a foreign workflow lists as empty, a foreign job is
``NotFound``); manual scheduling checks that the caller owns the workflow (SPEC §5.4).  Every
statement that creates a PENDING job or changes one relies on the schema's statement-level triggers
to ``NOTIFY chronoverse_jobs`` at commit (the scheduler's wake-up, SPEC §5.2).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from domain.cursors import decode_optional_cursor, paginate
from domain.enums import JobStatus, JobTrigger
from domain.errors import Invalid, NotFound, PreconditionFailed
from domain.filters import JobFilters
from domain.ids import uuid7
from domain.models import Job, Page
from store.postgres import Queryable

#: Default page size (``JOBS_SERVICE_CONFIG_FETCH_LIMIT``).
DEFAULT_PAGE_SIZE = 10

_COLUMNS = """
    id, workflow_id, user_id, container_id, status::text AS status, "trigger"::text AS "trigger",
    scheduled_at, started_at, completed_at, created_at, updated_at, idempotency_key, queued_at,
    lease_token, leased_by, lease_expires_at, last_heartbeat_at, dispatch_attempts, attempts,
    next_attempt_at, failure_kind, last_error_code, last_error_message
"""

LIST_JOBS = f"""
SELECT {_COLUMNS}
  FROM jobs
 WHERE workflow_id = $1 AND user_id = $2
   AND ($3::job_status IS NULL OR status = $3::job_status)
   AND ($4::job_trigger IS NULL OR "trigger" = $4::job_trigger)
   AND ($5::timestamp IS NULL OR (created_at, id) <= ($5::timestamp, $6::uuid))
 ORDER BY created_at DESC, id DESC
 LIMIT $7
"""

SELECT_JOB = f"SELECT {_COLUMNS} FROM jobs WHERE id = $1 AND workflow_id = $2 AND user_id = $3"

SELECT_JOB_BY_ID = f"SELECT {_COLUMNS} FROM jobs WHERE id = $1"

# Ownership and an active workflow are part of the insert; a repeated key inserts nothing.
INSERT_MANUAL_JOB = """
INSERT INTO jobs (id, workflow_id, user_id, status, "trigger", scheduled_at, idempotency_key)
SELECT $1, w.id, w.user_id, 'PENDING', 'MANUAL', now() AT TIME ZONE 'utc', $4
  FROM workflows w
 WHERE w.id = $2 AND w.user_id = $3 AND w.terminated_at IS NULL
ON CONFLICT (user_id, workflow_id, idempotency_key)
   WHERE "trigger" = 'MANUAL' AND idempotency_key IS NOT NULL
   DO NOTHING
RETURNING id
"""

SELECT_MANUAL_JOB_BY_KEY = """
SELECT id FROM jobs
 WHERE user_id = $1 AND workflow_id = $2 AND idempotency_key = $3 AND "trigger" = 'MANUAL'
"""

SELECT_WORKFLOW_TERMINATED = "SELECT terminated_at IS NOT NULL FROM workflows WHERE id = $1 AND user_id = $2"

# Generation-guarded (0 = no guard): only for an active, COMPLETED workflow at that generation.
# Any unique conflict (slot or key) means the job exists already: nothing is inserted.
INSERT_AUTOMATIC_JOB = """
INSERT INTO jobs (id, workflow_id, user_id, status, "trigger", scheduled_at, idempotency_key)
SELECT $1, w.id, w.user_id, 'PENDING', 'AUTOMATIC', $4, $5
  FROM workflows w
 WHERE w.id = $2 AND w.user_id = $3
   AND ($6::bigint = 0 OR w.generation = $6::bigint)
   AND w.terminated_at IS NULL
   AND w.build_status = 'COMPLETED'
ON CONFLICT DO NOTHING
RETURNING id
"""

SELECT_AUTOMATIC_JOB = """
SELECT id FROM jobs
 WHERE workflow_id = $1 AND "trigger" = 'AUTOMATIC' AND (scheduled_at = $2 OR idempotency_key = $3)
 ORDER BY created_at, id
 LIMIT 1
"""

CANCEL_JOBS = f"""
UPDATE jobs
   SET status = 'CANCELED', completed_at = now() AT TIME ZONE 'utc',
       lease_token = NULL, leased_by = NULL, lease_expires_at = NULL
 WHERE workflow_id = $1
   AND status = ANY($2::job_status[])
   AND ($3::job_trigger IS NULL OR "trigger" = $3::job_trigger)
RETURNING {_COLUMNS}
"""

# Terminal states are never left: only non-terminal jobs change.
UPDATE_STATUS = f"""
UPDATE jobs
   SET status = $2::job_status,
       container_id = COALESCE($3, container_id),
       started_at = CASE WHEN $2::job_status = 'RUNNING'
                         THEN COALESCE(started_at, now() AT TIME ZONE 'utc') ELSE started_at END,
       completed_at = CASE WHEN $2::job_status IN ('COMPLETED', 'FAILED', 'CANCELED')
                           THEN now() AT TIME ZONE 'utc' ELSE completed_at END,
       lease_token = CASE WHEN $2::job_status IN ('COMPLETED', 'FAILED', 'CANCELED')
                          THEN NULL ELSE lease_token END,
       leased_by = CASE WHEN $2::job_status IN ('COMPLETED', 'FAILED', 'CANCELED')
                        THEN NULL ELSE leased_by END,
       lease_expires_at = CASE WHEN $2::job_status IN ('COMPLETED', 'FAILED', 'CANCELED')
                               THEN NULL ELSE lease_expires_at END
 WHERE id = $1 AND status IN ('PENDING', 'QUEUED', 'RUNNING')
RETURNING {_COLUMNS}
"""


# ------------------------------------------------------------------------------------------------
# user-facing
# ------------------------------------------------------------------------------------------------


async def list_jobs(
    db: Queryable,
    user_id: UUID,
    workflow_id: UUID,
    *,
    cursor: str | None = None,
    filters: JobFilters | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> Page[Job]:
    """The jobs of the user's workflow, newest first (``created_at DESC, id DESC``).  A foreign or
    unknown workflow gives an empty page.  ``Invalid`` for a malformed cursor."""
    filters = filters or JobFilters()
    position = decode_optional_cursor(cursor)
    rows = await db.fetch(
        LIST_JOBS,
        workflow_id,
        user_id,
        filters.status.value if filters.status else None,
        filters.trigger.value if filters.trigger else None,
        position.created_at if position else None,
        position.id if position else None,
        page_size + 1,
    )
    return paginate([_job(r) for r in rows], page_size)


async def get(db: Queryable, user_id: UUID, workflow_id: UUID, job_id: UUID) -> Job:
    """One job of the user's workflow.  ``NotFound`` when missing, foreign or of another workflow."""
    row = await db.fetchrow(SELECT_JOB, job_id, workflow_id, user_id)
    if row is None:
        raise NotFound("job not found")
    return _job(row)


async def schedule_manual(db: Queryable, *, user_id: UUID, workflow_id: UUID, idempotency_key: str) -> UUID:
    """Run the user's workflow now: a PENDING MANUAL job with ``scheduled_at = now``.

    The same key returns the same job id (no second job).  ``Invalid`` without a key, ``NotFound``
    for a missing or foreign workflow (ownership check, SPEC §5.4), ``PreconditionFailed`` (412)
    for a terminated one (ours: the seed left such jobs PENDING forever).
    """
    if not idempotency_key or not idempotency_key.strip():
        raise Invalid("idempotency key is required")
    job_id = await db.fetchval(INSERT_MANUAL_JOB, uuid7(), workflow_id, user_id, idempotency_key)
    if job_id is not None:
        return UUID(str(job_id))
    existing = await db.fetchval(SELECT_MANUAL_JOB_BY_KEY, user_id, workflow_id, idempotency_key)
    if existing is not None:
        return UUID(str(existing))
    terminated = await db.fetchval(SELECT_WORKFLOW_TERMINATED, workflow_id, user_id)
    if terminated is None:
        raise NotFound("workflow not found")
    raise PreconditionFailed("workflow is terminated; update it to re-activate it before running it")


# ------------------------------------------------------------------------------------------------
# admin (workers)
# ------------------------------------------------------------------------------------------------


async def schedule_automatic(
    db: Queryable,
    *,
    workflow_id: UUID,
    user_id: UUID,
    scheduled_at: datetime,
    idempotency_key: str,
    workflow_generation: int,
) -> UUID | None:
    """Admin: insert the AUTOMATIC job of a slot, guarded by the workflow's generation (0 = no
    guard), being active and ``COMPLETED``.  Idempotent: when the slot (or key) exists already its
    job id is returned.  ``None`` when the guard failed and no such job exists (skip).

    Keys: :func:`domain.event_keys.followup_job_key` (build/reschedule) or
    :func:`domain.event_keys.automatic_job_key` (next slot); times: :mod:`domain.schedule`.
    """
    slot = _naive_utc(scheduled_at)
    job_id = await db.fetchval(
        INSERT_AUTOMATIC_JOB, uuid7(), workflow_id, user_id, slot, idempotency_key, workflow_generation
    )
    if job_id is None:
        job_id = await db.fetchval(SELECT_AUTOMATIC_JOB, workflow_id, slot, idempotency_key)
    return UUID(str(job_id)) if job_id is not None else None


async def cancel_jobs(
    conn: Queryable,
    workflow_id: UUID,
    statuses: Sequence[JobStatus],
    *,
    trigger: JobTrigger | None = None,
) -> list[Job]:
    """Cancel the workflow's jobs in ``statuses`` (optionally of one ``trigger``): CANCELED,
    ``completed_at = now``, lease columns cleared.  Returns the canceled jobs.  Pass the
    connection of the caller's transaction to commit with its other changes."""
    if not statuses:
        return []
    rows = await conn.fetch(
        CANCEL_JOBS, workflow_id, [JobStatus(s).value for s in statuses], trigger.value if trigger else None
    )
    return [_job(r) for r in rows]


async def get_by_id(db: Queryable, job_id: UUID) -> Job:
    """Admin: a job by id, whoever owns it.  ``NotFound`` if absent."""
    row = await db.fetchrow(SELECT_JOB_BY_ID, job_id)
    if row is None:
        raise NotFound("job not found")
    return _job(row)


async def update_status(
    db: Queryable, job_id: UUID, status: JobStatus, *, container_id: str | None = None
) -> Job:
    """Admin (reference ``UpdateJobStatus``): RUNNING sets ``started_at`` (and ``container_id`` if
    given); COMPLETED/FAILED/CANCELED set ``completed_at`` and clear the lease (so the executor's
    next renewal fails and it aborts).  Only PENDING/QUEUED/RUNNING jobs change: a terminal job
    raises ``PreconditionFailed``; an unknown id ``NotFound``."""
    row = await db.fetchrow(UPDATE_STATUS, job_id, JobStatus(status).value, container_id)
    if row is None:
        current = await db.fetchrow(SELECT_JOB_BY_ID, job_id)
        if current is None:
            raise NotFound("job not found")
        raise PreconditionFailed(f"job is {current['status']}: a terminal job cannot change status")
    return _job(row)


# ------------------------------------------------------------------------------------------------
# internals
# ------------------------------------------------------------------------------------------------


def _job(row: Any) -> Job:
    return Job.model_validate(dict(row))


def _naive_utc(value: datetime) -> datetime:
    return value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)
