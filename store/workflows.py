"""The ``workflows`` table and its satellites ``workflow_idempotency_keys`` and
``workflow_failure_events`` (reference §3.1, §5.1-5.4, §6.2).

User-facing functions take the caller's ``user_id`` and only ever touch that user's rows: a foreign
workflow is ``NotFound`` exactly like a missing one.  Admin functions (for the workers) are marked
as such and take what the worker knows from its event.

Every state change that the reference pairs with a ``workflows`` event writes the outbox row in the
same transaction (:func:`store.outbox.add_event`, event keys from :mod:`domain.event_keys`).
Mutations take ``cache`` (keyword, required, may be ``None``) and invalidate the user's cached
workflows after committing and before returning, so the caller never reads its own write stale.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from uuid import UUID

import asyncpg

from domain.cursors import decode_optional_cursor, paginate
from domain.enums import WorkflowAction, WorkflowBuildStatus
from domain.errors import Conflict, Invalid, NotFound, PreconditionFailed
from domain.event_keys import workflow_event_key
from domain.filters import WorkflowFilters
from domain.idempotency import (
    CREATE_WORKFLOW,
    IDEMPOTENCY_TTL,
    IdempotencyOutcome,
    StoredKey,
    decide,
    raise_for,
    request_hash,
    update_workflow_operation,
)
from domain.ids import uuid7
from domain.models import Page, Workflow, WorkflowChanges, WorkflowDraft, WorkflowUpdateResult
from domain.workflow_spec import check_payload_for, create_request_fields, update_request_fields
from domain.workflow_update import UpdateAction, decide_update
from store import jobs, outbox
from store.cache import Cache
from store.postgres import Queryable, rows_affected
from store.transaction import transaction

#: Topic of workflow lifecycle events.
WORKFLOWS_TOPIC = "workflows"
#: Default page size (``WORKFLOWS_SERVICE_CONFIG_FETCH_LIMIT``).
DEFAULT_PAGE_SIZE = 10
#: How long a request waits for a concurrent request holding the same idempotency key (or the
#: same workflow row) before answering 409 "still being processed".
LOCK_TIMEOUT = "5s"

_COLUMNS = """
    id, user_id, name, payload, kind, build_status::text AS build_status, "interval",
    consecutive_job_failures_count, max_consecutive_job_failures_allowed, created_at, updated_at,
    terminated_at, log_retention, log_retention_ttl_seconds, generation, build_hash
"""

# -- idempotency keys ---------------------------------------------------------------------------

SET_LOCK_TIMEOUT = f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"

RESERVE_KEY = """
INSERT INTO workflow_idempotency_keys (user_id, operation, idempotency_key, request_hash, expires_at)
VALUES ($1, $2, $3, $4, (now() AT TIME ZONE 'utc') + $5::interval)
ON CONFLICT (user_id, operation, idempotency_key) DO NOTHING
RETURNING 1
"""

SELECT_KEY_FOR_UPDATE = """
SELECT status::text AS status, request_hash, workflow_id, response, expires_at,
       (now() AT TIME ZONE 'utc') AS now
  FROM workflow_idempotency_keys
 WHERE user_id = $1 AND operation = $2 AND idempotency_key = $3
   FOR UPDATE
"""

TAKE_OVER_KEY = """
UPDATE workflow_idempotency_keys
   SET request_hash = $4, status = 'PROCESSING', workflow_id = NULL, response = NULL,
       created_at = (now() AT TIME ZONE 'utc'), expires_at = (now() AT TIME ZONE 'utc') + $5::interval
 WHERE user_id = $1 AND operation = $2 AND idempotency_key = $3
"""

COMPLETE_KEY = """
UPDATE workflow_idempotency_keys
   SET status = 'COMPLETED', workflow_id = $4, response = $5
 WHERE user_id = $1 AND operation = $2 AND idempotency_key = $3
"""

CLEANUP_EXPIRED_KEYS = """
DELETE FROM workflow_idempotency_keys
 WHERE (user_id, operation, idempotency_key) IN (
       SELECT user_id, operation, idempotency_key
         FROM workflow_idempotency_keys
        WHERE expires_at < (now() AT TIME ZONE 'utc')
        ORDER BY expires_at
        LIMIT $1
          FOR UPDATE SKIP LOCKED
 )
