"""The workflows repository on real PostgreSQL and Redis: idempotent create/update with their outbox
events (checklist 14-15, 34-35), list filters and pagination (59), terminate/delete (32-33),
the workers' admin operations (30-31, 36-37) and ownership isolation (60)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from repository_support import (  # noqa: F401  (fixtures register by import)
    CONTAINER_PAYLOAD,
    HEARTBEAT_PAYLOAD,
    cache_fixture,
    draft,
    new_user,
    new_workflow,
    pool_fixture,
    redis_fixture,
)

from domain.enums import JobStatus, WorkflowBuildStatus, WorkflowKind
from domain.errors import AlreadyExists, Conflict, Invalid, NotFound, PreconditionFailed
from domain.filters import WorkflowFilters
from domain.ids import uuid7
from domain.models import User
from domain.workflow_spec import prepare_update
from domain.workflow_update import UpdateAction
from store import jobs, workflows
from store.cache import Cache

S = WorkflowBuildStatus


async def outbox_rows(pool: asyncpg.Pool, workflow_id: UUID) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT topic, kafka_key, event_key, payload FROM outbox_events"
        " WHERE kafka_key = $1 ORDER BY created_at, id",
        str(workflow_id),
    )
    return [dict(r) for r in rows]


async def job_statuses(pool: asyncpg.Pool, workflow_id: UUID) -> dict[UUID, str]:
    rows = await pool.fetch("SELECT id, status::text AS status FROM jobs WHERE workflow_id = $1", workflow_id)
    return {r["id"]: r["status"] for r in rows}


def changes(**overrides: Any) -> Any:
    fields: dict[str, Any] = {
        "name": "probe",
        "payload": CONTAINER_PAYLOAD,
        "interval": 5,
        "max_consecutive_job_failures_allowed": 3,
    }
    fields.update(overrides)
    return prepare_update(**fields)


@pytest.fixture
async def alice(pool: asyncpg.Pool) -> User:
    return await new_user(pool)


@pytest.fixture
async def bob(pool: asyncpg.Pool) -> User:
    return await new_user(pool)


# -- create ---------------------------------------------------------------------------------------


async def test_new_workflow_is_queued_at_generation_one_with_one_build_event(
    pool: asyncpg.Pool, alice: User, cache: Cache
) -> None:
    workflow_id = await workflows.create(
        pool, user_id=alice.id, draft=draft(), idempotency_key="k1", cache=cache
    )
    workflow = await workflows.get(pool, alice.id, workflow_id)
    assert workflow.build_status == S.QUEUED
    assert workflow.generation == 1
    assert workflow.kind == WorkflowKind.CONTAINER
    assert workflow.log_retention is True
    assert workflow.build_hash is not None
    assert workflow.payload == json.loads(CONTAINER_PAYLOAD)
    rows = await outbox_rows(pool, workflow_id)
    assert [(r["topic"], r["kafka_key"], r["event_key"]) for r in rows] == [
        ("workflows", str(workflow_id), f"workflow:{workflow_id}:BUILD:1")
    ]
    assert rows[0]["payload"] == {
        "event_key": f"workflow:{workflow_id}:BUILD:1",
        "id": str(workflow_id),
        "user_id": str(alice.id),
        "action": "BUILD",
        "generation": 1,
        "job_id": "",
        "failure_kind": "",
        "error_code": "",
        "error_message": "",
    }


async def test_replayed_create_returns_same_id_without_a_second_row_or_event(
    pool: asyncpg.Pool, alice: User, cache: Cache
) -> None:
    first = await workflows.create(pool, user_id=alice.id, draft=draft(), idempotency_key="same", cache=cache)
    again = await workflows.create(pool, user_id=alice.id, draft=draft(), idempotency_key="same", cache=cache)
    assert again == first
    count = await pool.fetchval("SELECT count(*) FROM workflows WHERE user_id = $1", alice.id)
    assert count == 1
    assert len(await outbox_rows(pool, first)) == 1


async def test_same_key_with_a_different_body_is_already_exists(
    pool: asyncpg.Pool, alice: User, cache: Cache
) -> None:
    await workflows.create(pool, user_id=alice.id, draft=draft(), idempotency_key="k", cache=cache)
    with pytest.raises(AlreadyExists):
        await workflows.create(
            pool, user_id=alice.id, draft=draft(interval=6), idempotency_key="k", cache=cache
        )


async def test_same_key_of_another_user_is_independent(
    pool: asyncpg.Pool, alice: User, bob: User, cache: Cache
) -> None:
    a = await workflows.create(pool, user_id=alice.id, draft=draft(), idempotency_key="shared", cache=cache)
    b = await workflows.create(pool, user_id=bob.id, draft=draft(), idempotency_key="shared", cache=cache)
    assert a != b


async def test_key_still_held_by_an_unfinished_request_is_conflict(
    pool: asyncpg.Pool, alice: User, cache: Cache
) -> None:
    async with pool.acquire() as holder, holder.transaction():
        # An in-flight request: the key row is reserved but not committed.
        await holder.execute(
            "INSERT INTO workflow_idempotency_keys (user_id, operation, idempotency_key, request_hash) "
            "VALUES ($1, 'create_workflow', 'busy', 'x')",
            alice.id,
        )
        await holder.execute("SELECT 1")
        with pytest.raises(Conflict):
            await asyncio.wait_for(
                workflows.create(pool, user_id=alice.id, draft=draft(), idempotency_key="busy", cache=cache),
                timeout=30,
            )


async def test_create_for_an_unknown_user_is_not_found(pool: asyncpg.Pool, cache: Cache) -> None:
    with pytest.raises(NotFound):
        await workflows.create(pool, user_id=uuid7(), draft=draft(), idempotency_key="k", cache=cache)


async def test_create_without_a_key_is_invalid(pool: asyncpg.Pool, alice: User, cache: Cache) -> None:
    with pytest.raises(Invalid, match="idempotency key is required"):
        await workflows.create(pool, user_id=alice.id, draft=draft(), idempotency_key="", cache=cache)


async def test_expired_keys_are_cleaned_and_can_be_reused(
    pool: asyncpg.Pool, alice: User, cache: Cache
) -> None:
    first = await workflows.create(pool, user_id=alice.id, draft=draft(), idempotency_key="old", cache=cache)
    await pool.execute(
        "UPDATE workflow_idempotency_keys SET expires_at = expires_at - interval '25 hours'"
        " WHERE user_id = $1",
        alice.id,
    )
    assert await workflows.cleanup_expired_idempotency_keys(pool, batch_size=1000) >= 1
    second = await workflows.create(pool, user_id=alice.id, draft=draft(), idempotency_key="old", cache=cache)
    assert second != first


# -- update -----------------------------------------------------------------------------------------


async def add_jobs(pool: asyncpg.Pool, user: User, workflow_id: UUID) -> dict[str, UUID]:
    """One PENDING AUTOMATIC, one QUEUED AUTOMATIC, one PENDING MANUAL and one RUNNING MANUAL job."""
    base = (await workflows.get_by_id(pool, workflow_id)).created_at
    auto1 = await jobs.schedule_automatic(
        pool,
        workflow_id=workflow_id,
        user_id=user.id,
        scheduled_at=base + timedelta(minutes=5),
        idempotency_key="a1",
        workflow_generation=0,
    )
    auto2 = await jobs.schedule_automatic(
        pool,
        workflow_id=workflow_id,
        user_id=user.id,
        scheduled_at=base + timedelta(minutes=10),
        idempotency_key="a2",
        workflow_generation=0,
    )
    manual = await jobs.schedule_manual(pool, user_id=user.id, workflow_id=workflow_id, idempotency_key="m1")
    running = await jobs.schedule_manual(pool, user_id=user.id, workflow_id=workflow_id, idempotency_key="m2")
    assert auto1 and auto2
    await jobs.update_status(pool, auto2, JobStatus.QUEUED)
    await jobs.update_status(pool, running, JobStatus.RUNNING)
    return {"auto_pending": auto1, "auto_queued": auto2, "manual_pending": manual, "running": running}


async def test_interval_change_of_a_completed_workflow_reschedules(
    pool: asyncpg.Pool, alice: User, cache: Cache
) -> None:
    workflow = await new_workflow(pool, alice, built=True)
    ids = await add_jobs(pool, alice, workflow.id)
    result = await workflows.update(
        pool,
        user_id=alice.id,
        workflow_id=workflow.id,
        changes=changes(interval=10),
        idempotency_key="u",
        cache=cache,
    )
    assert result == type(result)(action=UpdateAction.RESCHEDULE, generation=2, replayed=False)
    after = await workflows.get(pool, alice.id, workflow.id)
    assert (after.generation, after.build_status, after.interval) == (2, S.COMPLETED, 10)
    statuses = await job_statuses(pool, workflow.id)
    assert statuses[ids["auto_pending"]] == "CANCELED"
    assert statuses[ids["auto_queued"]] == "CANCELED"
    assert statuses[ids["manual_pending"]] == "PENDING"  # reschedule only touches AUTOMATIC jobs
    assert statuses[ids["running"]] == "RUNNING"
    keys = [r["event_key"] for r in await outbox_rows(pool, workflow.id)]
    assert keys[-1] == f"workflow:{workflow.id}:RESCHEDULE:2"


async def test_image_change_rebuilds_and_cancels_every_pending_and_queued_job(
    pool: asyncpg.Pool, alice: User, cache: Cache
) -> None:
    workflow = await new_workflow(pool, alice, built=True)
    ids = await add_jobs(pool, alice, workflow.id)
    await pool.execute("UPDATE workflows SET consecutive_job_failures_count = 2 WHERE id = $1", workflow.id)
    new_payload = json.dumps({"image": "local/other:2"})
    result = await workflows.update(
        pool,
        user_id=alice.id,
        workflow_id=workflow.id,
        changes=changes(payload=new_payload),
        idempotency_key="u",
        cache=cache,
    )
    assert (result.action, result.generation) == (UpdateAction.BUILD, 2)
    after = await workflows.get(pool, alice.id, workflow.id)
    assert after.build_status == S.QUEUED
    assert after.consecutive_job_failures_count == 0
    assert after.build_hash != workflow.build_hash
    statuses = await job_statuses(pool, workflow.id)
    assert statuses[ids["auto_pending"]] == statuses[ids["auto_queued"]] == "CANCELED"
    assert statuses[ids["manual_pending"]] == "CANCELED"
    assert statuses[ids["running"]] == "RUNNING"
    canceled = await jobs.get(pool, alice.id, workflow.id, ids["auto_queued"])
    assert canceled.completed_at is not None and canceled.lease_token is None
    keys = [r["event_key"] for r in await outbox_rows(pool, workflow.id)]
    assert keys[-1] == f"workflow:{workflow.id}:BUILD:2"


async def test_updating_a_terminated_workflow_reactivates_and_rebuilds_it(
    pool: asyncpg.Pool, alice: User, cache: Cache
) -> None:
    workflow = await new_workflow(pool, alice, built=True)
    await workflows.terminate(pool, user_id=alice.id, workflow_id=workflow.id, cache=cache)
    result = await workflows.update(
        pool, user_id=alice.id, workflow_id=workflow.id, changes=changes(), idempotency_key="u", cache=cache
    )
    assert result.action == UpdateAction.BUILD
    after = await workflows.get(pool, alice.id, workflow.id, cache=cache)
    assert after.terminated_at is None and after.build_status == S.QUEUED and after.generation == 2


async def test_name_change_only_updates_fields(pool: asyncpg.Pool, alice: User, cache: Cache) -> None:
    workflow = await new_workflow(pool, alice, built=True)
    result = await workflows.update(
        pool,
        user_id=alice.id,
        workflow_id=workflow.id,
        changes=changes(name="renamed"),
        idempotency_key="u",
        cache=cache,
    )
    assert (result.action, result.generation) == (UpdateAction.NONE, 1)
    after = await workflows.get(pool, alice.id, workflow.id)
    assert after.name == "renamed" and after.build_status == S.COMPLETED
    assert len(await outbox_rows(pool, workflow.id)) == 1


async def test_replayed_update_has_no_side_effects(pool: asyncpg.Pool, alice: User, cache: Cache) -> None:
    workflow = await new_workflow(pool, alice, built=True)
    first = await workflows.update(
        pool,
        user_id=alice.id,
        workflow_id=workflow.id,
        changes=changes(interval=9),
        idempotency_key="u",
        cache=cache,
    )
    again = await workflows.update(
        pool,
        user_id=alice.id,
        workflow_id=workflow.id,
        changes=changes(interval=9),
        idempotency_key="u",
        cache=cache,
    )
    assert again.replayed and (again.action, again.generation) == (first.action, first.generation)
    assert (await workflows.get(pool, alice.id, workflow.id)).generation == 2
    with pytest.raises(AlreadyExists):
        await workflows.update(
            pool,
            user_id=alice.id,
            workflow_id=workflow.id,
            changes=changes(interval=8),
            idempotency_key="u",
            cache=cache,
        )


async def test_update_validates_the_payload_against_the_stored_kind(
    pool: asyncpg.Pool, alice: User, cache: Cache
) -> None:
    workflow = await new_workflow(pool, alice, kind="HEARTBEAT", payload=HEARTBEAT_PAYLOAD)
    with pytest.raises(Invalid, match=r"payload\.endpoint is required"):
        await workflows.update(
            pool,
            user_id=alice.id,
            workflow_id=workflow.id,
            changes=changes(),
            idempotency_key="u",
            cache=cache,
        )
    with pytest.raises(PreconditionFailed):
        await workflows.update(
            pool,
            user_id=alice.id,
            workflow_id=workflow.id,
            changes=changes(payload=json.dumps({"endpoint": "x", "timeout": "6m"})),
            idempotency_key="u",
            cache=cache,
        )
    # The failed attempts released the key: a valid request with it goes through.
    ok = await workflows.update(
        pool,
        user_id=alice.id,
        workflow_id=workflow.id,
        changes=changes(payload=HEARTBEAT_PAYLOAD),
        idempotency_key="u",
        cache=cache,
    )
    assert not ok.replayed


# -- reads, filters, pagination ---------------------------------------------------------------------


async def test_list_pages_ten_newest_first_without_overlap(
    pool: asyncpg.Pool, alice: User, cache: Cache
) -> None:
    created = [(await new_workflow(pool, alice, name=f"wf-{i}")).id for i in range(23)]
    seen: list[UUID] = []
    cursor = None
    sizes = []
    while True:
        page = await workflows.list_workflows(pool, alice.id, cursor=cursor, page_size=10, cache=cache)
        sizes.append(len(page.items))
        seen.extend(w.id for w in page.items)
        if page.cursor is None:
            break
        cursor = page.cursor
    assert sizes == [10, 10, 3]
    assert seen == list(reversed(created))


async def test_list_filters(pool: asyncpg.Pool, alice: User, cache: Cache) -> None:
    hb = await new_workflow(
        pool, alice, name="Heart_beat 100%", kind="HEARTBEAT", payload=HEARTBEAT_PAYLOAD, interval=1
    )
    built = await new_workflow(pool, alice, name="built one", built=True, interval=30)
    gone = await new_workflow(pool, alice, name="gone", built=True, interval=60)
    await workflows.terminate(pool, user_id=alice.id, workflow_id=gone.id, cache=cache)

    async def ids(**params: Any) -> set[UUID]:
        page = await workflows.list_workflows(
            pool, alice.id, filters=WorkflowFilters.parse(**params), page_size=50, cache=cache
        )
        return {w.id for w in page.items}

    assert await ids() == {hb.id, built.id, gone.id}
    assert await ids(query="heart_beat 100%") == {hb.id}
    # LIKE wildcards match literally: "_" only in "Heart_beat", "t%o" nowhere (as a pattern: "built one").
    assert await ids(query="_") == {hb.id}
    assert await ids(query="t%o") == set()
    assert await ids(kind="HEARTBEAT") == {hb.id}
    assert await ids(kind="CONTAINER") == {built.id, gone.id}
    assert await ids(build_status="COMPLETED") == {built.id}  # implies not terminated
    assert await ids(build_status="QUEUED") == {hb.id}
    assert await ids(terminated="true") == {gone.id}
    assert await ids(terminated="false") == {hb.id, built.id, gone.id}
    assert await ids(interval_min="2", interval_max="59") == {built.id}
    assert await ids(interval_max="1") == {hb.id}


async def test_bad_cursor_is_invalid(pool: asyncpg.Pool, alice: User) -> None:
    with pytest.raises(Invalid):
        await workflows.list_workflows(pool, alice.id, cursor="garbage")


async def test_cached_reads_see_the_callers_own_writes(pool: asyncpg.Pool, alice: User, cache: Cache) -> None:
    workflow = await new_workflow(pool, alice, cache=cache, built=True)
    assert (await workflows.get(pool, alice.id, workflow.id, cache=cache)).name == "probe"
    listed = await workflows.list_workflows(pool, alice.id, cache=cache)
    assert [w.name for w in listed.items] == ["probe"]
    await workflows.update(
        pool,
        user_id=alice.id,
        workflow_id=workflow.id,
        changes=changes(name="second"),
        idempotency_key="u",
        cache=cache,
    )
    assert (await workflows.get(pool, alice.id, workflow.id, cache=cache)).name == "second"
    assert [w.name for w in (await workflows.list_workflows(pool, alice.id, cache=cache)).items] == ["second"]
    await workflows.update_build_status(pool, workflow.id, S.FAILED, 0, cache=cache)
    assert (await workflows.get(pool, alice.id, workflow.id, cache=cache)).build_status == S.FAILED
    await workflows.terminate(pool, user_id=alice.id, workflow_id=workflow.id, cache=cache)
    assert (await workflows.get(pool, alice.id, workflow.id, cache=cache)).terminated_at is not None
    fresh = await new_workflow(pool, alice, cache=cache)
    assert fresh.id in {w.id for w in (await workflows.list_workflows(pool, alice.id, cache=cache)).items}


async def test_cache_serves_reads_until_invalidated(pool: asyncpg.Pool, alice: User, cache: Cache) -> None:
    workflow = await new_workflow(pool, alice, cache=cache)
    await workflows.get(pool, alice.id, workflow.id, cache=cache)
    # A write that bypasses the repository is not seen while the entry lives...
    await pool.execute("UPDATE workflows SET name = 'sneaky' WHERE id = $1", workflow.id)
    assert (await workflows.get(pool, alice.id, workflow.id, cache=cache)).name == "probe"
    # ...and is once the user's workflows are invalidated.
    await cache.invalidate_workflows(alice.id)
    assert (await workflows.get(pool, alice.id, workflow.id, cache=cache)).name == "sneaky"


# -- terminate / delete -----------------------------------------------------------------------------


async def test_terminate_is_idempotent_with_one_event_per_generation(
    pool: asyncpg.Pool, alice: User, cache: Cache
) -> None:
    workflow = await new_workflow(pool, alice, built=True)
    first = await workflows.terminate(pool, user_id=alice.id, workflow_id=workflow.id, cache=cache)
    again = await workflows.terminate(pool, user_id=alice.id, workflow_id=workflow.id, cache=cache)
    assert first.terminated_at is not None and again.terminated_at == first.terminated_at
    keys = [r["event_key"] for r in await outbox_rows(pool, workflow.id)]
    assert keys.count(f"workflow:{workflow.id}:TERMINATE:1") == 1


async def test_delete_requires_termination_and_no_running_job(
    pool: asyncpg.Pool, alice: User, cache: Cache
) -> None:
    workflow = await new_workflow(pool, alice, built=True)
    with pytest.raises(PreconditionFailed, match="workflow is active"):
        await workflows.delete(pool, user_id=alice.id, workflow_id=workflow.id, cache=cache)
    running = await jobs.schedule_manual(pool, user_id=alice.id, workflow_id=workflow.id, idempotency_key="r")
    await jobs.update_status(pool, running, JobStatus.RUNNING)
    await workflows.terminate(pool, user_id=alice.id, workflow_id=workflow.id, cache=cache)
    with pytest.raises(PreconditionFailed, match="running job"):
        await workflows.delete(pool, user_id=alice.id, workflow_id=workflow.id, cache=cache)
    await jobs.update_status(pool, running, JobStatus.CANCELED)
    await workflows.delete(pool, user_id=alice.id, workflow_id=workflow.id, cache=cache)
    with pytest.raises(NotFound):
        await workflows.get(pool, alice.id, workflow.id, cache=cache)
    assert await pool.fetchval("SELECT count(*) FROM jobs WHERE workflow_id = $1", workflow.id) == 0
    delete_rows = [r for r in await outbox_rows(pool, workflow.id) if r["event_key"].endswith("DELETE")]
    assert [r["event_key"] for r in delete_rows] == [f"workflow:{workflow.id}:DELETE"]
    assert delete_rows[0]["payload"]["generation"] == 0


# -- admin ------------------------------------------------------------------------------------------


async def test_build_status_update_with_a_stale_generation_changes_nothing(
    pool: asyncpg.Pool, alice: User, cache: Cache
) -> None:
    workflow = await new_workflow(pool, alice)
    await workflows.update(
        pool,
        user_id=alice.id,
        workflow_id=workflow.id,
        changes=changes(payload=json.dumps({"image": "x:2"})),
        idempotency_key="u",
        cache=cache,
    )
    with pytest.raises(PreconditionFailed, match="stale"):
        await workflows.update_build_status(pool, workflow.id, S.COMPLETED, 1, cache=cache)
    assert (await workflows.get_by_id(pool, workflow.id)).build_status == S.QUEUED
    updated = await workflows.update_build_status(pool, workflow.id, S.STARTED, 2, cache=cache)
    assert updated.build_status == S.STARTED
    with pytest.raises(NotFound):
        await workflows.update_build_status(pool, uuid7(), S.STARTED, 0, cache=cache)


async def test_failures_count_once_per_job_and_report_the_threshold(
    pool: asyncpg.Pool, alice: User, cache: Cache
) -> None:
    workflow = await new_workflow(pool, alice, built=True)
    job_ids = [uuid7() for _ in range(3)]
    results = []
    for job_id in job_ids:
        results.append(
            await workflows.increment_failures(
                pool, workflow_id=workflow.id, user_id=alice.id, job_id=job_id, cache=cache
            )
        )
        # A replayed JOB_FAILED event for the same job does not count twice.
        await workflows.increment_failures(
            pool, workflow_id=workflow.id, user_id=alice.id, job_id=job_id, cache=cache
        )
    assert results == [False, False, True]
    assert (await workflows.get(pool, alice.id, workflow.id, cache=cache)).consecutive_job_failures_count == 3
    await workflows.reset_failures(pool, workflow_id=workflow.id, user_id=alice.id, cache=cache)
    assert (await workflows.get(pool, alice.id, workflow.id, cache=cache)).consecutive_job_failures_count == 0


async def test_failures_of_a_terminated_workflow_are_not_counted(
    pool: asyncpg.Pool, alice: User, cache: Cache
) -> None:
    workflow = await new_workflow(pool, alice, built=True)
    await workflows.terminate(pool, user_id=alice.id, workflow_id=workflow.id, cache=cache)
    reached = await workflows.increment_failures(
        pool, workflow_id=workflow.id, user_id=alice.id, job_id=uuid7(), cache=cache
    )
    assert reached is False
    assert (await workflows.get_by_id(pool, workflow.id)).consecutive_job_failures_count == 0
    with pytest.raises(NotFound):
        await workflows.reset_failures(pool, workflow_id=workflow.id, user_id=alice.id, cache=cache)


# -- ownership --------------------------------------------------------------------------------------


async def test_another_users_workflow_is_not_found_everywhere(
    pool: asyncpg.Pool, alice: User, bob: User, cache: Cache
) -> None:
    workflow = await new_workflow(pool, alice, built=True)
    with pytest.raises(NotFound):
        await workflows.get(pool, bob.id, workflow.id, cache=cache)
    with pytest.raises(NotFound):
        await workflows.update(
            pool,
            user_id=bob.id,
            workflow_id=workflow.id,
            changes=changes(name="x"),
            idempotency_key="u",
            cache=cache,
        )
    with pytest.raises(NotFound):
        await workflows.terminate(pool, user_id=bob.id, workflow_id=workflow.id, cache=cache)
    with pytest.raises(NotFound):
        await workflows.delete(pool, user_id=bob.id, workflow_id=workflow.id, cache=cache)
    with pytest.raises(NotFound):
        await workflows.increment_failures(
            pool, workflow_id=workflow.id, user_id=bob.id, job_id=uuid7(), cache=cache
        )
    with pytest.raises(NotFound):
        await workflows.reset_failures(pool, workflow_id=workflow.id, user_id=bob.id, cache=cache)
    assert (await workflows.list_workflows(pool, bob.id, cache=cache)).items == []
    after = await workflows.get(pool, alice.id, workflow.id)
    assert after.terminated_at is None and after.name == "probe"
