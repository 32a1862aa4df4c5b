"""Job leases: every statement that claims, renews or settles a job run (reference §6.3).

A dispatch (``ScheduledJobEntry``) is *claimed* with one transaction that requires the job to be
QUEUED with exactly the dispatched ``dispatch_attempts`` (a stale or replayed dispatch gets
``claimed=False``) and keeps the workflow serial: no other RUNNING job and no earlier active
sibling, else the job is moved back to PENDING ("deferred").  The claim sets RUNNING,
``attempts + 1`` and a lease token ``"<worker_id>:<uuid4>"`` valid for the lease duration.

Every later operation on the run (:meth:`JobLeases.renew`, :meth:`~JobLeases.attach_container`,
:meth:`~JobLeases.complete`, :meth:`~JobLeases.fail`, :meth:`~JobLeases.cancel_claimed`,
:meth:`~JobLeases.release_for_retry`) requires ``id + lease_token + status = RUNNING`` and raises
:class:`~domain.errors.PreconditionFailed` ``"<op>: job lease not held"`` otherwise, changing nothing.
COMPLETED/FAILED write, in the same transaction, the analytics ``JOBS`` event
(``analytics:job:<id>:completed``) and the workflows ``JOB_COMPLETED``/``JOB_FAILED`` event
(``workflow:job:<id>:<ACTION>``) to the outbox.  Cancel and release write no events.

:meth:`JobLeases.recover_expired` re-leases RUNNING jobs whose lease ran out (their worker died)
under a new token, leaving ``attempts`` unchanged.

All times come from the database clock (naive UTC), which the scheduler compares against too.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from uuid import UUID

import asyncpg
from pydantic import BaseModel, ConfigDict

from domain.enums import ExecutionErrorCode, FailureKind, JobStatus, JobTrigger, WorkflowAction, WorkflowKind
from domain.errors import NotFound, PreconditionFailed
from domain.event_keys import job_terminal_event_key
from domain.events import AnalyticEvent, WorkflowEvent
from domain.execution import truncate_error_message
from domain.models import Workflow
from store import outbox, workflows

# Namespace (first int4 of the two-key form) of the per-workflow advisory lock that serialises
# claims of one workflow's jobs; the second key is hashtext(workflow_id).
CLAIM_LOCK_NAMESPACE = 0x4A4F42  # "JOB"

_NOW = "(now() AT TIME ZONE 'utc')"

# Locks the job row and takes the workflow's claim lock in one round trip.  The CLAIM that follows
# is a new statement, so its snapshot already sees every claim committed before the lock was
# granted.  (Either lock order is deadlock-free: nobody waits for the advisory lock while holding
# another job's row lock.)
LOCK_JOB = """
SELECT j.id, j.workflow_id, j.status::text AS status, j.dispatch_attempts
  FROM jobs j,
       LATERAL (SELECT pg_advisory_xact_lock($2::int4, hashtext(j.workflow_id::text))) AS claim_lock
 WHERE j.id = $1
   FOR UPDATE OF j
"""

# The serialisation conditions of reference §5.3: no other RUNNING job of the workflow and no
# earlier (scheduled_at, created_at, id) PENDING/QUEUED sibling.  The claim lock taken above makes
# this check-then-set atomic across concurrent claims of one workflow.
CLAIM = f"""
UPDATE jobs j
   SET status = 'RUNNING',
       attempts = j.attempts + 1,
       lease_token = $2,
       leased_by = $3,
       lease_expires_at = {_NOW} + $4::interval,
       last_heartbeat_at = {_NOW},
       started_at = {_NOW},
       completed_at = NULL,
       failure_kind = NULL,
       last_error_code = NULL,
       last_error_message = NULL
 WHERE j.id = $1
   AND j.status = 'QUEUED'
   AND NOT EXISTS (
           SELECT 1
             FROM jobs s
            WHERE s.workflow_id = j.workflow_id
              AND s.id <> j.id
              AND (s.status = 'RUNNING'
                   OR (s.status IN ('PENDING', 'QUEUED')
                       AND (s.scheduled_at, s.created_at, s.id) < (j.scheduled_at, j.created_at, j.id)))
       )
RETURNING id, workflow_id, user_id, "trigger"::text AS trigger, scheduled_at, dispatch_attempts,
          attempts, lease_token, lease_expires_at, started_at
"""

DEFER = "UPDATE jobs SET status = 'PENDING', queued_at = NULL WHERE id = $1 AND status = 'QUEUED'"

_HELD = "id = $1 AND lease_token = $2 AND status = 'RUNNING'"

RENEW = f"""
UPDATE jobs
   SET lease_expires_at = {_NOW} + $3::interval, last_heartbeat_at = {_NOW}
 WHERE {_HELD}
RETURNING lease_expires_at
"""

ATTACH_CONTAINER = f"UPDATE jobs SET container_id = $3 WHERE {_HELD} RETURNING id"

_CLEAR_LEASE = "lease_token = NULL, leased_by = NULL, lease_expires_at = NULL"

COMPLETE = f"""
UPDATE jobs
   SET status = 'COMPLETED', completed_at = {_NOW}, {_CLEAR_LEASE}
 WHERE {_HELD}