"""

# -- workflows ----------------------------------------------------------------------------------

INSERT_WORKFLOW = f"""
INSERT INTO workflows (id, user_id, name, payload, kind, "interval", max_consecutive_job_failures_allowed,
                       log_retention, log_retention_ttl_seconds, build_hash)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
RETURNING {_COLUMNS}
"""

SELECT_WORKFLOW = f"SELECT {_COLUMNS} FROM workflows WHERE id = $1 AND user_id = $2"

SELECT_WORKFLOW_FOR_UPDATE = f"SELECT {_COLUMNS} FROM workflows WHERE id = $1 AND user_id = $2 FOR UPDATE"

SELECT_WORKFLOW_BY_ID = f"SELECT {_COLUMNS} FROM workflows WHERE id = $1"
SELECT_WORKFLOWS_BY_ID = f"SELECT {_COLUMNS} FROM workflows WHERE id = ANY($1::uuid[])"

# $2 query pattern ('' = any), $3 kind, $4 build_status (implies not terminated), $5 only terminated,
# $6/$7 interval bounds (0 = open), $8/$9 cursor (inclusive), $10 limit.
LIST_WORKFLOWS = f"""
SELECT {_COLUMNS}
  FROM workflows
 WHERE user_id = $1
   AND ($2::text = '' OR name ILIKE '%' || $2::text || '%')
   AND ($3::text IS NULL OR kind = $3::text)
   AND ($4::workflow_build_status IS NULL
        OR (build_status = $4::workflow_build_status AND terminated_at IS NULL))
   AND (NOT $5::bool OR terminated_at IS NOT NULL)
   AND ($6::int = 0 OR "interval" >= $6::int)
   AND ($7::int = 0 OR "interval" <= $7::int)
   AND ($8::timestamp IS NULL OR (created_at, id) <= ($8::timestamp, $9::uuid))
 ORDER BY created_at DESC, id DESC
 LIMIT $10
"""

# $8: generation delta (0 or 1); $9: new build status or NULL to keep.
APPLY_UPDATE = f"""
UPDATE workflows
   SET name = $3, payload = $4, "interval" = $5, max_consecutive_job_failures_allowed = $6,
       build_hash = $7, generation = generation + $8::int,
       build_status = COALESCE($9::workflow_build_status, build_status),
       consecutive_job_failures_count = 0, terminated_at = NULL
 WHERE id = $1 AND user_id = $2
RETURNING {_COLUMNS}
"""

TERMINATE_WORKFLOW = f"""
UPDATE workflows SET terminated_at = COALESCE(terminated_at, now() AT TIME ZONE 'utc')
 WHERE id = $1 AND user_id = $2
RETURNING {_COLUMNS}
"""

HAS_RUNNING_JOB = "SELECT EXISTS (SELECT 1 FROM jobs WHERE workflow_id = $1 AND status = 'RUNNING')"

DELETE_WORKFLOW = "DELETE FROM workflows WHERE id = $1 AND user_id = $2"

# Generation 0 = no guard (reference §2.5).
UPDATE_BUILD_STATUS = f"""
UPDATE workflows SET build_status = $2::workflow_build_status
 WHERE id = $1 AND ($3::bigint = 0 OR generation = $3::bigint)
RETURNING {_COLUMNS}
"""

SELECT_FAILURE_STATE_FOR_UPDATE = """
SELECT consecutive_job_failures_count, max_consecutive_job_failures_allowed,
       terminated_at IS NOT NULL AS terminated
  FROM workflows
 WHERE id = $1 AND user_id = $2
   FOR UPDATE
"""

INSERT_FAILURE_EVENT = """
INSERT INTO workflow_failure_events (job_id, workflow_id, user_id)
VALUES ($1, $2, $3)
ON CONFLICT (job_id) DO NOTHING
RETURNING 1
"""

INCREMENT_FAILURES = """
UPDATE workflows SET consecutive_job_failures_count = consecutive_job_failures_count + 1
 WHERE id = $1
