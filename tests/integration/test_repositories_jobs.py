"""The jobs repository on real PostgreSQL: manual scheduling with ownership (checklist 60, SPEC §5.4),
generation-guarded AUTOMATIC slots (24, 36), lists and reads scoped by user, cancellation, admin
status updates, and the scheduler wake-up NOTIFY."""

from __future__ import annotations

import asyncio
from datetime import UTC, timedelta
from uuid import UUID

import asyncpg
import pytest
from repository_support import (  # noqa: F401  (fixtures register by import)
    cache_fixture,
    new_user,
    new_workflow,
    pool_fixture,
    redis_fixture,
)

from domain.enums import JobStatus, JobTrigger
from domain.errors import Invalid, NotFound, PreconditionFailed
from domain.event_keys import automatic_job_key
from domain.filters import JobFilters
from domain.ids import uuid7
from domain.models import User, Workflow
from domain.schedule import next_run_at
from store import jobs, workflows
from store.cache import Cache


@pytest.fixture
async def alice(pool: asyncpg.Pool) -> User:
    return await new_user(pool)


@pytest.fixture
async def bob(pool: asyncpg.Pool) -> User:
    return await new_user(pool)


@pytest.fixture
async def workflow(pool: asyncpg.Pool, alice: User) -> Workflow:
    return await new_workflow(pool, alice, built=True)


async def schedule_slot(
    pool: asyncpg.Pool, workflow: Workflow, minutes: int, generation: int = 1
) -> UUID | None:
    slot = workflow.created_at + timedelta(minutes=minutes)
    return await jobs.schedule_automatic(
        pool,
        workflow_id=workflow.id,
        user_id=workflow.user_id,
        scheduled_at=slot,
        idempotency_key=automatic_job_key(workflow.id, slot),
        workflow_generation=generation,
    )


# -- manual ---------------------------------------------------------------------------------------


async def test_manual_job_is_pending_now_and_the_same_key_returns_the_same_id(
    pool: asyncpg.Pool, alice: User, workflow: Workflow
) -> None:
    first = await jobs.schedule_manual(
        pool, user_id=alice.id, workflow_id=workflow.id, idempotency_key="run-1"
    )
    again = await jobs.schedule_manual(
        pool, user_id=alice.id, workflow_id=workflow.id, idempotency_key="run-1"
    )
    other = await jobs.schedule_manual(
        pool, user_id=alice.id, workflow_id=workflow.id, idempotency_key="run-2"
    )
    assert first == again != other
    job = await jobs.get(pool, alice.id, workflow.id, first)
    assert (job.status, job.trigger, job.idempotency_key) == (JobStatus.PENDING, JobTrigger.MANUAL, "run-1")
    assert abs(job.scheduled_at - job.created_at) < timedelta(seconds=1)
    assert await pool.fetchval("SELECT count(*) FROM jobs WHERE workflow_id = $1", workflow.id) == 2


async def test_manual_schedule_checks_ownership(pool: asyncpg.Pool, bob: User, workflow: Workflow) -> None:
    with pytest.raises(NotFound):
        await jobs.schedule_manual(pool, user_id=bob.id, workflow_id=workflow.id, idempotency_key="x")
    with pytest.raises(NotFound):
        await jobs.schedule_manual(pool, user_id=bob.id, workflow_id=uuid7(), idempotency_key="x")
    assert await pool.fetchval("SELECT count(*) FROM jobs WHERE workflow_id = $1", workflow.id) == 0


async def test_manual_schedule_of_a_terminated_workflow_is_refused_but_replays_still_answer(
    pool: asyncpg.Pool, alice: User, workflow: Workflow, cache: Cache
) -> None:
    earlier = await jobs.schedule_manual(pool, user_id=alice.id, workflow_id=workflow.id, idempotency_key="k")
    await workflows.terminate(pool, user_id=alice.id, workflow_id=workflow.id, cache=cache)
    with pytest.raises(PreconditionFailed, match="terminated"):
        await jobs.schedule_manual(pool, user_id=alice.id, workflow_id=workflow.id, idempotency_key="new")
    assert (
        await jobs.schedule_manual(pool, user_id=alice.id, workflow_id=workflow.id, idempotency_key="k")
        == earlier
    )


