"""The analytics repository on real PostgreSQL (checklist items 53-55)."""

from __future__ import annotations

import asyncpg
import pytest
from repository_support import cache_fixture, new_user, new_workflow, pool_fixture, redis_fixture  # noqa: F401

from domain.enums import LogStream
from domain.errors import NotFound
from domain.event_keys import analytics_job_key, analytics_workflow_key, log_event_key
from domain.ids import uuid7
from domain.models import User, UserAnalytics
from store import analytics, workflows
from store.cache import Cache


@pytest.fixture
async def user(pool: asyncpg.Pool) -> User:
    return await new_user(pool)


async def test_new_user_has_zero_totals(pool: asyncpg.Pool, user: User) -> None:
    assert await analytics.get_user(pool, user.id) == UserAnalytics(
        total_workflows=0, total_jobs=0, total_joblogs=0, total_job_execution_duration=0
    )


async def test_workflow_analytics_is_not_found_until_its_row_exists(pool: asyncpg.Pool, user: User) -> None:
    workflow_id = uuid7()
    with pytest.raises(NotFound):
        await analytics.get_workflow(pool, user.id, workflow_id)
    assert await analytics.apply_workflow_created(
        pool,
        event_key=analytics_workflow_key(workflow_id),
        user_id=user.id,
        workflow_id=workflow_id,
        kind="CONTAINER",
    )
    row = await analytics.get_workflow(pool, user.id, workflow_id)
    assert (row.workflow_id, row.kind, row.total_jobs, row.total_joblogs) == (workflow_id, "CONTAINER", 0, 0)
    stranger = await new_user(pool)
    with pytest.raises(NotFound):
        await analytics.get_workflow(pool, stranger.id, workflow_id)


async def test_events_add_up_and_replays_change_nothing(pool: asyncpg.Pool, user: User, cache: Cache) -> None:
    workflow = await new_workflow(pool, user, built=True)
    wf = workflow.id
    created_key = analytics_workflow_key(wf)
    for _ in range(2):  # the second pass is a replay
        await analytics.apply_workflow_created(
            pool, event_key=created_key, user_id=user.id, workflow_id=wf, kind="CONTAINER"
        )
    job_a, job_b = uuid7(), uuid7()
    assert await analytics.apply_job_finished(
        pool,
        event_key=analytics_job_key(job_a),
        user_id=user.id,
        workflow_id=wf,
        duration_s=12,
        succeeded=True,
    )
    assert not await analytics.apply_job_finished(
        pool,
        event_key=analytics_job_key(job_a),
        user_id=user.id,
        workflow_id=wf,
        duration_s=12,
        succeeded=True,
    )
    assert await analytics.apply_job_finished(
        pool,
        event_key=analytics_job_key(job_b),
        user_id=user.id,
        workflow_id=wf,
        duration_s=3,
        succeeded=False,
    )
    lines = [log_event_key(job_a, 1, LogStream.STDOUT, n) for n in range(4)]
    assert await analytics.add_log_lines(pool, event_keys=lines, user_id=user.id, workflow_id=wf) == 4
    assert (
        await analytics.add_log_lines(pool, event_keys=lines + lines[:1], user_id=user.id, workflow_id=wf)
        == 0
    )
    assert await analytics.apply_log_count(
        pool, event_key="analytics:logs:batch-1", user_id=user.id, workflow_id=wf, count=5
    )
    assert not await analytics.apply_log_count(
        pool, event_key="analytics:logs:batch-1", user_id=user.id, workflow_id=wf, count=5
    )

    row = await analytics.get_workflow(pool, user.id, wf)
    assert (row.total_jobs, row.total_job_execution_duration, row.total_joblogs) == (2, 15, 9)
    assert (row.jobs_succeeded, row.jobs_failed) == (1, 1)  # the replayed success counted once
    totals = await analytics.get_user(pool, user.id)
    assert totals == UserAnalytics(
        total_workflows=1, total_jobs=2, total_joblogs=9, total_job_execution_duration=15
    )

    # Deleted workflows remain counted.
    await workflows.terminate(pool, user_id=user.id, workflow_id=wf, cache=cache)
    await workflows.delete(pool, user_id=user.id, workflow_id=wf, cache=cache)
    assert await analytics.get_user(pool, user.id) == totals


async def test_events_without_a_key_apply_every_time(pool: asyncpg.Pool, user: User) -> None:
    wf = uuid7()
    for _ in range(2):
        assert await analytics.apply_job_finished(
            pool, event_key="", user_id=user.id, workflow_id=wf, duration_s=-4
        )
    row = await analytics.get_workflow(pool, user.id, wf)
    assert (row.total_jobs, row.total_job_execution_duration) == (2, 0)


async def test_events_for_an_unknown_user_are_not_found(pool: asyncpg.Pool) -> None:
    with pytest.raises(NotFound):
        await analytics.apply_workflow_created(
            pool, event_key=f"k-{uuid7()}", user_id=uuid7(), workflow_id=uuid7(), kind="HEARTBEAT"
        )
