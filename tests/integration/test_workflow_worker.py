"""The workflow worker's handler on real PostgreSQL, Redis, chdb and (when available) Docker
(reference §5.1-5.4, §6.4, §8; §12 items 15-17, 30-37, 41).

Workflows are created through the real repository, so each BUILD event is the one the outbox holds;
job outcome events are built the way the jobs repository writes them.  Every test ends by replaying
the events it handled and checking that nothing changed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from redis.asyncio import Redis
from repository_support import pool_fixture  # noqa: F401  (fixtures register by import)

from actors.container_runtime import DockerRuntime, ImageEnsurer
from actors.workflow_worker import Outcome, RemoveByLabel, WorkflowEventHandler
from domain.config import DockerConfig, WorkflowWorkerConfig
from domain.enums import JobStatus, LogStream, WorkflowAction, WorkflowKind
from domain.errors import Conflict, RateLimited
from domain.event_keys import job_terminal_event_key
from domain.ids import uuid7
from domain.workflow_events import image_pull_lock_key, lock_key
from domain.workflow_spec import prepare_create
from ingest.events import WorkflowEvent
from store import jobs, locks, users, workflows
from store.cache import Cache
from store.logstore import LogRow, LogStore, create_log_store
from store.redis import create_redis


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


HEARTBEAT = {"endpoint": "http://127.0.0.1:9/health"}
MISSING_IMAGE = "local/chronoverse-no-such-image:1"


@pytest.fixture
async def redis(stack) -> AsyncIterator[Redis]:  # type: ignore[no-untyped-def]
    client = create_redis(stack.settings.redis)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="module")
def log_store(stack) -> LogStore:  # type: ignore[no-untyped-def]
    return create_log_store(stack.settings.clickhouse)


def worker_config(**overrides: Any) -> WorkflowWorkerConfig:
    return WorkflowWorkerConfig(**{"image_pull_retry_interval": timedelta(milliseconds=50), **overrides})


def make_handler(
    pool: asyncpg.Pool, redis: Redis, log_store: LogStore | None, docker: DockerConfig, **cfg: Any
) -> WorkflowEventHandler:
    runtime = DockerRuntime(docker)
    return WorkflowEventHandler(
        pool, redis, images=ImageEnsurer(runtime, redis, worker_config(**cfg)), logs=log_store,
        containers=RemoveByLabel(runtime), cache=Cache(redis),
    )


@pytest.fixture
def handler(  # type: ignore[no-untyped-def]
    stack, pool: asyncpg.Pool, redis: Redis, log_store: LogStore
) -> WorkflowEventHandler:
    return make_handler(pool, redis, log_store, stack.settings.docker)


async def new_user(pool: asyncpg.Pool) -> UUID:
    user = await users.create(pool, email=f"{uuid7()}@example.com", password_hash="x")
    return user.id


async def new_workflow(
    pool: asyncpg.Pool, user_id: UUID, kind: WorkflowKind = WorkflowKind.HEARTBEAT,
    payload: dict[str, Any] | None = None, interval: int = 5, max_failures: int = 3,
) -> UUID:
    draft = prepare_create(
        name=f"wf-{uuid7()}", payload=payload or HEARTBEAT, kind=kind, interval=interval,
        max_consecutive_job_failures_allowed=max_failures,
    )
    return await workflows.create(
        pool, user_id=user_id, draft=draft, idempotency_key=str(uuid7()), cache=None
    )


async def outbox_event(pool: asyncpg.Pool, workflow_id: UUID, action: WorkflowAction) -> WorkflowEvent:
    payload = await pool.fetchval(
        """SELECT payload::text FROM outbox_events
            WHERE topic = 'workflows' AND kafka_key = $1 AND payload->>'action' = $2
            ORDER BY created_at DESC, id DESC LIMIT 1""",
        str(workflow_id), action.value,
    )
    assert payload is not None, f"no {action} event for {workflow_id}"
    return WorkflowEvent.model_validate_json(payload)


def job_outcome(workflow_id: UUID, user_id: UUID, job_id: UUID, action: WorkflowAction) -> WorkflowEvent:
    return WorkflowEvent(
        event_key=job_terminal_event_key(job_id, action), id=str(workflow_id), user_id=str(user_id),
        action=action, generation=0, job_id=str(job_id),
        error_message="exit 3" if action == WorkflowAction.JOB_FAILED else "",
    )


async def snapshot(pool: asyncpg.Pool, workflow_id: UUID) -> dict[str, Any]:
    """Everything the worker may change, for replay checks."""
    wf = await pool.fetchrow(
        """SELECT build_status::text, generation, consecutive_job_failures_count, terminated_at
             FROM workflows WHERE id = $1""", workflow_id)
    job_rows = await pool.fetch(
        "SELECT id, status::text, scheduled_at FROM jobs WHERE workflow_id = $1 ORDER BY id", workflow_id)
    notes = await pool.fetch(
        "SELECT idempotency_key FROM notifications WHERE payload->>'action_url' LIKE $1 ORDER BY 1",
        f"/workflows/{workflow_id}%")
    events = await pool.fetch(
        "SELECT topic, event_key FROM outbox_events WHERE kafka_key = $1 ORDER BY 1, 2", str(workflow_id))
    return {
        "workflow": dict(wf) if wf else None,
        "jobs": [tuple(r) for r in job_rows],
        "notifications": [r[0] for r in notes],
        "events": [tuple(r) for r in events],
    }


async def pending_jobs(pool: asyncpg.Pool, workflow_id: UUID) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM jobs WHERE workflow_id = $1 AND status = 'PENDING'", workflow_id
    )
    return count


async def notification_titles(pool: asyncpg.Pool, workflow_id: UUID) -> list[str]:
    rows = await pool.fetch(
        """SELECT payload->>'title' AS t, kind FROM notifications
            WHERE payload->>'action_url' LIKE $1 ORDER BY created_at, id""", f"/workflows/{workflow_id}%")
    return [f"{r['t']}/{r['kind']}" for r in rows]


async def assert_replay_changes_nothing(
    handler: WorkflowEventHandler, pool: asyncpg.Pool, workflow_id: UUID, events: list[WorkflowEvent]
) -> None:
    before = await snapshot(pool, workflow_id)
    for event in events:
        await handler.handle(event)
    assert await snapshot(pool, workflow_id) == before


async def test_heartbeat_build_completes_without_starting_and_schedules_the_first_job(
    handler: WorkflowEventHandler, pool: asyncpg.Pool
) -> None:
    user = await new_user(pool)
    wf = await new_workflow(pool, user, interval=7)
    build = await outbox_event(pool, wf, WorkflowAction.BUILD)
    assert build.event_key == f"workflow:{wf}:BUILD:1" and build.generation == 1
    before = _utc_now()

    assert await handler.handle(build) == Outcome.BUILT
    after = _utc_now()

    workflow = await workflows.get_by_id(pool, wf)
    assert workflow.build_status == "COMPLETED"
    (job,) = await pool.fetch(
        'SELECT status::text, "trigger"::text, scheduled_at, idempotency_key FROM jobs'
        " WHERE workflow_id = $1",
        wf,
    )
    assert job["status"] == "PENDING" and job["trigger"] == "AUTOMATIC"
    assert job["idempotency_key"] == f"{build.event_key}:automatic-job"
    # Build time + the interval: "build time" is some moment while the handler ran (however long).
    assert before + timedelta(minutes=7) <= job["scheduled_at"] <= after + timedelta(minutes=7)
    assert await notification_titles(pool, wf) == ["Workflow Build Skipped/WEB_INFO"]
    analytics = await pool.fetchrow(
        "SELECT kafka_key, payload FROM outbox_events WHERE topic = 'analytics' AND event_key = $1",
        f"analytics:workflow:{wf}")
    assert analytics is not None and analytics["payload"]["event_type"] == "WORKFLOWS"
    assert analytics["payload"]["data"] == {"kind": "HEARTBEAT"}

    await assert_replay_changes_nothing(handler, pool, wf, [build])


async def test_a_stale_build_is_acknowledged_with_no_effect(
    handler: WorkflowEventHandler, pool: asyncpg.Pool
) -> None:
    user = await new_user(pool)
    wf = await new_workflow(pool, user)
    build = await outbox_event(pool, wf, WorkflowAction.BUILD)
    await pool.execute("UPDATE workflows SET generation = 2 WHERE id = $1", wf)

    assert await handler.handle(build) == Outcome.IGNORED
    assert (await workflows.get_by_id(pool, wf)).build_status == "QUEUED"
    assert await pool.fetchval("SELECT count(*) FROM jobs WHERE workflow_id = $1", wf) == 0


async def test_a_build_whose_lock_is_held_elsewhere_is_retried(
    handler: WorkflowEventHandler, pool: asyncpg.Pool, redis: Redis
) -> None:
    user = await new_user(pool)
    wf = await new_workflow(pool, user)
    build = await outbox_event(pool, wf, WorkflowAction.BUILD)
    key = lock_key(WorkflowAction.BUILD, str(wf))
    token = await locks.try_acquire(redis, key, timedelta(minutes=1))
    assert token is not None

    with pytest.raises(Conflict) as caught:
        await handler.handle(build)
    assert caught.value.retryable
    assert (await workflows.get_by_id(pool, wf)).build_status == "QUEUED"

    assert await locks.release(redis, key, token)
    assert await handler.handle(build) == Outcome.BUILT
    assert await redis.get(key) is None  # released after the build


async def test_a_build_cancels_queued_then_pending_jobs_and_tells_the_user(
    handler: WorkflowEventHandler, pool: asyncpg.Pool
) -> None:
    user = await new_user(pool)
    wf = await new_workflow(pool, user)
    manual = await jobs.schedule_manual(pool, user_id=user, workflow_id=wf, idempotency_key="run-1")
    build = await outbox_event(pool, wf, WorkflowAction.BUILD)

    await handler.handle(build)

    assert (await jobs.get_by_id(pool, manual)).status == JobStatus.CANCELED
    titles = await notification_titles(pool, wf)
    assert "Job Canceled/WEB_INFO" in titles and "Workflow Build Skipped/WEB_INFO" in titles
    await assert_replay_changes_nothing(handler, pool, wf, [build])


async def test_a_build_of_a_terminated_workflow_is_dropped(
    handler: WorkflowEventHandler, pool: asyncpg.Pool
) -> None:
    user = await new_user(pool)
    wf = await new_workflow(pool, user)
    build = await outbox_event(pool, wf, WorkflowAction.BUILD)
    await workflows.terminate(pool, user_id=user, workflow_id=wf, cache=None)

    assert await handler.handle(build) == Outcome.TERMINATED_WORKFLOW
    assert (await workflows.get_by_id(pool, wf)).build_status == "QUEUED"


async def test_container_build_with_an_unreachable_engine_stays_started_and_is_retried(
    pool: asyncpg.Pool, redis: Redis, log_store: LogStore, tmp_path: Any
) -> None:
    handler = make_handler(pool, redis, log_store, DockerConfig(host=f"unix://{tmp_path}/no-docker.sock"))
    user = await new_user(pool)
    wf = await new_workflow(pool, user, WorkflowKind.CONTAINER, {"image": "local/busybox:1"})
    build = await outbox_event(pool, wf, WorkflowAction.BUILD)

    with pytest.raises(Exception) as caught:
        await handler.handle(build)
    assert getattr(caught.value, "retryable", True)
    assert (await workflows.get_by_id(pool, wf)).build_status == "STARTED"
    assert await notification_titles(pool, wf) == ["Workflow Build Started/WEB_INFO"]


async def test_container_build_with_an_offline_image_completes(
    stack, handler: WorkflowEventHandler, pool: asyncpg.Pool, redis: Redis  # type: ignore[no-untyped-def]
) -> None:
    image = stack.busybox_image()  # skips (with the reason) when no Docker engine is available
    user = await new_user(pool)
    wf = await new_workflow(pool, user, WorkflowKind.CONTAINER, {"image": image})
    build = await outbox_event(pool, wf, WorkflowAction.BUILD)
    # Present images need no lock: even a held herd lock does not delay the build.
    held = await locks.try_acquire(
        redis, image_pull_lock_key(stack.settings.docker.host, image), timedelta(minutes=1)
    )
    assert held is not None

    assert await handler.handle(build) == Outcome.BUILT

    assert (await workflows.get_by_id(pool, wf)).build_status == "COMPLETED"
    assert await notification_titles(pool, wf) == [
        "Workflow Build Started/WEB_INFO", "Workflow Build Completed/WEB_SUCCESS"
    ]
    assert await pending_jobs(pool, wf) == 1
    await assert_replay_changes_nothing(handler, pool, wf, [build])


async def test_container_build_fails_when_the_image_cannot_be_pulled(
    stack, handler: WorkflowEventHandler, pool: asyncpg.Pool  # type: ignore[no-untyped-def]
) -> None:
    stack.busybox_image()
    user = await new_user(pool)
    wf = await new_workflow(pool, user, WorkflowKind.CONTAINER, {"image": MISSING_IMAGE})
    build = await outbox_event(pool, wf, WorkflowAction.BUILD)

    assert await handler.handle(build) == Outcome.BUILD_FAILED

    assert (await workflows.get_by_id(pool, wf)).build_status == "FAILED"
    assert await notification_titles(pool, wf) == [
        "Workflow Build Started/WEB_INFO", "Workflow Build Failed/WEB_ALERT"
    ]
    assert await pool.fetchval("SELECT count(*) FROM jobs WHERE workflow_id = $1", wf) == 0
    await assert_replay_changes_nothing(handler, pool, wf, [build])


async def test_image_pull_waiter_gives_up_with_a_retryable_error_and_never_pulls_concurrently(
    stack, pool: asyncpg.Pool, redis: Redis  # type: ignore[no-untyped-def]
) -> None:
    stack.busybox_image()
    runtime = DockerRuntime(stack.settings.docker)
    key = image_pull_lock_key(runtime.docker_host, MISSING_IMAGE)
    token = await locks.try_acquire(redis, key, timedelta(minutes=1))  # another worker is pulling
    assert token is not None
    ensurer = ImageEnsurer(runtime, redis, worker_config(image_pull_wait_timeout=timedelta(milliseconds=600)))
    try:
        with pytest.raises(RateLimited) as caught:
            await ensurer.ensure(MISSING_IMAGE)
        assert caught.value.retryable
        assert await redis.get(key) == token  # the holder's lock is untouched
    finally:
        await locks.release(redis, key, token)
        runtime.close()


async def test_reschedule_schedules_an_automatic_job_at_now_plus_interval(
    handler: WorkflowEventHandler, pool: asyncpg.Pool
) -> None:
    user = await new_user(pool)
    wf = await new_workflow(pool, user, interval=5)
    await handler.handle(await outbox_event(pool, wf, WorkflowAction.BUILD))
    await pool.execute("UPDATE jobs SET status = 'CANCELED' WHERE workflow_id = $1", wf)
    await pool.execute("UPDATE workflows SET generation = 2 WHERE id = $1", wf)
    reschedule = WorkflowEvent(event_key=f"workflow:{wf}:RESCHEDULE:2", id=str(wf), user_id=str(user),
                               action=WorkflowAction.RESCHEDULE, generation=2)

    assert await handler.handle(reschedule) == Outcome.SCHEDULED

    pending = await pool.fetch(
        "SELECT idempotency_key FROM jobs WHERE workflow_id = $1 AND status = 'PENDING'", wf)
    assert [r[0] for r in pending] == [f"workflow:{wf}:RESCHEDULE:2:automatic-job"]
    stale = reschedule.model_copy(update={"generation": 1, "event_key": f"workflow:{wf}:RESCHEDULE:1"})
    assert await handler.handle(stale) == Outcome.IGNORED
    await assert_replay_changes_nothing(handler, pool, wf, [reschedule])


async def test_terminate_cancels_running_pending_and_queued_jobs(
    handler: WorkflowEventHandler, pool: asyncpg.Pool
) -> None:
    user = await new_user(pool)
    wf = await new_workflow(pool, user)
    build = await outbox_event(pool, wf, WorkflowAction.BUILD)
    await handler.handle(build)
    first = await pool.fetchval("SELECT id FROM jobs WHERE workflow_id = $1", wf)
    await pool.execute("UPDATE jobs SET status = 'RUNNING' WHERE id = $1", first)
    queued = await jobs.schedule_manual(pool, user_id=user, workflow_id=wf, idempotency_key="q")
    await pool.execute("UPDATE jobs SET status = 'QUEUED' WHERE id = $1", queued)
    pending = await jobs.schedule_manual(pool, user_id=user, workflow_id=wf, idempotency_key="p")
    await workflows.terminate(pool, user_id=user, workflow_id=wf, cache=None)
    terminate = await outbox_event(pool, wf, WorkflowAction.TERMINATE)

    assert await handler.handle(terminate) == Outcome.TERMINATED

    for job_id in (first, queued, pending):
        assert (await jobs.get_by_id(pool, job_id)).status == JobStatus.CANCELED
    titles = await notification_titles(pool, wf)
    assert titles.count("Job Canceled/WEB_INFO") == 3
    assert titles[-1] == "Workflow Terminated/WEB_INFO"
    await assert_replay_changes_nothing(handler, pool, wf, [build, terminate])


async def test_consecutive_failures_terminate_the_workflow_once(
    handler: WorkflowEventHandler, pool: asyncpg.Pool
) -> None:
    user = await new_user(pool)
    wf = await new_workflow(pool, user, max_failures=3)
    build = await outbox_event(pool, wf, WorkflowAction.BUILD)
    await handler.handle(build)
    failed = [job_outcome(wf, user, uuid7(), WorkflowAction.JOB_FAILED) for _ in range(3)]

    assert await handler.handle(failed[0]) == Outcome.FAILURE_COUNTED
    assert await handler.handle(failed[0]) == Outcome.FAILURE_COUNTED  # replay: not counted twice
    assert (await workflows.get_by_id(pool, wf)).consecutive_job_failures_count == 1
    completed = job_outcome(wf, user, uuid7(), WorkflowAction.JOB_COMPLETED)
    assert await handler.handle(completed) == Outcome.FAILURES_RESET
    assert (await workflows.get_by_id(pool, wf)).consecutive_job_failures_count == 0

    await handler.handle(failed[1])
    await handler.handle(failed[2])
    third = job_outcome(wf, user, uuid7(), WorkflowAction.JOB_FAILED)
    assert await handler.handle(third) == Outcome.AUTO_TERMINATED

    workflow = await workflows.get_by_id(pool, wf)
    assert workflow.terminated and workflow.consecutive_job_failures_count == 3
    titles = await notification_titles(pool, wf)
    assert titles.count("Workflow Terminated/WEB_ALERT") == 1
    assert titles.count("Job Execution Failed/WEB_ERROR") == 4  # one per failed job
    assert "Job Execution Completed/WEB_SUCCESS" in titles
    terminate = await outbox_event(pool, wf, WorkflowAction.TERMINATE)
    assert await handler.handle(terminate) == Outcome.TERMINATED
    assert await pending_jobs(pool, wf) == 0
    await assert_replay_changes_nothing(handler, pool, wf, [build, *failed, completed, third, terminate])


async def test_a_batch_of_completions_resets_counters_and_notifies_once_per_job(
    handler: WorkflowEventHandler, pool: asyncpg.Pool
) -> None:
    user = await new_user(pool)
    failing, healthy = await new_workflow(pool, user, max_failures=3), await new_workflow(pool, user)
    for wf in (failing, healthy):
        await handler.handle(await outbox_event(pool, wf, WorkflowAction.BUILD))
    await handler.handle(job_outcome(failing, user, uuid7(), WorkflowAction.JOB_FAILED))
    gone = uuid7()
    batch = [
        job_outcome(failing, user, uuid7(), WorkflowAction.JOB_COMPLETED),
        job_outcome(healthy, user, uuid7(), WorkflowAction.JOB_COMPLETED),
        job_outcome(gone, user, uuid7(), WorkflowAction.JOB_COMPLETED),  # a deleted workflow
        job_outcome(healthy, user, uuid7(), WorkflowAction.JOB_COMPLETED),
        job_outcome(healthy, user, uuid7(), WorkflowAction.JOB_FAILED),  # ends the run of completions
    ]
    expected = [Outcome.FAILURES_RESET, Outcome.FAILURES_RESET, Outcome.IGNORED, Outcome.FAILURES_RESET,
                Outcome.FAILURE_COUNTED]
    assert await handler.handle_many(batch) == expected
    assert (await workflows.get_by_id(pool, failing)).consecutive_job_failures_count == 0
    assert (await workflows.get_by_id(pool, healthy)).consecutive_job_failures_count == 1
    completed = "Job Execution Completed/WEB_SUCCESS"
    assert (await notification_titles(pool, failing)).count(completed) == 1
    assert (await notification_titles(pool, healthy)).count(completed) == 2
    # A replay of the batch notifies nobody twice.
    await handler.handle_many(batch)
    assert (await notification_titles(pool, healthy)).count(completed) == 2
    assert (await notification_titles(pool, failing)).count(completed) == 1


async def test_job_outcomes_of_a_deleted_workflow_are_ignored(
    handler: WorkflowEventHandler, pool: asyncpg.Pool
) -> None:
    user = await new_user(pool)
    gone = uuid7()
    for action in (WorkflowAction.JOB_FAILED, WorkflowAction.JOB_COMPLETED):
        assert await handler.handle(job_outcome(gone, user, uuid7(), action)) == Outcome.IGNORED


async def test_delete_removes_the_workflows_logs(
    handler: WorkflowEventHandler, pool: asyncpg.Pool, log_store: LogStore
) -> None:
    user = await new_user(pool)
    wf = await new_workflow(pool, user)
    job = uuid7()
    await log_store.ensure_schema()
    await log_store.insert([
        LogRow(event_id=f"log:{job}:stdout:{i}", user_id=user, workflow_id=wf, job_id=job,
               timestamp=_utc_now(), message=f"line {i}", sequence_num=i, stream=LogStream.STDOUT)
        for i in range(3)
    ])
    assert await log_store.count(user, wf, job) == 3
    await workflows.terminate(pool, user_id=user, workflow_id=wf, cache=None)
    await workflows.delete(pool, user_id=user, workflow_id=wf, cache=None)
    delete = await outbox_event(pool, wf, WorkflowAction.DELETE)
    assert delete.generation == 0

    assert await handler.handle(delete) == Outcome.DELETED
    assert await log_store.count(user, wf, job) == 0
    assert await handler.handle(delete) == Outcome.DELETED  # replay is harmless


async def test_two_workers_building_one_workflow_serialize_on_the_lock(
    handler: WorkflowEventHandler, pool: asyncpg.Pool
) -> None:
    user = await new_user(pool)
    wf = await new_workflow(pool, user)
    build = await outbox_event(pool, wf, WorkflowAction.BUILD)

    results = await asyncio.gather(handler.handle(build), handler.handle(build), return_exceptions=True)

    assert Outcome.BUILT in results
    others = [r for r in results if r != Outcome.BUILT]
    assert all(isinstance(r, Conflict) or r in (Outcome.SCHEDULED, Outcome.BUILT) for r in others)
    assert await pool.fetchval("SELECT count(*) FROM jobs WHERE workflow_id = $1", wf) == 1
