"""store.job_leases against real PostgreSQL: claim guards, lease-guarded settling, outbox events and
expired-lease recovery (reference §6.3, checklist items 18-29)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from domain.enums import ExecutionErrorCode, FailureKind, JobStatus
from domain.errors import PreconditionFailed
from domain.execution import MAX_ERROR_MESSAGE_CHARS
from domain.ids import uuid7
from store.job_leases import JobLeases
from store.postgres import create_pool

LEASE = timedelta(seconds=30)


@pytest.fixture(scope="module")
async def pool(stack: Any) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(stack.settings.postgres, min_size=1, max_size=6)
    yield pool
    await pool.close()


@pytest.fixture
def leases(pool: asyncpg.Pool) -> JobLeases:
    return JobLeases(pool)


async def _now(pool: asyncpg.Pool) -> datetime:
    return await pool.fetchval("SELECT now() AT TIME ZONE 'utc'")


async def make_workflow(pool: asyncpg.Pool) -> tuple[UUID, UUID]:
    user_id, workflow_id = uuid7(), uuid7()
    await pool.execute(
        "INSERT INTO users (id, email, password) VALUES ($1, $2, 'x')", user_id, f"{user_id}@example.com"
    )
    await pool.execute(
        """INSERT INTO workflows (id, user_id, name, payload, kind, build_status, "interval")
           VALUES ($1, $2, 'wf', '{"endpoint": "http://x"}'::jsonb, 'HEARTBEAT', 'COMPLETED', 5)""",
        workflow_id,
        user_id,
    )
    return user_id, workflow_id


async def make_job(
    pool: asyncpg.Pool,
    workflow_id: UUID,
    user_id: UUID,
    *,
    status: str = "QUEUED",
    dispatch_attempts: int = 1,
    scheduled_at: datetime | None = None,
    trigger: str = "MANUAL",
) -> UUID:
    job_id = uuid7()
    await pool.execute(
        """INSERT INTO jobs (id, workflow_id, user_id, status, scheduled_at, dispatch_attempts, "trigger")
           VALUES ($1, $2, $3, $4::job_status, $5, $6, $7::job_trigger)""",
        job_id,
        workflow_id,
        user_id,
        status,
        scheduled_at or datetime(2025, 1, 1),
        dispatch_attempts,
        trigger,
    )
    return job_id


async def job_row(pool: asyncpg.Pool, job_id: UUID) -> asyncpg.Record:
    row = await pool.fetchrow("SELECT *, status::text AS status_text FROM jobs WHERE id = $1", job_id)
    assert row is not None
    return row


async def outbox_keys(pool: asyncpg.Pool, job_id: UUID) -> dict[str, str]:
    rows = await pool.fetch(
        "SELECT topic, event_key FROM outbox_events WHERE event_key LIKE $1", f"%{job_id}%"
    )
    return {r["event_key"]: r["topic"] for r in rows}


async def claimed_job(pool: asyncpg.Pool, leases: JobLeases) -> tuple[UUID, str]:
    user_id, workflow_id = await make_workflow(pool)
    job_id = await make_job(pool, workflow_id, user_id)
    result = await leases.claim(job_id=job_id, dispatch_attempt=1, worker_id="w1", lease_duration=LEASE)
    assert result.job is not None
    return job_id, result.job.lease_token


async def test_claim_with_a_stale_dispatch_attempt_is_not_claimed_and_changes_nothing(
    pool: asyncpg.Pool, leases: JobLeases
) -> None:
    user_id, workflow_id = await make_workflow(pool)
    job_id = await make_job(pool, workflow_id, user_id, dispatch_attempts=2)
    before = await job_row(pool, job_id)
    result = await leases.claim(job_id=job_id, dispatch_attempt=1, worker_id="w1", lease_duration=LEASE)
    assert not result.claimed
    assert "dispatch attempts 2" in result.reason
    assert dict(await job_row(pool, job_id)) == dict(before)


async def test_claim_of_a_missing_job_is_not_claimed(leases: JobLeases) -> None:
    result = await leases.claim(job_id=uuid7(), dispatch_attempt=1, worker_id="w1", lease_duration=LEASE)
    assert not result.claimed and result.reason == "job not found"


async def test_successful_claim_sets_running_attempts_token_and_lease(
    pool: asyncpg.Pool, leases: JobLeases
) -> None:
    user_id, workflow_id = await make_workflow(pool)
    job_id = await make_job(pool, workflow_id, user_id)
    result = await leases.claim(job_id=job_id, dispatch_attempt=1, worker_id="worker-7", lease_duration=LEASE)
    assert result.claimed and result.job is not None
    row = await job_row(pool, job_id)
    now = await _now(pool)
    assert row["status_text"] == "RUNNING"
    assert row["attempts"] == 1 == result.job.attempts
    assert row["lease_token"].startswith("worker-7:") and row["lease_token"] == result.job.lease_token
    assert row["leased_by"] == "worker-7"
    assert abs((row["lease_expires_at"] - (now + LEASE)).total_seconds()) < 5
    assert row["started_at"] is not None
    assert result.workflow is not None and result.workflow.id == workflow_id  # read by the claim itself


async def test_replayed_dispatch_is_not_claimed_twice(pool: asyncpg.Pool, leases: JobLeases) -> None:
    job_id, token = await claimed_job(pool, leases)
    again = await leases.claim(job_id=job_id, dispatch_attempt=1, worker_id="w2", lease_duration=LEASE)
    assert not again.claimed
    row = await job_row(pool, job_id)
    assert row["lease_token"] == token and row["attempts"] == 1


async def test_claim_is_deferred_while_the_workflow_has_a_running_job(
    pool: asyncpg.Pool, leases: JobLeases
) -> None:
    user_id, workflow_id = await make_workflow(pool)
    await make_job(pool, workflow_id, user_id, status="RUNNING")
    job_id = await make_job(pool, workflow_id, user_id)
    result = await leases.claim(job_id=job_id, dispatch_attempt=1, worker_id="w1", lease_duration=LEASE)
    assert not result.claimed and "deferred" in result.reason
    assert (await job_row(pool, job_id))["status_text"] == "PENDING"


async def test_claim_is_deferred_behind_an_earlier_pending_sibling(
    pool: asyncpg.Pool, leases: JobLeases
) -> None:
    user_id, workflow_id = await make_workflow(pool)
    await make_job(pool, workflow_id, user_id, status="PENDING", scheduled_at=datetime(2024, 1, 1))
    job_id = await make_job(pool, workflow_id, user_id, scheduled_at=datetime(2025, 1, 1))
    result = await leases.claim(job_id=job_id, dispatch_attempt=1, worker_id="w1", lease_duration=LEASE)
    assert not result.claimed
    assert (await job_row(pool, job_id))["status_text"] == "PENDING"


async def test_concurrent_claims_of_one_workflow_run_at_most_one_job(
    pool: asyncpg.Pool, leases: JobLeases
) -> None:
    user_id, workflow_id = await make_workflow(pool)
    jobs = [
        await make_job(pool, workflow_id, user_id, scheduled_at=datetime(2025, 1, 1) + timedelta(minutes=i))
        for i in range(4)
    ]
    results = await asyncio.gather(
        *[
            leases.claim(job_id=j, dispatch_attempt=1, worker_id=f"w{i}", lease_duration=LEASE)
            for i, j in enumerate(reversed(jobs))
        ]
    )
    assert sum(r.claimed for r in results) <= 1
    running = await pool.fetchval(
        "SELECT count(*) FROM jobs WHERE workflow_id = $1 AND status = 'RUNNING'", workflow_id
    )
    assert running <= 1


@pytest.mark.parametrize(
    "op", ["renew", "attach_container", "complete", "fail", "cancel_claimed", "release_for_retry"]
)
async def test_lease_guarded_operations_with_a_wrong_token_fail_and_change_nothing(
    pool: asyncpg.Pool, leases: JobLeases, op: str
) -> None:
    job_id, _token = await claimed_job(pool, leases)
    before = dict(await job_row(pool, job_id))
    calls = {
        "renew": lambda t: leases.renew(job_id, t, LEASE),
        "attach_container": lambda t: leases.attach_container(job_id, t, "c1"),
        "complete": lambda t: leases.complete(job_id, t),
        "fail": lambda t: leases.fail(
            job_id,
            t,
            failure_kind=FailureKind.USER,
            error_code=ExecutionErrorCode.CONTAINER_EXIT_NONZERO,
            error_message="x",
        ),
        "cancel_claimed": lambda t: leases.cancel_claimed(job_id, t),
        "release_for_retry": lambda t: leases.release_for_retry(
            job_id,
            t,
            retry_after=timedelta(seconds=30),
            error_code=ExecutionErrorCode.INTERNAL,
            error_message="x",
        ),
    }
    with pytest.raises(PreconditionFailed, match=f"^{op}: job lease not held$"):
        await calls[op]("w1:not-the-token")
    assert dict(await job_row(pool, job_id)) == before
    assert await outbox_keys(pool, job_id) == {}


async def test_operations_on_a_job_that_is_no_longer_running_fail(
    pool: asyncpg.Pool, leases: JobLeases
) -> None:
    job_id, token = await claimed_job(pool, leases)
    await leases.complete(job_id, token)
    with pytest.raises(PreconditionFailed):
        await leases.renew(job_id, token, LEASE)
    with pytest.raises(PreconditionFailed):
        await leases.fail(job_id, token, failure_kind=FailureKind.USER, error_code="x", error_message="x")


async def test_renew_extends_the_lease(pool: asyncpg.Pool, leases: JobLeases) -> None:
    job_id, token = await claimed_job(pool, leases)
    expires = await leases.renew(job_id, token, timedelta(minutes=10))
    assert expires - await _now(pool) > timedelta(minutes=9)
    assert (await job_row(pool, job_id))["lease_expires_at"] == expires


async def test_attach_container_records_the_container(pool: asyncpg.Pool, leases: JobLeases) -> None:
    job_id, token = await claimed_job(pool, leases)
    await leases.attach_container(job_id, token, "abc123")
    assert (await job_row(pool, job_id))["container_id"] == "abc123"


async def test_complete_writes_both_terminal_events_in_the_same_transaction(
    pool: asyncpg.Pool, leases: JobLeases
) -> None:
    job_id, token = await claimed_job(pool, leases)
    settled = await leases.complete(job_id, token)
    row = await job_row(pool, job_id)
    assert row["status_text"] == "COMPLETED" and row["completed_at"] == settled.completed_at
    assert row["lease_token"] is None and row["lease_expires_at"] is None
    assert await outbox_keys(pool, job_id) == {
        f"analytics:job:{job_id}:completed": "analytics",
        f"workflow:job:{job_id}:JOB_COMPLETED": "workflows",
    }
    payload = await pool.fetchval(
        "SELECT payload FROM outbox_events WHERE event_key = $1", f"analytics:job:{job_id}:completed"
    )
    assert payload["event_type"] == "JOBS" and "job_execution_duration" in payload["data"]
    assert payload["data"]["succeeded"] is True


async def test_fail_records_kind_code_and_truncated_message_with_events(
    pool: asyncpg.Pool, leases: JobLeases
) -> None:
    job_id, token = await claimed_job(pool, leases)
    await leases.fail(
        job_id,
        token,
        failure_kind=FailureKind.USER,
        error_code=ExecutionErrorCode.CONTAINER_EXIT_NONZERO,
        error_message="e" * 5000,
    )
    row = await job_row(pool, job_id)
    assert row["status_text"] == "FAILED"
    assert row["failure_kind"] == "USER"
    assert row["last_error_code"] == "container_exit_nonzero"
    assert len(row["last_error_message"]) == MAX_ERROR_MESSAGE_CHARS
    keys = await outbox_keys(pool, job_id)
    assert keys[f"workflow:job:{job_id}:JOB_FAILED"] == "workflows"
    assert keys[f"analytics:job:{job_id}:completed"] == "analytics"
    event = await pool.fetchval(
        "SELECT payload FROM outbox_events WHERE event_key = $1", f"workflow:job:{job_id}:JOB_FAILED"
    )
    assert event["failure_kind"] == "USER" and event["job_id"] == str(job_id)
    jobs_event = await pool.fetchval(
        "SELECT payload FROM outbox_events WHERE event_key = $1", f"analytics:job:{job_id}:completed"
    )
    assert jobs_event["data"]["succeeded"] is False


async def test_cancel_claimed_cancels_without_events(pool: asyncpg.Pool, leases: JobLeases) -> None:
    job_id, token = await claimed_job(pool, leases)
    await leases.cancel_claimed(job_id, token)
    row = await job_row(pool, job_id)
    assert row["status_text"] == "CANCELED" and row["lease_token"] is None
    assert await outbox_keys(pool, job_id) == {}


async def test_release_for_retry_returns_the_job_to_pending_with_backoff(
    pool: asyncpg.Pool, leases: JobLeases
) -> None:
    job_id, token = await claimed_job(pool, leases)
    await leases.attach_container(job_id, token, "c1")
    next_at = await leases.release_for_retry(
        job_id,
        token,
        retry_after=timedelta(seconds=30),
        error_code=ExecutionErrorCode.CONTAINER_RUNTIME_UNAVAILABLE,
        error_message="docker down",
    )
    row = await job_row(pool, job_id)
    assert row["status_text"] == JobStatus.PENDING
    assert row["container_id"] is None and row["started_at"] is None and row["lease_token"] is None
    assert row["failure_kind"] == "SYSTEM" and row["last_error_code"] == "container_runtime_unavailable"
    assert row["next_attempt_at"] == next_at
    assert timedelta(seconds=25) < next_at - await _now(pool) <= timedelta(seconds=30)
    assert row["attempts"] == 1
    assert await outbox_keys(pool, job_id) == {}


async def test_recover_expired_releases_only_expired_leases_with_a_new_token(
    pool: asyncpg.Pool, leases: JobLeases
) -> None:
    expired_id, old_token = await claimed_job(pool, leases)
    live_id, live_token = await claimed_job(pool, leases)
    await pool.execute(
        "UPDATE jobs SET lease_expires_at = lease_expires_at - interval '1 hour', "
        "container_id = 'cX' WHERE id = $1",
        expired_id,
    )
    recovered = await leases.recover_expired(worker_id="rescuer", lease_duration=LEASE, batch_size=1000)
    ours = [r for r in recovered if r.id == expired_id]
    assert len(ours) == 1 and all(r.id != live_id for r in recovered)
    job = ours[0]
    assert job.lease_token.startswith("rescuer:") and job.lease_token != old_token
    assert job.previous_leased_by == "w1" and job.container_id == "cX" and job.attempts == 1
    row = await job_row(pool, expired_id)
    assert row["attempts"] == 1 and row["status_text"] == "RUNNING" and row["leased_by"] == "rescuer"
    with pytest.raises(PreconditionFailed):
        await leases.complete(expired_id, old_token)
    await leases.complete(expired_id, job.lease_token)
    assert (await job_row(pool, live_id))["lease_token"] == live_token


async def test_concurrent_recoverers_never_take_the_same_job(pool: asyncpg.Pool, leases: JobLeases) -> None:
    ids = [(await claimed_job(pool, leases))[0] for _ in range(6)]
    await pool.execute(
        "UPDATE jobs SET lease_expires_at = lease_expires_at - interval '1 hour' WHERE id = ANY($1::uuid[])",
        ids,
    )
    batches = await asyncio.gather(
        *[leases.recover_expired(worker_id=f"r{i}", lease_duration=LEASE, batch_size=3) for i in range(3)]
    )
    taken = [job.id for batch in batches for job in batch if job.id in ids]
    assert len(taken) == len(set(taken))