RETURNING workflow_id, user_id, started_at, completed_at
"""

FAIL = f"""
UPDATE jobs
   SET status = 'FAILED', completed_at = {_NOW}, {_CLEAR_LEASE},
       failure_kind = $3, last_error_code = $4, last_error_message = $5
 WHERE {_HELD}
RETURNING workflow_id, user_id, started_at, completed_at
"""

CANCEL_CLAIMED = f"""
UPDATE jobs
   SET status = 'CANCELED', completed_at = {_NOW}, {_CLEAR_LEASE}
 WHERE {_HELD}
RETURNING id
"""

RELEASE_FOR_RETRY = f"""
UPDATE jobs
   SET status = 'PENDING', container_id = NULL, started_at = NULL, queued_at = NULL, {_CLEAR_LEASE},
       next_attempt_at = {_NOW} + $3::interval,
       failure_kind = 'SYSTEM', last_error_code = $4, last_error_message = $5
 WHERE {_HELD}
RETURNING next_attempt_at
"""

# Each expired row gets its own fresh token (gen_random_uuid() is a v4 uuid).
RECOVER_EXPIRED = f"""
WITH expired AS (
    SELECT id AS expired_id, leased_by AS previous_leased_by
      FROM jobs
     WHERE status = 'RUNNING' AND lease_expires_at < {_NOW}
     ORDER BY lease_expires_at, id
     LIMIT $1
       FOR UPDATE SKIP LOCKED
)
UPDATE jobs j
   SET lease_token = $2 || ':' || gen_random_uuid()::text,
       leased_by = $2,
       lease_expires_at = {_NOW} + $3::interval,
       last_heartbeat_at = {_NOW}
  FROM expired e, workflows w
 WHERE j.id = e.expired_id
   AND w.id = j.workflow_id
RETURNING j.id, j.workflow_id, j.user_id, j.container_id, j.lease_token, e.previous_leased_by,
          j."trigger"::text AS trigger, j.scheduled_at, j.attempts, w.log_retention, w.kind
