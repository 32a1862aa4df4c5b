"""The joblogs and analytics processors against real PostgreSQL, Redis and chdb: what a batch does,
and that replaying it changes nothing (reference §8, §6.6; checklist items 50-54, 66)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from actors.analytics_processor import AnalyticsProcessor
from actors.joblogs_processor import JoblogsProcessor
from domain.config import AnalyticsProcessorConfig
from domain.enums import AnalyticsEventType, LogStream
from domain.errors import Invalid
from domain.event_keys import log_event_key
from domain.ids import uuid7
from domain.log_lines import live_channel
from ingest.consumer import ConsumedRecord
from ingest.events import AnalyticEvent, JobLogEvent
from store.logstore import ChdbLogStore, LogStore
from store.postgres import create_pool
from store.redis import create_redis


@pytest.fixture(scope="module")
async def db(stack: Any) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(stack.settings.postgres, min_size=1, max_size=6)
    yield pool
    await pool.close()


@pytest.fixture(scope="module")
async def redis(stack: Any) -> AsyncIterator[Any]:
    client = create_redis(stack.settings.redis)
    yield client
    await client.aclose()


@pytest.fixture(scope="module")
async def store(stack: Any) -> AsyncIterator[LogStore]:
    log_store = ChdbLogStore(stack.settings.clickhouse.chdb_path)
    await log_store.ensure_schema()
    yield log_store
    await log_store.close()


@pytest.fixture
def joblogs(db: asyncpg.Pool, store: LogStore, redis: Any) -> JoblogsProcessor:
    return JoblogsProcessor(db=db, store=store, redis=redis)


async def make_workflow(db: asyncpg.Pool, *, ttl_seconds: int | None = None) -> tuple[UUID, UUID]:
    user_id, workflow_id = uuid7(), uuid7()
    await db.execute(
        "INSERT INTO users (id, email, password) VALUES ($1, $2, 'x')", user_id, f"{user_id}@example.com"
    )
    await db.execute(
        """INSERT INTO workflows (id, user_id, name, payload, kind, build_status, "interval",
                                  log_retention_ttl_seconds)
           VALUES ($1, $2, 'wf', '{"image": "x"}'::jsonb, 'CONTAINER', 'COMPLETED', 5, $3)""",
        workflow_id,
        user_id,
        ttl_seconds,
    )
    return user_id, workflow_id


def log_records(
    user_id: UUID,
    workflow_id: UUID,
    job_id: UUID,
    count: int,
    *,
    retention: bool = True,
    live_published: bool = True,
    attempt: int = 1,
    when: datetime | None = None,
) -> list[ConsumedRecord]:
    records = []
    for seq in range(count):
        stream = LogStream.STDOUT if seq % 2 == 0 else LogStream.STDERR
        event = JobLogEvent(
            event_key=log_event_key(job_id, attempt, stream, seq),
            job_id=str(job_id),
            workflow_id=str(workflow_id),
            user_id=str(user_id),
            message=f"line {seq}",
            timestamp=when or datetime.now(UTC),
            sequence_num=seq,
            stream=stream,
            retention=retention,
            live_published=live_published,
            attempt=attempt,
        )
        records.append(
            ConsumedRecord(topic="job_logs", partition=0, offset=seq, key=str(job_id), value=event.to_bytes())
        )
    return records


async def logs_count(db: asyncpg.Pool, user_id: UUID, workflow_id: UUID) -> int:
    value = await db.fetchval(
        "SELECT logs_count FROM analytics WHERE user_id = $1 AND workflow_id = $2", user_id, workflow_id
    )
    return int(value or 0)


# ---------------------------------------------------------------------------------------- joblogs


async def test_batch_stores_and_counts_lines_and_a_replay_changes_nothing(
    db: asyncpg.Pool, store: LogStore, joblogs: JoblogsProcessor
) -> None:
    user_id, workflow_id = await make_workflow(db)
    job_id = uuid7()
    records = log_records(user_id, workflow_id, job_id, 6)
    first = await joblogs.handle_batch(records + records[:2])  # duplicates inside the batch too
    assert (first.stored, first.counted, first.dropped) == (6, 6, 0)
    assert await store.count(user_id, workflow_id, job_id) == 6
    assert await logs_count(db, user_id, workflow_id) == 6
    replay = await joblogs.handle_batch(records)
    assert (replay.stored, replay.counted) == (0, 0)
    assert await store.count(user_id, workflow_id, job_id) == 6
    assert await logs_count(db, user_id, workflow_id) == 6


async def test_retried_attempts_keep_their_own_lines(
    db: asyncpg.Pool, store: LogStore, joblogs: JoblogsProcessor
) -> None:
    user_id, workflow_id = await make_workflow(db)
    job_id = uuid7()
    await joblogs.handle_batch(log_records(user_id, workflow_id, job_id, 3, attempt=1))
    await joblogs.handle_batch(log_records(user_id, workflow_id, job_id, 3, attempt=2))
    assert await store.count(user_id, workflow_id, job_id) == 6


async def test_unretained_lines_are_counted_but_not_stored(
    db: asyncpg.Pool, store: LogStore, joblogs: JoblogsProcessor
) -> None:
    user_id, workflow_id = await make_workflow(db)
    job_id = uuid7()
    result = await joblogs.handle_batch(log_records(user_id, workflow_id, job_id, 4, retention=False))
    assert (result.stored, result.counted) == (0, 4)
    assert await store.count(user_id, workflow_id, job_id) == 0
    assert await logs_count(db, user_id, workflow_id) == 4


async def test_lines_of_a_deleted_workflow_are_dropped_and_removed(
    db: asyncpg.Pool, store: LogStore, joblogs: JoblogsProcessor
) -> None:
    user_id, workflow_id = await make_workflow(db)
    job_id = uuid7()
    records = log_records(user_id, workflow_id, job_id, 4)
    await joblogs.handle_batch(records[:2])
    assert await store.count(user_id, workflow_id, job_id) == 2
    await db.execute("DELETE FROM workflows WHERE id = $1", workflow_id)
    result = await joblogs.handle_batch(records)
    assert (result.dropped, result.stored, result.counted) == (4, 0, 0)
    assert await store.count(user_id, workflow_id, job_id) == 0
    assert await logs_count(db, user_id, workflow_id) == 2  # analytics survive deletion


async def test_lines_claiming_another_users_workflow_are_dropped(
    db: asyncpg.Pool, store: LogStore, joblogs: JoblogsProcessor
) -> None:
    _, workflow_id = await make_workflow(db)
    stranger, _ = await make_workflow(db)
    job_id = uuid7()
    result = await joblogs.handle_batch(log_records(stranger, workflow_id, job_id, 2))
    assert result.dropped == 2
    assert await store.count(stranger, workflow_id, job_id) == 0


async def test_undecodable_records_are_dropped(joblogs: JoblogsProcessor) -> None:
    junk = ConsumedRecord(topic="job_logs", partition=0, offset=1, value=b"{not json")
    wrong_ids = ConsumedRecord(
        topic="job_logs",
        partition=0,
        offset=2,
        value=json.dumps(
            {
                "event_key": "log:x:stdout:0",
                "job_id": "x",
                "workflow_id": "y",
                "user_id": "z",
                "message": "m",
                "timestamp": "2025-01-01T00:00:00Z",
                "sequence_num": 0,
                "stream": "stdout",
                "retention": True,
            }
        ).encode(),
    )
    result = await joblogs.handle_batch([junk, wrong_ids])
    assert (result.received, result.dropped, result.stored) == (2, 2, 0)


async def test_retention_period_expires_old_lines(
    db: asyncpg.Pool, store: LogStore, joblogs: JoblogsProcessor
) -> None:
    user_id, workflow_id = await make_workflow(db, ttl_seconds=60)
    job_id, fresh_job = uuid7(), uuid7()
    await joblogs.handle_batch(
        log_records(user_id, workflow_id, job_id, 2, when=datetime.now(UTC) - timedelta(hours=1))
    )
    await joblogs.handle_batch(log_records(user_id, workflow_id, fresh_job, 2))
    assert await store.count(user_id, workflow_id, job_id) == 0
    assert await store.count(user_id, workflow_id, fresh_job) == 2


async def test_only_lines_not_yet_live_published_are_published_live(
    db: asyncpg.Pool, redis: Any, joblogs: JoblogsProcessor
) -> None:
    user_id, workflow_id = await make_workflow(db)
    job_id = uuid7()
    pubsub = redis.pubsub()
    await pubsub.subscribe(live_channel(job_id))
    try:
        already = await joblogs.handle_batch(
            log_records(user_id, workflow_id, job_id, 2, live_published=True)
        )
        assert already.live_published == 0
        replayed = log_records(user_id, workflow_id, job_id, 3, live_published=False, attempt=2)
        result = await joblogs.handle_batch(replayed)
        assert result.live_published == 3
        seen = []
        deadline = asyncio.get_running_loop().time() + 30  # generous: the machine may be loaded
        while len(seen) < 3 and asyncio.get_running_loop().time() < deadline:
            # None also comes back for the (ignored) subscribe confirmation: keep polling.
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if message is not None:
                seen.append(json.loads(message["data"]))
        assert sorted(m["sequence_num"] for m in seen) == [0, 1, 2]
        assert all(m["type"] == "log" and m["event_id"].startswith(f"log:{job_id}:attempt:2:") for m in seen)
    finally:
        await pubsub.unsubscribe()
        await pubsub.aclose()


# ---------------------------------------------------------------------------------------- analytics


def analytic(event: AnalyticEvent) -> ConsumedRecord:
    return ConsumedRecord(
        topic="analytics", partition=0, offset=0, key=event.workflow_id, value=event.to_bytes()
    )


async def row(db: asyncpg.Pool, user_id: UUID, workflow_id: UUID) -> dict[str, Any]:
    record = await db.fetchrow(
        "SELECT kind, jobs_count, jobs_succeeded, jobs_failed, total_job_execution_duration, logs_count "
        "FROM analytics "
        "WHERE user_id = $1 AND workflow_id = $2",
        user_id,
        workflow_id,
    )
    return dict(record) if record else {}


def finished(user_id: str, workflow_id: str, seconds: int, *, succeeded: bool | None) -> AnalyticEvent:
    event = AnalyticEvent.job_finished(
        user_id=user_id, workflow_id=workflow_id, job_id=str(uuid7()), execution_seconds=seconds
    )
    if succeeded is None:  # an event from before the outcome was recorded
        return event
    return event.model_copy(update={"data": {**event.data, "succeeded": succeeded}})


@pytest.fixture
def analytics_processor(db: asyncpg.Pool) -> AnalyticsProcessor:
    return AnalyticsProcessor(db=db, cfg=AnalyticsProcessorConfig(processor_cleanup_batch_size=2))


async def test_analytics_events_apply_once_even_when_replayed(
    db: asyncpg.Pool, analytics_processor: AnalyticsProcessor
) -> None:
    user_id, workflow_id = await make_workflow(db)
    u, w = str(user_id), str(workflow_id)
    events = [
        AnalyticEvent.workflow_built(user_id=u, workflow_id=w, kind="CONTAINER"),
        finished(u, w, 7, succeeded=True),
        finished(u, w, 3, succeeded=False),
        finished(u, w, 1, succeeded=None),
        AnalyticEvent(
            event_key=f"analytics:logs:{uuid7()}",
            user_id=u,
            workflow_id=w,
            event_type=AnalyticsEventType.LOGS,
            data={"count": 5},
        ),
    ]
    records = [analytic(e) for e in events]
    assert await analytics_processor.handle(records) == [True] * 5
    expected = {
        "kind": "CONTAINER",
        "jobs_count": 3,
        "jobs_succeeded": 1,
        "jobs_failed": 1,
        "total_job_execution_duration": 11,
        "logs_count": 5,
    }
    assert await row(db, user_id, workflow_id) == expected
    assert await analytics_processor.handle(records) == [False] * 5
    assert await row(db, user_id, workflow_id) == expected


async def test_analytics_event_with_bad_data_is_invalid(
    db: asyncpg.Pool, analytics_processor: AnalyticsProcessor
) -> None:
    user_id, workflow_id = await make_workflow(db)
    bad = AnalyticEvent(
        event_key=f"analytics:job:{uuid7()}:completed",
        user_id=str(user_id),
        workflow_id=str(workflow_id),
        event_type=AnalyticsEventType.JOBS,
        data={},
    )
    with pytest.raises(Invalid):
        await analytics_processor.apply(bad)
    assert await row(db, user_id, workflow_id) == {}


async def test_analytics_event_of_a_deleted_user_has_no_effect(
    analytics_processor: AnalyticsProcessor,
) -> None:
    event = AnalyticEvent.workflow_built(user_id=str(uuid7()), workflow_id=str(uuid7()), kind="HEARTBEAT")
    assert await analytics_processor.apply(event) is False


async def test_a_batch_applies_in_one_go_with_repeats_and_zero_counts_skipped(
    db: asyncpg.Pool, analytics_processor: AnalyticsProcessor
) -> None:
    user_id, workflow_id = await make_workflow(db)
    u, w = str(user_id), str(workflow_id)
    job = finished(u, w, 4, succeeded=True)
    nothing = AnalyticEvent(event_key=f"analytics:logs:{uuid7()}", user_id=u, workflow_id=w,
                            event_type=AnalyticsEventType.LOGS, data={"count": 0})
    records = [analytic(e) for e in (job, nothing, job, finished(u, w, 2, succeeded=False))]
    assert await analytics_processor.handle(records) == [True, False, False, True]
    assert await row(db, user_id, workflow_id) == {
        "kind": "", "jobs_count": 2, "jobs_succeeded": 1, "jobs_failed": 1,
        "total_job_execution_duration": 6, "logs_count": 0,
    }


async def test_a_deleted_users_event_does_not_hold_back_the_rest_of_its_batch(
    db: asyncpg.Pool, analytics_processor: AnalyticsProcessor
) -> None:
    user_id, workflow_id = await make_workflow(db)
    u, w = str(user_id), str(workflow_id)
    gone = AnalyticEvent.workflow_built(user_id=str(uuid7()), workflow_id=str(uuid7()), kind="HEARTBEAT")
    events = (finished(u, w, 3, succeeded=True), gone, finished(u, w, 5, succeeded=True))
    records = [analytic(e) for e in events]
    assert await analytics_processor.handle(records) == [True, False, True]
    counted = await row(db, user_id, workflow_id)
    assert (counted["jobs_count"], counted["total_job_execution_duration"]) == (2, 8)
    # The deleted user's key was not recorded: its transaction rolled back with the failed batch.
    assert await db.fetchval(
        "SELECT count(*) FROM processed_events WHERE event_key = $1", gone.event_key) == 0


async def test_cleanup_purges_only_expired_dedupe_records(
    db: asyncpg.Pool, analytics_processor: AnalyticsProcessor
) -> None:
    marker = str(uuid7())
    await db.executemany(
        "INSERT INTO processed_events (consumer, event_key, created_at) VALUES ($1, $2, $3)",
        [("analytics-processor", f"{marker}:old:{i}", datetime(2000, 1, 1)) for i in range(5)]
        + [("joblogs-processor:analytics", f"{marker}:new", datetime.now(UTC).replace(tzinfo=None))],
    )
    assert await analytics_processor.cleanup_once() >= 5
    left = await db.fetch("SELECT event_key FROM processed_events WHERE event_key LIKE $1", f"{marker}%")
    assert [r["event_key"] for r in left] == [f"{marker}:new"]


async def test_cleanup_loop_runs_at_start(db: asyncpg.Pool) -> None:
    key = f"{uuid7()}:old"
    await db.execute(
        "INSERT INTO processed_events (consumer, event_key, created_at) VALUES ($1, $2, $3)",
        "analytics-processor",
        key,
        datetime(2000, 1, 1),
    )
    processor = AnalyticsProcessor(db=db, cfg=AnalyticsProcessorConfig())
    processor.start()
    try:
        deadline = asyncio.get_running_loop().time() + 30  # generous: the machine may be loaded
        while asyncio.get_running_loop().time() < deadline:
            if not await db.fetchval("SELECT 1 FROM processed_events WHERE event_key = $1", key):
                break
            await asyncio.sleep(0.1)
        assert not await db.fetchval("SELECT 1 FROM processed_events WHERE event_key = $1", key)
    finally:
        await processor.close()