async def test_manual_schedule_requires_a_key(pool: asyncpg.Pool, alice: User, workflow: Workflow) -> None:
    with pytest.raises(Invalid, match="idempotency key is required"):
        await jobs.schedule_manual(pool, user_id=alice.id, workflow_id=workflow.id, idempotency_key="")


# -- automatic --------------------------------------------------------------------------------------


async def test_automatic_slot_is_inserted_once(pool: asyncpg.Pool, workflow: Workflow) -> None:
    first = await schedule_slot(pool, workflow, 5)
    again = await schedule_slot(pool, workflow, 5)
    assert first is not None and again == first
    job = await jobs.get_by_id(pool, first)
    assert (job.trigger, job.status) == (JobTrigger.AUTOMATIC, JobStatus.PENDING)
    assert job.scheduled_at == workflow.created_at + timedelta(minutes=5)
    following = await jobs.schedule_automatic(
        pool,
        workflow_id=workflow.id,
        user_id=workflow.user_id,
        scheduled_at=next_run_at(job.scheduled_at, workflow.interval),
        idempotency_key="next",
        workflow_generation=1,
    )
    assert following not in (None, first)


async def test_automatic_slot_is_guarded_by_generation_and_state(
    pool: asyncpg.Pool, alice: User, cache: Cache
) -> None:
    queued = await new_workflow(pool, alice)  # build not COMPLETED yet
    assert await schedule_slot(pool, queued, 5) is None
    built = await new_workflow(pool, alice, built=True)
    assert await schedule_slot(pool, built, 5, generation=2) is None  # stale generation
    assert await schedule_slot(pool, built, 6, generation=0) is not None  # 0 = no guard
    await workflows.terminate(pool, user_id=alice.id, workflow_id=built.id, cache=cache)
    assert await schedule_slot(pool, built, 7) is None
    wrong_owner = await jobs.schedule_automatic(
        pool,
        workflow_id=built.id,
        user_id=uuid7(),
        scheduled_at=built.created_at,
        idempotency_key="x",
        workflow_generation=0,
    )
    assert wrong_owner is None