RETURNING consecutive_job_failures_count
"""

# found: the workflow exists, is the user's and is active; changed: the counter was non-zero (a
# zero counter is left alone, so the hot path of a successful job writes nothing).
RESET_FAILURES = """
WITH target AS (
    SELECT id, consecutive_job_failures_count AS failures
      FROM workflows
     WHERE id = $1 AND user_id = $2 AND terminated_at IS NULL
       FOR UPDATE
), reset AS (
    UPDATE workflows w SET consecutive_job_failures_count = 0
      FROM target
     WHERE w.id = target.id AND target.failures <> 0
    RETURNING w.id
)
SELECT (SELECT count(*) FROM target) AS found, (SELECT count(*) FROM reset) AS changed
"""


# ------------------------------------------------------------------------------------------------
# user-facing
# ------------------------------------------------------------------------------------------------


async def create(
    db: Queryable,
    *,
    user_id: UUID,
    draft: WorkflowDraft,
    idempotency_key: str,
    cache: Cache | None,
) -> UUID:
    """Create a workflow (``QUEUED``, generation 1) with its outbox ``BUILD`` event
    ``workflow:<id>:BUILD:1``, idempotently.  Returns the workflow id.

    One transaction: reserve the key (operation ``create_workflow``), insert, outbox, complete the
    key.  Same key + same request → the original id, no new row or event.  Same key + different
    request → ``AlreadyExists`` (409).  Key held by an unfinished request → ``Conflict`` (409).
    ``Invalid`` when the key is empty.
    """
    _require_key(idempotency_key)
    fingerprint = request_hash(create_request_fields(user_id, draft))
    try:
        async with transaction(db) as conn:
            await conn.execute(SET_LOCK_TIMEOUT)
            stored = await _reserve_key(conn, user_id, CREATE_WORKFLOW, idempotency_key, fingerprint)
            if stored is not None and stored.workflow_id is not None:
                return stored.workflow_id
            workflow_id = uuid7()
            await conn.execute(
                INSERT_WORKFLOW,
                workflow_id,
                user_id,
                draft.name,
                draft.payload,
                draft.kind.value,
                draft.interval,
                draft.max_consecutive_job_failures_allowed,
                draft.log_retention,
                draft.log_retention_ttl_seconds,
                draft.build_hash,
            )
            await _add_event(conn, workflow_id, user_id, WorkflowAction.BUILD, 1)
            await conn.execute(
                COMPLETE_KEY, user_id, CREATE_WORKFLOW, idempotency_key, workflow_id, {"id": str(workflow_id)}
            )
    except asyncpg.LockNotAvailableError:
        raise Conflict("a request with this idempotency key is still being processed") from None
    except asyncpg.ForeignKeyViolationError:
        raise NotFound("user not found") from None
    await _invalidate(cache, user_id)
    return workflow_id


async def update(
    db: Queryable,
    *,
    user_id: UUID,
    workflow_id: UUID,
    changes: WorkflowChanges,
    idempotency_key: str,
    cache: Cache | None,
) -> WorkflowUpdateResult:
    """Apply a PUT per reference §5.2, idempotently (operation ``update_workflow:<id>``).

    In one transaction, after ``SELECT … FOR UPDATE``: the payload is validated against the stored
    kind (``Invalid``/``PreconditionFailed``), :func:`domain.workflow_update.decide_update` picks
    BUILD (generation+1, ``QUEUED``, cancel PENDING+QUEUED jobs of every trigger, outbox BUILD),
    RESCHEDULE (generation+1, cancel PENDING+QUEUED AUTOMATIC jobs, outbox RESCHEDULE) or NONE;
    always: fields updated, failure counter reset, ``terminated_at`` cleared.
    ``NotFound`` for a missing/foreign workflow; ``AlreadyExists``/``Conflict`` as :func:`create`.
    A replay returns the original result with ``replayed=True`` and changes nothing.
    """
    _require_key(idempotency_key)
    operation = update_workflow_operation(workflow_id)
    fingerprint = request_hash(update_request_fields(workflow_id, changes))
    try:
        async with transaction(db) as conn:
            await conn.execute(SET_LOCK_TIMEOUT)
            stored = await _reserve_key(conn, user_id, operation, idempotency_key, fingerprint)
            if stored is not None:
                return _replayed_update(stored)
            current = await _fetch_workflow(conn, SELECT_WORKFLOW_FOR_UPDATE, workflow_id, user_id)
            new_hash = check_payload_for(current.kind, changes)
            action = decide_update(
                old_build_hash=current.build_hash,
                new_build_hash=new_hash,
                build_status=current.build_status,
                terminated=current.terminated,
                old_interval=current.interval,
                new_interval=changes.interval,
            )
            row = await conn.fetchrow(
                APPLY_UPDATE,
                workflow_id,
                user_id,
                changes.name,
                changes.payload,
                changes.interval,
                changes.max_consecutive_job_failures_allowed,
                new_hash,
                1 if action.bumps_generation else 0,
                WorkflowBuildStatus.QUEUED.value if action == UpdateAction.BUILD else None,
            )
            updated = _workflow(row)
            statuses, trigger = action.jobs_to_cancel
            if statuses:
                await jobs.cancel_jobs(conn, workflow_id, statuses, trigger=trigger)
            event_action = action.event_action
            if event_action is not None:
                await _add_event(conn, workflow_id, user_id, event_action, updated.generation)
            result = WorkflowUpdateResult(action=action, generation=updated.generation, replayed=False)
            await conn.execute(
                COMPLETE_KEY,
                user_id,
                operation,
                idempotency_key,
                workflow_id,
                {"id": str(workflow_id), "action": action.value, "generation": updated.generation},
            )
    except asyncpg.LockNotAvailableError:
        raise Conflict("a request with this idempotency key is still being processed") from None
    await _invalidate(cache, user_id)
    return result


async def get(db: Queryable, user_id: UUID, workflow_id: UUID, *, cache: Cache | None = None) -> Workflow:
    """The user's workflow (read-through ``workflow:<user>:<id>`` when ``cache`` is given).
    ``NotFound`` when missing or owned by somebody else."""
    lookup = await cache.get_workflow(user_id, workflow_id) if cache is not None else None
    if lookup is not None and lookup.value is not None:
        return lookup.value
    workflow = await _fetch_workflow(db, SELECT_WORKFLOW, workflow_id, user_id)
    if cache is not None and lookup is not None:
        await cache.put_workflow(lookup.epoch, workflow)
    return workflow


async def list_workflows(
    db: Queryable,
    user_id: UUID,
    *,
    cursor: str | None = None,
    filters: WorkflowFilters | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    cache: Cache | None = None,
) -> Page[Workflow]:
    """The user's workflows newest first (``created_at DESC, id DESC``), ``page_size`` per page.

    ``cursor`` comes from the previous page (``Invalid`` if malformed); the returned page's
    ``cursor`` is ``None`` on the last page.  Build ``filters`` with :meth:`WorkflowFilters.parse`
    (it enforces the reference's 400 rules).
    """
    filters = filters or WorkflowFilters()
    position = decode_optional_cursor(cursor)
    lookup = await cache.get_workflow_page(user_id, cursor, filters) if cache is not None else None
    if lookup is not None and lookup.value is not None:
        return lookup.value
    rows = await db.fetch(
        LIST_WORKFLOWS,
        user_id,
        _like_escape(filters.query),
        filters.kind.value if filters.kind else None,
        filters.build_status.value if filters.build_status else None,
        filters.terminated,
        filters.interval_min,
        filters.interval_max,
        position.created_at if position else None,
        position.id if position else None,
        page_size + 1,
    )
    page = paginate([_workflow(r) for r in rows], page_size)
    if cache is not None and lookup is not None:
        await cache.put_workflow_page(lookup.epoch, user_id, cursor, filters, page)
    return page


async def terminate(db: Queryable, *, user_id: UUID, workflow_id: UUID, cache: Cache | None) -> Workflow:
    """Terminate (PATCH, and the worker's auto-terminate): ``terminated_at = COALESCE(terminated_at,
    now)`` and outbox ``TERMINATE`` at the current generation (a repeat adds no second event).
    Idempotent.  ``NotFound`` for a missing/foreign workflow."""
    async with transaction(db) as conn:
        await _fetch_workflow(conn, SELECT_WORKFLOW_FOR_UPDATE, workflow_id, user_id)
        row = await conn.fetchrow(TERMINATE_WORKFLOW, workflow_id, user_id)
        workflow = _workflow(row)
        await _add_event(conn, workflow_id, user_id, WorkflowAction.TERMINATE, workflow.generation)
    await _invalidate(cache, user_id)
    return workflow


async def delete(db: Queryable, *, user_id: UUID, workflow_id: UUID, cache: Cache | None) -> None:
    """Delete a terminated workflow with no RUNNING job (its jobs and failure events cascade;
    analytics rows stay) and write outbox ``DELETE`` (``workflow:<id>:DELETE``, generation 0).
    ``PreconditionFailed`` (412) when it is active or has a RUNNING job; ``NotFound`` otherwise."""
    async with transaction(db) as conn:
        current = await _fetch_workflow(conn, SELECT_WORKFLOW_FOR_UPDATE, workflow_id, user_id)
        if not current.terminated:
            raise PreconditionFailed("workflow is active, cannot delete")
        if await conn.fetchval(HAS_RUNNING_JOB, workflow_id):
            raise PreconditionFailed("workflow has a running job, cannot delete")
        await conn.execute(DELETE_WORKFLOW, workflow_id, user_id)
        await _add_event(conn, workflow_id, user_id, WorkflowAction.DELETE, 0)
    await _invalidate(cache, user_id)


async def cleanup_expired_idempotency_keys(db: Queryable, *, batch_size: int) -> int:
    """Delete up to ``batch_size`` keys past ``expires_at`` (24 h); return how many."""
    return rows_affected(await db.execute(CLEANUP_EXPIRED_KEYS, batch_size))


# ------------------------------------------------------------------------------------------------
# admin (workers)
# ------------------------------------------------------------------------------------------------


async def get_by_id(db: Queryable, workflow_id: UUID) -> Workflow:
    """Admin: a workflow by id whoever owns it.  ``NotFound`` if absent."""
    row = await db.fetchrow(SELECT_WORKFLOW_BY_ID, workflow_id)
    if row is None:
        raise NotFound("workflow not found")
    return _workflow(row)


async def get_many_by_id(db: Queryable, workflow_ids: Iterable[UUID]) -> dict[UUID, Workflow]:
    """Admin: the workflows of ``workflow_ids`` that exist, by id, in one statement."""
    rows = await db.fetch(SELECT_WORKFLOWS_BY_ID, list(set(workflow_ids)))
    return {workflow.id: workflow for workflow in map(_workflow, rows)}


async def update_build_status(
    db: Queryable,
    workflow_id: UUID,
    status: WorkflowBuildStatus,
    generation: int,
    *,
    cache: Cache | None,
) -> Workflow:
    """Admin: set ``build_status`` if the workflow is still at ``generation`` (0 = no guard).
    ``PreconditionFailed`` for a stale generation (nothing changes); ``NotFound`` if absent."""
    row = await db.fetchrow(UPDATE_BUILD_STATUS, workflow_id, WorkflowBuildStatus(status).value, generation)
    if row is None:
        current = await db.fetchrow(SELECT_WORKFLOW_BY_ID, workflow_id)
        if current is None:
            raise NotFound("workflow not found")
        raise PreconditionFailed(
            f"stale workflow generation {generation}: the workflow is at generation {current['generation']}"
        )
    workflow = _workflow(row)
    await _invalidate(cache, workflow.user_id)
    return workflow


async def increment_failures(
    db: Queryable, *, workflow_id: UUID, user_id: UUID, job_id: UUID, cache: Cache | None
) -> bool:
    """Admin (JOB_FAILED): count one more consecutive failure, once per ``job_id``
    (``workflow_failure_events`` dedupes replays) and only while the workflow is active.  Returns
    ``threshold_reached`` = ``count >= max_consecutive_job_failures_allowed`` (also on a replay).
    ``NotFound`` for a missing/foreign workflow."""
    async with transaction(db) as conn:
        state = await conn.fetchrow(SELECT_FAILURE_STATE_FOR_UPDATE, workflow_id, user_id)
        if state is None:
            raise NotFound("workflow not found")
        count = state["consecutive_job_failures_count"]
        first_time = await conn.fetchval(INSERT_FAILURE_EVENT, job_id, workflow_id, user_id) is not None
        changed = first_time and not state["terminated"]
        if changed:
            count = await conn.fetchval(INCREMENT_FAILURES, workflow_id)
    if changed:
        await _invalidate(cache, user_id)
    return bool(count >= state["max_consecutive_job_failures_allowed"])


async def reset_failures(db: Queryable, *, workflow_id: UUID, user_id: UUID, cache: Cache | None) -> None:
    """Admin (JOB_COMPLETED): reset the consecutive failure counter to 0.  ``NotFound`` when the
    workflow is missing, foreign or terminated (as the seed)."""
    row = await db.fetchrow(RESET_FAILURES, workflow_id, user_id)
    if not row["found"]:
        raise NotFound("workflow not found or terminated")
    if row["changed"]:
        await _invalidate(cache, user_id)


# ------------------------------------------------------------------------------------------------
# internals
# ------------------------------------------------------------------------------------------------


def _workflow(row: Any) -> Workflow:
    return Workflow.model_validate(dict(row))


async def _fetch_workflow(db: Queryable, statement: str, workflow_id: UUID, user_id: UUID) -> Workflow:
    row = await db.fetchrow(statement, workflow_id, user_id)
    if row is None:
        raise NotFound("workflow not found")
    return _workflow(row)


def _like_escape(text: str) -> str:
    """Match ``text`` literally inside ILIKE (``\\`` is PostgreSQL's default LIKE escape)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _require_key(idempotency_key: str) -> None:
    if not idempotency_key or not idempotency_key.strip():
        raise Invalid("idempotency key is required")


async def _reserve_key(
    conn: Any, user_id: UUID, operation: str, idempotency_key: str, fingerprint: str
) -> StoredKey | None:
    """Reserve the key for this transaction.  ``None``: proceed with the mutation.  A stored key:
    replay its result.  Raises ``AlreadyExists``/``Conflict`` for a refused reuse."""
    if await conn.fetchval(RESERVE_KEY, user_id, operation, idempotency_key, fingerprint, IDEMPOTENCY_TTL):
        return None
    # The insert waited for any concurrent holder to finish, so this row is committed state.
    row = await conn.fetchrow(SELECT_KEY_FOR_UPDATE, user_id, operation, idempotency_key)
    if row is None:  # deleted by the cleanup in between: take the key afresh
        await conn.execute(RESERVE_KEY, user_id, operation, idempotency_key, fingerprint, IDEMPOTENCY_TTL)
        return None
    stored = StoredKey(
        status=row["status"],
        request_hash=row["request_hash"],
        workflow_id=row["workflow_id"],
        expires_at=row["expires_at"],
        response=row["response"],
    )
    outcome = decide(stored, fingerprint, row["now"])
    if outcome == IdempotencyOutcome.PROCEED:
        await conn.execute(TAKE_OVER_KEY, user_id, operation, idempotency_key, fingerprint, IDEMPOTENCY_TTL)
        return None
    raise_for(outcome)
    return stored


def _replayed_update(stored: StoredKey) -> WorkflowUpdateResult:
    response = stored.response or {}
    return WorkflowUpdateResult(
        action=UpdateAction(response.get("action", UpdateAction.NONE.value)),
        generation=int(response.get("generation", 0)),
        replayed=True,
    )


async def _add_event(
    conn: Any, workflow_id: UUID, user_id: UUID, action: WorkflowAction, generation: int
) -> None:
    """Outbox row on ``workflows`` keyed by the workflow id; the payload has the fields of
    ``ingest.events.WorkflowEvent`` (store does not import ingest)."""
    event_key = workflow_event_key(workflow_id, action, generation)
    await outbox.add_event(
        conn,
        topic=WORKFLOWS_TOPIC,
        kafka_key=str(workflow_id),
        event_key=event_key,
        payload={
            "event_key": event_key,
            "id": str(workflow_id),
            "user_id": str(user_id),
            "action": action.value,
            "generation": generation,
            "job_id": "",
            "failure_kind": "",
            "error_code": "",
            "error_message": "",
        },
    )


async def _invalidate(cache: Cache | None, user_id: UUID) -> None:
    if cache is not None:
        await cache.invalidate_workflows(user_id)
