"""The scheduler on a real PostgreSQL (reference §5.3, §12 items 18-20; SPEC §5.2-5.3).

Rows are inserted with plain SQL so every state the rules talk about (build status, termination,
QUEUED/RUNNING siblings, ``next_attempt_at``, stale QUEUED) can be set up directly.  Each test gets
its own database, so passes never see another test's jobs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from uuid import UUID

import asyncpg
import pytest
from repository_support import MigratedDatabase

from actors.scheduler import Scheduler, SchedulerStats
from domain.config import SchedulingWorkerConfig
from domain.enums import JobStatus, WorkflowBuildStatus
from domain.ids import uuid7
from ingest.events import ScheduledJobEntry
from store import scheduling

NOW_SQL = "(now() AT TIME ZONE 'utc')"


@pytest.fixture
def pool(isolated_database: MigratedDatabase) -> asyncpg.Pool:
    return isolated_database.pool


async def add_user(pool: asyncpg.Pool) -> UUID:
    user_id = uuid7()
    await pool.execute(
        "INSERT INTO users (id, email, password) VALUES ($1, $2, 'x')", user_id, f"{user_id}@example.com"
    )
    return user_id


async def add_workflow(
    pool: asyncpg.Pool,
    user_id: UUID,
    *,
    status: WorkflowBuildStatus = WorkflowBuildStatus.COMPLETED,
    terminated: bool = False,
    generation: int = 1,
) -> UUID:
    workflow_id = uuid7()
    await pool.execute(
        f"""INSERT INTO workflows (id, user_id, name, payload, kind, build_status, "interval", generation,
                                   terminated_at)
            VALUES ($1, $2, 'wf', '{{"endpoint": "http://x"}}'::jsonb, 'HEARTBEAT', $3::workflow_build_status,
                    1, $4, CASE WHEN $5 THEN {NOW_SQL} END)""",
        workflow_id, user_id, status.value, generation, terminated,
    )
    return workflow_id


async def add_job(
    pool: asyncpg.Pool,
    workflow_id: UUID,
    user_id: UUID,
    *,
    due_in_s: float = -1.0,
    status: JobStatus = JobStatus.PENDING,
    next_attempt_in_s: float | None = None,
    queued_ago_s: float | None = None,
    dispatch_attempts: int = 0,
) -> UUID:
    job_id = uuid7()
    await pool.execute(
        f"""INSERT INTO jobs (id, workflow_id, user_id, status, "trigger", scheduled_at, next_attempt_at,
                              queued_at, dispatch_attempts)
            VALUES ($1, $2, $3, $4::job_status, 'MANUAL', {NOW_SQL} + make_interval(secs => $5),
                    CASE WHEN $6::float8 IS NULL THEN NULL ELSE {NOW_SQL} + make_interval(secs => $6) END,
                    CASE WHEN $7::float8 IS NULL THEN NULL ELSE {NOW_SQL} - make_interval(secs => $7) END,
                    $8)""",
        job_id, workflow_id, user_id, status.value, due_in_s, next_attempt_in_s, queued_ago_s,
        dispatch_attempts,
    )
    return job_id


async def job_row(pool: asyncpg.Pool, job_id: UUID) -> asyncpg.Record:
    row = await pool.fetchrow(
        "SELECT status::text AS status, dispatch_attempts, queued_at FROM jobs WHERE id = $1", job_id
    )
    assert row is not None
    return row


async def dispatch_events(pool: asyncpg.Pool, job_id: UUID) -> list[asyncpg.Record]:
    return list(
        await pool.fetch(
            """SELECT topic, kafka_key, event_key, payload::text AS payload FROM outbox_events
                WHERE topic = 'jobs' AND payload->>'job_id' = $1 ORDER BY created_at, id""",
            str(job_id),
        )
    )


async def test_due_job_is_queued_with_its_dispatch_event_in_one_step(pool: asyncpg.Pool) -> None:
    user = await add_user(pool)
    workflow = await add_workflow(pool, user, generation=3)
    job = await add_job(pool, workflow, user)

    dispatched = await scheduling.dispatch_due(pool, batch_size=100)

    assert [d.id for d in dispatched] == [job]
    row = await job_row(pool, job)
    assert row["status"] == "QUEUED" and row["dispatch_attempts"] == 1 and row["queued_at"] is not None
    (event,) = await dispatch_events(pool, job)
    assert event["topic"] == "jobs"
    assert event["kafka_key"] == str(workflow)
    assert event["event_key"] == f"job:{job}:dispatch:1"
    entry = ScheduledJobEntry.model_validate_json(event["payload"])
    assert entry.job_id == str(job) and entry.workflow_id == str(workflow)
    assert entry.dispatch_attempt == 1
    assert entry.workflow_generation == 3
    assert dispatched[0].latency >= timedelta(0)


@pytest.mark.parametrize(
    ("status", "terminated"),
    [
        (WorkflowBuildStatus.QUEUED, False),
        (WorkflowBuildStatus.STARTED, False),
        (WorkflowBuildStatus.FAILED, False),
        (WorkflowBuildStatus.COMPLETED, True),
    ],
)
async def test_only_completed_active_workflows_are_scheduled(
    pool: asyncpg.Pool, status: WorkflowBuildStatus, terminated: bool
) -> None:
    user = await add_user(pool)
    workflow = await add_workflow(pool, user, status=status, terminated=terminated)
    job = await add_job(pool, workflow, user)

    assert await scheduling.dispatch_due(pool, batch_size=100) == []
    assert (await job_row(pool, job))["status"] == "PENDING"
    assert await dispatch_events(pool, job) == []


@pytest.mark.parametrize("active", [JobStatus.QUEUED, JobStatus.RUNNING])
async def test_no_second_job_while_one_is_queued_or_running(pool: asyncpg.Pool, active: JobStatus) -> None:
    user = await add_user(pool)
    workflow = await add_workflow(pool, user)
    await add_job(pool, workflow, user, due_in_s=-10, status=active, dispatch_attempts=1, queued_ago_s=1)
    waiting = await add_job(pool, workflow, user, due_in_s=-5)

    assert await scheduling.dispatch_due(pool, batch_size=100) == []
    assert (await job_row(pool, waiting))["status"] == "PENDING"


async def test_next_attempt_at_is_respected_and_holds_back_later_jobs(pool: asyncpg.Pool) -> None:
    user = await add_user(pool)
    workflow = await add_workflow(pool, user)
    retrying = await add_job(pool, workflow, user, due_in_s=-10, next_attempt_in_s=30)
    later = await add_job(pool, workflow, user, due_in_s=-5)

    assert await scheduling.dispatch_due(pool, batch_size=100) == []

    await pool.execute(
        f"UPDATE jobs SET next_attempt_at = {NOW_SQL} - interval '1 second' WHERE id = $1", retrying
    )
    assert [d.id for d in await scheduling.dispatch_due(pool, batch_size=100)] == [retrying]
    assert (await job_row(pool, later))["status"] == "PENDING"


async def test_future_jobs_wait_for_their_time(pool: asyncpg.Pool) -> None:
    user = await add_user(pool)
    workflow = await add_workflow(pool, user)
    job = await add_job(pool, workflow, user, due_in_s=60)

    assert await scheduling.dispatch_due(pool, batch_size=100) == []
    wake = await scheduling.next_wake(pool, redispatch_timeout=timedelta(minutes=2))
    delay = wake.delay()
    assert delay is not None and 55 < delay <= 60
    assert (await job_row(pool, job))["status"] == "PENDING"


async def test_jobs_of_a_workflow_run_in_schedule_order_one_at_a_time(pool: asyncpg.Pool) -> None:
    user = await add_user(pool)
    workflow = await add_workflow(pool, user)
    # Inserted out of order: the earliest scheduled_at goes first, whatever the insertion order.
    second = await add_job(pool, workflow, user, due_in_s=-5)
    first = await add_job(pool, workflow, user, due_in_s=-20)
    third = await add_job(pool, workflow, user, due_in_s=-1)

    order = []
    for _ in range(3):
        (dispatched,) = await scheduling.dispatch_due(pool, batch_size=100)
        order.append(dispatched.id)
        assert await scheduling.dispatch_due(pool, batch_size=100) == []  # blocked while QUEUED
        await pool.execute("UPDATE jobs SET status = 'COMPLETED' WHERE id = $1", dispatched.id)
    assert order == [first, second, third]


async def test_one_job_per_workflow_per_pass_across_many_workflows(pool: asyncpg.Pool) -> None:
    user = await add_user(pool)
    workflows = [await add_workflow(pool, user) for _ in range(5)]
    for workflow in workflows:
        for offset in (-3, -2, -1):
            await add_job(pool, workflow, user, due_in_s=offset)

    dispatched = await scheduling.dispatch_due(pool, batch_size=100)

    assert sorted(d.workflow_id for d in dispatched) == sorted(workflows)


async def test_batch_size_limits_a_dispatch(pool: asyncpg.Pool) -> None:
    user = await add_user(pool)
    for _ in range(5):
        await add_job(pool, await add_workflow(pool, user), user)

    assert len(await scheduling.dispatch_due(pool, batch_size=2)) == 2
    assert len(await scheduling.dispatch_due(pool, batch_size=10)) == 3


async def test_concurrent_scheduler_replicas_never_dispatch_twice(pool: asyncpg.Pool) -> None:
    user = await add_user(pool)
    workflows = [await add_workflow(pool, user) for _ in range(30)]
    for workflow in workflows:
        for offset in (-2, -1):
            await add_job(pool, workflow, user, due_in_s=offset)

    results = await asyncio.gather(*(scheduling.dispatch_due(pool, batch_size=7) for _ in range(6)))
    dispatched = [job for batch in results for job in batch]
    while more := await scheduling.dispatch_due(pool, batch_size=100):
        dispatched.extend(more)

    assert len({d.id for d in dispatched}) == len(dispatched) == 30
    assert sorted(d.workflow_id for d in dispatched) == sorted(workflows)
    per_workflow = await pool.fetch(
        "SELECT workflow_id, count(*) FILTER (WHERE status = 'QUEUED') AS queued"
        " FROM jobs GROUP BY workflow_id"
    )
    assert all(r["queued"] == 1 for r in per_workflow)
    assert await pool.fetchval("SELECT count(*) FROM outbox_events WHERE topic = 'jobs'") == 30


async def test_stale_queued_job_is_redispatched_with_the_next_attempt(pool: asyncpg.Pool) -> None:
    user = await add_user(pool)
    workflow = await add_workflow(pool, user)
    queued = JobStatus.QUEUED
    stale = await add_job(pool, workflow, user, status=queued, dispatch_attempts=1, queued_ago_s=180)
    fresh_wf = await add_workflow(pool, user)
    fresh = await add_job(pool, fresh_wf, user, status=queued, dispatch_attempts=1, queued_ago_s=5)

    redispatched = await scheduling.redispatch_stale(pool, batch_size=100, stale_after=timedelta(minutes=2))

    assert [d.id for d in redispatched] == [stale]
    row = await job_row(pool, stale)
    assert row["status"] == "QUEUED" and row["dispatch_attempts"] == 2
    (event,) = await dispatch_events(pool, stale)
    assert event["event_key"] == f"job:{stale}:dispatch:2"
    assert json.loads(event["payload"])["dispatch_attempt"] == 2
    assert (await job_row(pool, fresh))["dispatch_attempts"] == 1
    # Redispatching again right away does nothing: queued_at moved forward.
    assert await scheduling.redispatch_stale(pool, batch_size=100, stale_after=timedelta(minutes=2)) == []


async def test_next_wake_includes_when_a_queued_job_goes_stale(pool: asyncpg.Pool) -> None:
    user = await add_user(pool)
    workflow = await add_workflow(pool, user)
    await add_job(pool, workflow, user, status=JobStatus.QUEUED, dispatch_attempts=1, queued_ago_s=100)

    wake = await scheduling.next_wake(pool, redispatch_timeout=timedelta(seconds=120))

    delay = wake.delay()
    assert delay is not None and 15 < delay <= 20


async def test_nothing_to_do_means_no_wake_time(pool: asyncpg.Pool) -> None:
    wake = await scheduling.next_wake(pool, redispatch_timeout=timedelta(seconds=120))
    assert wake.wake_at is None and wake.delay() is None


async def _wait_status(pool: asyncpg.Pool, job_id: UUID, status: str, within_s: float) -> datetime:
    deadline = asyncio.get_running_loop().time() + within_s
    while asyncio.get_running_loop().time() < deadline:
        row = await job_row(pool, job_id)
        if row["status"] == status:
            return row["queued_at"]  # type: ignore[no-any-return]
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} not {status} within {within_s}s")


async def _until(
    scheduler: Scheduler, condition: Callable[[SchedulerStats], bool], what: str
) -> SchedulerStats:
    """Wait (generously: the machine may be loaded) until the scheduler's stats satisfy ``condition``."""
    deadline = asyncio.get_running_loop().time() + 30
    while not condition(stats := scheduler.stats()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {stats}")
        await asyncio.sleep(0.05)
    return stats


async def _listening_after_a_pass(scheduler: Scheduler) -> SchedulerStats:
    """Wait until the listener is connected (its connect notification counted) and a pass has ended,
    so the scheduler is asleep on the long poll unless something wakes it."""
    return await _until(scheduler, lambda s: s.listening and s.wakeups >= 1 and s.passes >= 1
                        and s.next_wake_in_s is not None, "the listener to connect after a pass")


async def test_notify_wakes_the_scheduler_long_before_the_safety_net_poll(
    isolated_database: MigratedDatabase,
) -> None:
    cfg, pool = isolated_database.config, isolated_database.pool
    poll = 60.0
    scheduler = Scheduler(
        SchedulingWorkerConfig(poll_interval=timedelta(seconds=poll)), pool, listen=cfg, name="test-scheduler"
    )
    scheduler.start()
    try:
        before = await _listening_after_a_pass(scheduler)
        user = await add_user(pool)
        workflow = await add_workflow(pool, user)

        now_job = await add_job(pool, workflow, user, due_in_s=0)
        await _wait_status(pool, now_job, "QUEUED", within_s=poll / 2)
        # The insert's NOTIFY reaches it (the job may also have been taken by a pass still under way).
        await _until(scheduler, lambda s: s.wakeups > before.wakeups, "the insert's notification")

        # A job due in 1.5 s, inserted while the scheduler sleeps: queued after it is due, not before.
        await pool.execute("UPDATE jobs SET status = 'COMPLETED' WHERE id = $1", now_job)
        soon = await add_job(pool, workflow, user, due_in_s=1.5)
        queued_at = await _wait_status(pool, soon, "QUEUED", within_s=poll / 2)
        scheduled_at = await pool.fetchval("SELECT scheduled_at FROM jobs WHERE id = $1", soon)
        assert queued_at >= scheduled_at
        assert scheduler.stats().dispatched == 2
    finally:
        await scheduler.stop()


async def test_a_pass_reports_dispatch_latency(pool: asyncpg.Pool) -> None:
    user = await add_user(pool)
    workflow = await add_workflow(pool, user)
    await add_job(pool, workflow, user, due_in_s=-2)
    scheduler = Scheduler(SchedulingWorkerConfig(), pool)

    result = await scheduler.run_pass()

    assert result.dispatched == 1
    (latency,) = result.latencies_s
    assert 1.5 < latency < 30


async def test_the_scheduler_listens_again_after_its_connection_is_killed(
    isolated_database: MigratedDatabase,
) -> None:
    cfg, pool = isolated_database.config, isolated_database.pool
    scheduler = Scheduler(
        SchedulingWorkerConfig(poll_interval=timedelta(seconds=60)), pool, listen=cfg, name="reconnecting"
    )
    scheduler.start()
    try:
        await _until(scheduler, lambda s: s.listening, "the listener to connect")
        killed = await pool.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
            "reconnecting-listen",
        )
        assert killed == 1
        # Reconnects after ~1 s; the reconnect's own notification runs a pass, then it sleeps.
        await _until(scheduler, lambda s: s.listening and s.listener_reconnects >= 1,
                     "the listener to reconnect")
        assert scheduler.stats().listener_reconnects == 1
        await _listening_after_a_pass(scheduler)

        user = await add_user(pool)
        job = await add_job(pool, await add_workflow(pool, user), user, due_in_s=0)
        await _wait_status(pool, job, "QUEUED", within_s=30)
    finally:
        await scheduler.stop()