async def test_new_pending_jobs_wake_the_scheduler(
    pool: asyncpg.Pool, alice: User, workflow: Workflow
) -> None:
    received: asyncio.Queue[str] = asyncio.Queue()

    def on_notify(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        received.put_nowait(payload)

    async with pool.acquire() as listener:
        await listener.add_listener("chronoverse_jobs", on_notify)
        try:
            job_id = await jobs.schedule_manual(
                pool, user_id=alice.id, workflow_id=workflow.id, idempotency_key="wake"
            )
            payload = await asyncio.wait_for(received.get(), timeout=10)
            scheduled = (await jobs.get_by_id(pool, job_id)).scheduled_at.replace(tzinfo=UTC)
            assert abs(int(payload) - scheduled.timestamp() * 1000) <= 1  # the job's due time, unix ms
        finally:
            await listener.remove_listener("chronoverse_jobs", on_notify)


# -- reads ----------------------------------------------------------------------------------------


async def test_list_pages_newest_first_with_filters(
    pool: asyncpg.Pool, alice: User, workflow: Workflow
) -> None:
    manual = [
        await jobs.schedule_manual(pool, user_id=alice.id, workflow_id=workflow.id, idempotency_key=f"m{i}")
        for i in range(12)
    ]
    automatic = await schedule_slot(pool, workflow, 5)
    assert automatic is not None
    await jobs.update_status(pool, manual[0], JobStatus.CANCELED)

    first = await jobs.list_jobs(pool, alice.id, workflow.id, page_size=10)
    second = await jobs.list_jobs(pool, alice.id, workflow.id, cursor=first.cursor, page_size=10)
    assert first.cursor is not None and second.cursor is None
    listed = [j.id for j in first.items + second.items]
    assert listed == [automatic, *reversed(manual)]

    def ids(page: object) -> set[UUID]:
        return {j.id for j in page.items}  # type: ignore[attr-defined]

    auto_only = await jobs.list_jobs(
        pool, alice.id, workflow.id, filters=JobFilters.parse(trigger="AUTOMATIC")
    )
    assert ids(auto_only) == {automatic}
    canceled = await jobs.list_jobs(pool, alice.id, workflow.id, filters=JobFilters.parse(status="CANCELED"))
    assert ids(canceled) == {manual[0]}


async def test_another_users_jobs_are_invisible(
    pool: asyncpg.Pool, alice: User, bob: User, workflow: Workflow
) -> None:
    job_id = await jobs.schedule_manual(pool, user_id=alice.id, workflow_id=workflow.id, idempotency_key="k")
    assert (await jobs.list_jobs(pool, bob.id, workflow.id)).items == []
    with pytest.raises(NotFound):
        await jobs.get(pool, bob.id, workflow.id, job_id)
    other = await new_workflow(pool, alice)
    with pytest.raises(NotFound):  # right user, wrong workflow
        await jobs.get(pool, alice.id, other.id, job_id)


async def test_bad_cursor_is_invalid(pool: asyncpg.Pool, alice: User, workflow: Workflow) -> None:
    with pytest.raises(Invalid):
        await jobs.list_jobs(pool, alice.id, workflow.id, cursor="%%%")


# -- admin ----------------------------------------------------------------------------------------


async def test_cancel_jobs_by_status_and_trigger(pool: asyncpg.Pool, alice: User, workflow: Workflow) -> None:
    automatic = await schedule_slot(pool, workflow, 5)
    manual = await jobs.schedule_manual(pool, user_id=alice.id, workflow_id=workflow.id, idempotency_key="m")
    running = await jobs.schedule_manual(pool, user_id=alice.id, workflow_id=workflow.id, idempotency_key="r")
    await jobs.update_status(pool, running, JobStatus.RUNNING)
    assert await jobs.cancel_jobs(pool, workflow.id, []) == []
    canceled = await jobs.cancel_jobs(pool, workflow.id, [JobStatus.PENDING], trigger=JobTrigger.AUTOMATIC)
    assert [j.id for j in canceled] == [automatic]
    assert canceled[0].status == JobStatus.CANCELED and canceled[0].completed_at is not None
    canceled = await jobs.cancel_jobs(
        pool, workflow.id, [JobStatus.PENDING, JobStatus.QUEUED, JobStatus.RUNNING]
    )
    assert {j.id for j in canceled} == {manual, running}


async def test_update_status_follows_the_job_state_machine(
    pool: asyncpg.Pool, alice: User, workflow: Workflow
) -> None:
    job_id = await jobs.schedule_manual(pool, user_id=alice.id, workflow_id=workflow.id, idempotency_key="k")
    running = await jobs.update_status(pool, job_id, JobStatus.RUNNING, container_id="c-1")
    assert running.started_at is not None and running.container_id == "c-1"
    done = await jobs.update_status(pool, job_id, JobStatus.COMPLETED)
    assert done.completed_at is not None and done.container_id == "c-1"
    with pytest.raises(PreconditionFailed, match="COMPLETED"):
        await jobs.update_status(pool, job_id, JobStatus.CANCELED)
    assert (await jobs.get_by_id(pool, job_id)).status == JobStatus.COMPLETED
    with pytest.raises(NotFound):
        await jobs.update_status(pool, uuid7(), JobStatus.CANCELED)
    with pytest.raises(NotFound):
        await jobs.get_by_id(pool, uuid7())


async def test_deleting_a_workflow_removes_its_jobs(
    pool: asyncpg.Pool, alice: User, workflow: Workflow, cache: Cache
) -> None:
    job_id = await jobs.schedule_manual(pool, user_id=alice.id, workflow_id=workflow.id, idempotency_key="k")
    await workflows.terminate(pool, user_id=alice.id, workflow_id=workflow.id, cache=cache)
    await workflows.delete(pool, user_id=alice.id, workflow_id=workflow.id, cache=cache)
    with pytest.raises(NotFound):
        await jobs.get_by_id(pool, job_id)