"""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class ClaimedJob(_Frozen):
    """A job this worker now holds the lease of."""

    id: UUID
    workflow_id: UUID
    user_id: UUID
    trigger: JobTrigger
    scheduled_at: datetime
    dispatch_attempts: int
    attempts: int
    lease_token: str
    lease_expires_at: datetime
    started_at: datetime


class ClaimResult(_Frozen):
    """Outcome of a claim: the job and its workflow (as the claim saw it; ``None`` if the workflow
    is gone) when claimed, else the reason (the dispatch is acknowledged)."""

    claimed: bool
    reason: str = ""
    job: ClaimedJob | None = None
    workflow: Workflow | None = None


class RecoveredJob(_Frozen):
    """A RUNNING job whose lease expired, now re-leased to this worker (attempts unchanged)."""

    id: UUID
    workflow_id: UUID
    user_id: UUID
    container_id: str | None
    lease_token: str
    previous_leased_by: str | None
    trigger: JobTrigger
    scheduled_at: datetime
    attempts: int
    log_retention: bool
    kind: WorkflowKind


class SettledJob(_Frozen):
    """What a COMPLETED/FAILED transition returns (for logs and metrics)."""

    workflow_id: UUID
    user_id: UUID
    started_at: datetime | None
    completed_at: datetime

    @property
    def execution_seconds(self) -> int:
        """Whole seconds from start to completion (0 without a start), as analytics counts them."""
        if self.started_at is None:
            return 0
        return max(0, int((self.completed_at - self.started_at).total_seconds()))


def new_lease_token(worker_id: str) -> str:
    """``<worker_id>:<uuid4>`` (reference §6.3)."""
    return f"{worker_id}:{uuid.uuid4()}"


def _not_held(op: str) -> PreconditionFailed:
    return PreconditionFailed(f"{op}: job lease not held", code="lease_not_held")


class JobLeases:
    """The lease repository over an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def claim(
        self, *, job_id: UUID, dispatch_attempt: int, worker_id: str, lease_duration: timedelta
    ) -> ClaimResult:
        """Claim a dispatched job (see the module docstring).  Never raises for a stale dispatch:
        ``claimed=False`` with a reason tells the caller to acknowledge it and move on."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(LOCK_JOB, job_id, CLAIM_LOCK_NAMESPACE)
            if row is None:
                return ClaimResult(claimed=False, reason="job not found")
            if row["status"] != JobStatus.QUEUED or row["dispatch_attempts"] != dispatch_attempt:
                return ClaimResult(
                    claimed=False,
                    reason=f"job status is {row['status']} with dispatch attempts {row['dispatch_attempts']}",
                )
            claimed = await conn.fetchrow(
                CLAIM, job_id, new_lease_token(worker_id), worker_id, lease_duration
            )
            if claimed is None:
                await conn.execute(DEFER, job_id)
                return ClaimResult(claimed=False, reason="job deferred behind another workflow job")
            job = ClaimedJob.model_validate(dict(claimed))
            # Read here, on the claim's connection, so the run needs no second checkout for it.
            try:
                workflow: Workflow | None = await workflows.get_by_id(conn, job.workflow_id)
            except NotFound:
                workflow = None
            return ClaimResult(claimed=True, job=job, workflow=workflow)

    async def renew(self, job_id: UUID, lease_token: str, lease_duration: timedelta) -> datetime:
        """Extend a held lease to now + ``lease_duration``; return the new expiry."""
        expires = await self._pool.fetchval(RENEW, job_id, lease_token, lease_duration)
        if expires is None:
            raise _not_held("renew")
        return expires

    async def attach_container(self, job_id: UUID, lease_token: str, container_id: str) -> None:
        """Record the container running the job (recovery finds it by this id)."""
        if await self._pool.fetchval(ATTACH_CONTAINER, job_id, lease_token, container_id) is None:
            raise _not_held("attach_container")

    async def complete(self, job_id: UUID, lease_token: str) -> SettledJob:
        """RUNNING → COMPLETED, with the analytics and ``JOB_COMPLETED`` outbox events."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(COMPLETE, job_id, lease_token)
            if row is None:
                raise _not_held("complete")
            settled = SettledJob.model_validate(dict(row))
            await _add_terminal_events(conn, job_id, settled, WorkflowAction.JOB_COMPLETED)
            return settled

    async def fail(
        self,
        job_id: UUID,
        lease_token: str,
        *,
        failure_kind: FailureKind,
        error_code: ExecutionErrorCode | str,
        error_message: str,
    ) -> SettledJob:
        """RUNNING → FAILED (message truncated to 4096 characters), with the analytics and
        ``JOB_FAILED`` outbox events."""
        message = truncate_error_message(error_message)
        code = str(error_code)
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                FAIL, job_id, lease_token, FailureKind(failure_kind).value, code, message
            )
            if row is None:
                raise _not_held("fail")
            settled = SettledJob.model_validate(dict(row))
            await _add_terminal_events(
                conn,
                job_id,
                settled,
                WorkflowAction.JOB_FAILED,
                failure_kind=FailureKind(failure_kind),
                error_code=code,
                error_message=message,
            )
            return settled

    async def cancel_claimed(self, job_id: UUID, lease_token: str) -> None:
        """RUNNING → CANCELED (the workflow was terminated under us); no events."""
        if await self._pool.fetchval(CANCEL_CLAIMED, job_id, lease_token) is None:
            raise _not_held("cancel_claimed")

    async def release_for_retry(
        self,
        job_id: UUID,
        lease_token: str,
        *,
        retry_after: timedelta,
        error_code: ExecutionErrorCode | str,
        error_message: str,
    ) -> datetime:
        """RUNNING → PENDING after a SYSTEM failure, due again ``retry_after`` from now; clears the
        container, start time and lease.  Returns ``next_attempt_at``."""
        next_attempt_at = await self._pool.fetchval(
            RELEASE_FOR_RETRY,
            job_id,
            lease_token,
            retry_after,
            str(error_code),
            truncate_error_message(error_message),
        )
        if next_attempt_at is None:
            raise _not_held("release_for_retry")
        return next_attempt_at

    async def recover_expired(
        self, *, worker_id: str, lease_duration: timedelta, batch_size: int = 100
    ) -> list[RecoveredJob]:
        """Re-lease up to ``batch_size`` RUNNING jobs whose lease expired, oldest expiry first,
        each under a new token of ``worker_id``; ``attempts`` is unchanged.  Rows another
        recoverer holds are skipped."""
        rows = await self._pool.fetch(
            RECOVER_EXPIRED, batch_size if batch_size > 0 else 100, worker_id, lease_duration
        )
        return [RecoveredJob.model_validate(dict(r)) for r in rows]


async def _add_terminal_events(
    conn: asyncpg.Connection,
    job_id: UUID,
    settled: SettledJob,
    action: WorkflowAction,
    *,
    failure_kind: FailureKind | None = None,
    error_code: str = "",
    error_message: str = "",
) -> None:
    analytics = AnalyticEvent.job_finished(
        user_id=str(settled.user_id),
        workflow_id=str(settled.workflow_id),
        job_id=str(job_id),
        execution_seconds=settled.execution_seconds,
        succeeded=action is WorkflowAction.JOB_COMPLETED,
    )
    workflow_event = WorkflowEvent(
        event_key=job_terminal_event_key(job_id, action),
        id=str(settled.workflow_id),
        user_id=str(settled.user_id),
        action=action,
        job_id=str(job_id),
        failure_kind=failure_kind or "",
        error_code=error_code,
        error_message=error_message,
    )
    # One statement for both (one round trip, one NOTIFY to the relay).
    await outbox.add_events(conn, [
        outbox.NewEvent(topic=event.topic, kafka_key=event.record_key(), event_key=event.event_key,
                        payload=event)
        for event in (analytics, workflow_event)
    ])
