"""The outbox repository on a real PostgreSQL (reference §6.1 with SPEC §5.3's DEAD change).

Each test uses its own topic, so tests never claim each other's rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from pydantic import BaseModel

from domain.config import PostgresConfig
from domain.enums import OutboxStatus
from domain.ids import uuid7
from store import outbox
from store.migrate import migrate
from store.postgres import create_pool

LEASE = timedelta(seconds=30)


class _Event(BaseModel):
    event_key: str
    workflow_id: str
    generation: int


@pytest.fixture(scope="module")
def module_db(stack) -> PostgresConfig:  # type: ignore[no-untyped-def]
    cfg: PostgresConfig = stack.create_database()
    return cfg


@pytest.fixture(scope="module")
async def pool(module_db: PostgresConfig) -> AsyncIterator[asyncpg.Pool]:
    await migrate(module_db)
    p = await create_pool(module_db, min_size=1, max_size=6)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
def topic() -> str:
    return f"topic-{uuid7()}"


async def _add(pool: asyncpg.Pool, topic: str, key: str, n: int = 1) -> list[str]:
    """Add ``n`` events for ``key``, each in its own transaction (so created_at increases)."""
    event_keys = []
    for _ in range(n):
        event_key = f"{key}:{uuid7()}"
        async with pool.acquire() as conn, conn.transaction():
            assert await outbox.add_event(
                conn, topic=topic, kafka_key=key, event_key=event_key, payload={"k": key}
            )
        event_keys.append(event_key)
    return event_keys


async def _claim(
    pool: asyncpg.Pool, topic: str, lease: timedelta = LEASE, batch: int = 100
) -> list[outbox.OutboxRow]:
    return await outbox.claim_batch(
        pool, topic=topic, worker_id="test", batch_size=batch, processing_lease=lease
    )


async def _publish_all(pool: asyncpg.Pool, rows: list[outbox.OutboxRow]) -> None:
    for row in rows:
        assert row.claim_token is not None
        assert await outbox.mark_published(pool, row.id, row.claim_token)


async def _fail(
    pool: asyncpg.Pool, row: outbox.OutboxRow, *, backoff: timedelta, max_attempts: int = 10
) -> OutboxStatus | None:
    assert row.claim_token is not None
    return await outbox.mark_failed(
        pool, row.id, row.claim_token, error="broker down", max_attempts=max_attempts, retry_backoff=backoff
    )


async def test_add_event_is_idempotent_per_topic_and_event_key(pool: asyncpg.Pool, topic: str) -> None:
    async def add(on_topic: str) -> bool:
        return await outbox.add_event(
            pool, topic=on_topic, kafka_key="wf-1", event_key="workflow:wf-1:build:1", payload={"a": 1}
        )

    assert await add(topic) is True
    assert await add(topic) is False
    assert await add(f"{topic}-other") is True


async def test_a_pydantic_payload_is_published_as_its_json(pool: asyncpg.Pool, topic: str) -> None:
    event = _Event(event_key="e-1", workflow_id="wf-1", generation=2)
    await outbox.add_event(pool, topic=topic, kafka_key="wf-1", event_key=event.event_key, payload=event)
    [row] = await _claim(pool, topic)
    assert _Event.model_validate_json(row.kafka_value()) == event
    assert row.payload == event.model_dump(mode="json")
    assert (row.topic, row.kafka_key, row.event_key) == (topic, "wf-1", "e-1")
    assert row.status is OutboxStatus.PROCESSING
    assert row.attempts == 1
    assert row.claim_token is not None and row.claim_token.startswith("test:")


async def test_rows_of_one_key_are_published_in_creation_order(pool: asyncpg.Pool, topic: str) -> None:
    a_keys = await _add(pool, topic, "a", 3)
    b_keys = await _add(pool, topic, "b", 2)
    published: list[str] = []
    while rows := await _claim(pool, topic):
        published.extend(r.event_key for r in rows)
        await _publish_all(pool, rows)
    assert [k for k in published if k.startswith("a:")] == a_keys
    assert [k for k in published if k.startswith("b:")] == b_keys


async def test_at_most_one_row_per_key_is_in_flight(pool: asyncpg.Pool, topic: str) -> None:
    a_keys = await _add(pool, topic, "a", 3)
    b_keys = await _add(pool, topic, "b", 1)
    first = await _claim(pool, topic)
    assert [r.event_key for r in first] == [a_keys[0], b_keys[0]]
    assert await _claim(pool, topic) == []  # a[1] waits behind the in-flight a[0]
    await _publish_all(pool, first[:1])
    assert [r.event_key for r in await _claim(pool, topic)] == [a_keys[1]]


async def test_an_expired_processing_lease_is_claimed_again_and_the_old_claim_is_void(
    pool: asyncpg.Pool, topic: str
) -> None:
    await _add(pool, topic, "a")
    [first] = await _claim(pool, topic)
    assert await _claim(pool, topic, lease=LEASE) == []  # lease still held
    [again] = await _claim(pool, topic, lease=timedelta(0))  # every lease has expired
    assert again.id == first.id
    assert again.attempts == 2
    assert again.claim_token != first.claim_token
    assert first.claim_token is not None and again.claim_token is not None
    assert await outbox.mark_published(pool, first.id, first.claim_token) is False
    assert await _fail(pool, first, backoff=timedelta(0)) is None
    assert await outbox.mark_published(pool, again.id, again.claim_token) is True


async def test_a_failed_row_waits_for_its_backoff_and_blocks_its_key_meanwhile(
    pool: asyncpg.Pool, topic: str
) -> None:
    slow = await _add(pool, topic, "slow", 2)
    fast = await _add(pool, topic, "fast", 1)
    rows = {r.kafka_key: r for r in await _claim(pool, topic)}
    assert await _fail(pool, rows["slow"], backoff=timedelta(hours=1)) is OutboxStatus.FAILED
    assert await _fail(pool, rows["fast"], backoff=timedelta(0)) is OutboxStatus.FAILED
    retried = await _claim(pool, topic)
    assert [(r.event_key, r.attempts) for r in retried] == [(fast[0], 2)]
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT status::text, last_error, next_attempt_at - (now() AT TIME ZONE 'utc') AS wait "
            "FROM outbox_events WHERE topic = $1 AND event_key = $2",
            topic,
            slow[0],
        )
    assert row["status"] == "FAILED"
    assert row["last_error"] == "broker down"
    assert timedelta(minutes=59) < row["wait"] <= timedelta(hours=1)


async def test_a_row_is_dead_after_max_attempts_and_no_longer_blocks_its_key(
    pool: asyncpg.Pool, topic: str
) -> None:
    first, second = await _add(pool, topic, "a", 2)
    [row] = await _claim(pool, topic)
    assert await _fail(pool, row, backoff=timedelta(0), max_attempts=2) is OutboxStatus.FAILED
    [row] = await _claim(pool, topic)
    assert (row.event_key, row.attempts) == (first, 2)
    assert await _fail(pool, row, backoff=timedelta(0), max_attempts=2) is OutboxStatus.DEAD
    [after] = await _claim(pool, topic)
    assert after.event_key == second
    counts = (await outbox.backlog(pool))[topic]
    assert counts == {"PENDING": 0, "PROCESSING": 1, "FAILED": 0, "DEAD": 1}


async def test_redrive_requeues_dead_rows_by_topic_and_key(pool: asyncpg.Pool, topic: str) -> None:
    [dead_a] = await _add(pool, topic, "a")
    [dead_b] = await _add(pool, topic, "b")
    for row in await _claim(pool, topic):
        assert await _fail(pool, row, backoff=timedelta(0), max_attempts=1) is OutboxStatus.DEAD
    assert await _claim(pool, topic) == []
    assert await outbox.redrive_dead(pool, topic=topic, kafka_key="no-such-key") == 0
    assert await outbox.redrive_dead(pool, topic=topic, kafka_key="a") == 1
    [row] = await _claim(pool, topic)
    assert (row.event_key, row.attempts) == (dead_a, 1)
    assert await outbox.redrive_dead(pool, topic=topic) == 1
    [row] = await _claim(pool, topic)
    assert row.event_key == dead_b


async def test_redrive_without_filters_covers_every_topic(pool: asyncpg.Pool, topic: str) -> None:
    other = f"{topic}-other"
    await _add(pool, topic, "a")
    await _add(pool, other, "a")
    for t in (topic, other):
        [row] = await _claim(pool, t)
        await _fail(pool, row, backoff=timedelta(0), max_attempts=1)
    assert await outbox.redrive_dead(pool) >= 2
    assert len(await _claim(pool, topic)) == 1
    assert len(await _claim(pool, other)) == 1


async def test_cleanup_deletes_only_published_rows_older_than_the_retention(
    pool: asyncpg.Pool, topic: str
) -> None:
    old = await _add(pool, topic, "old", 3)  # one key: claimed and published one by one below
    recent = await _add(pool, topic, "recent", 1)
    dead = await _add(pool, topic, "dead", 1)
    while rows := await _claim(pool, topic):
        for row in rows:
            assert row.claim_token is not None
            if row.kafka_key == "dead":
                await _fail(pool, row, backoff=timedelta(0), max_attempts=1)
            else:
                await outbox.mark_published(pool, row.id, row.claim_token)
    await _add(pool, topic, "pending", 1)
    week_ago = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=8)
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE outbox_events SET published_at = $2 WHERE topic = $1 AND kafka_key IN ('old', 'dead')",
            topic,
            week_ago,
        )
    retention = timedelta(days=7)
    assert await outbox.cleanup_published(pool, retention=retention, batch_size=2) == 2
    assert await outbox.cleanup_published(pool, retention=retention, batch_size=2) == 1
    assert await outbox.cleanup_published(pool, retention=retention, batch_size=2) == 0
    async with pool.acquire() as conn:
        left = await conn.fetch("SELECT event_key FROM outbox_events WHERE topic = $1", topic)
    remaining = {r["event_key"] for r in left}
    assert remaining.isdisjoint(old)
    assert set(recent) | set(dead) <= remaining
    assert len(remaining) == 3


async def test_concurrent_claimers_never_share_a_row_or_a_key(pool: asyncpg.Pool, topic: str) -> None:
    keys = [f"k{i}" for i in range(40)]
    async with pool.acquire() as conn, conn.transaction():
        for _ in range(3):
            for key in keys:
                await outbox.add_event(conn, topic=topic, kafka_key=key, event_key=str(uuid7()), payload={})
    batches = await asyncio.gather(*(_claim(pool, topic, batch=15) for _ in range(5)))
    claimed = [row for batch in batches for row in batch]
    assert len(claimed) == len({r.id for r in claimed})  # no row twice
    assert len(claimed) == len({r.kafka_key for r in claimed})  # no key twice in flight
    assert len(claimed) == len(keys)  # 5 x 15 slots cover the 40 heads, nothing more


async def test_concurrent_relays_publish_every_row_once_in_key_order(pool: asyncpg.Pool, topic: str) -> None:
    expected: dict[str, list[str]] = {}
    async with pool.acquire() as conn, conn.transaction():
        for i in range(60):
            key = f"k{i % 6}"
            event_key = f"{i:03d}"
            expected.setdefault(key, []).append(event_key)
            await outbox.add_event(conn, topic=topic, kafka_key=key, event_key=event_key, payload={})
    published: list[tuple[str, str]] = []

    async def relay() -> None:
        idle = 0
        while idle < 3:
            rows = await _claim(pool, topic, batch=4)
            idle = 0 if rows else idle + 1
            for row in rows:
                published.append((row.kafka_key, row.event_key))
                assert row.claim_token is not None
                assert await outbox.mark_published(pool, row.id, row.claim_token)
            await asyncio.sleep(0)

    await asyncio.gather(*(relay() for _ in range(3)))
    assert len(published) == 60
    for key, event_keys in expected.items():
        assert [e for k, e in published if k == key] == event_keys


async def test_backlog_counts_unpublished_rows_per_topic_and_status(pool: asyncpg.Pool, topic: str) -> None:
    await _add(pool, topic, "a", 2)
    await _add(pool, topic, "b", 1)
    rows = await _claim(pool, topic)
    await _fail(pool, rows[1], backoff=timedelta(hours=1))
    await _publish_all(pool, rows[:1])
    assert (await outbox.backlog(pool))[topic] == {"PENDING": 1, "PROCESSING": 0, "FAILED": 1, "DEAD": 0}


async def test_a_batch_is_marked_published_in_one_call_except_rows_whose_claim_was_lost(
    pool: asyncpg.Pool, topic: str
) -> None:
    await _add(pool, topic, "a")
    await _add(pool, topic, "b")
    first = await _claim(pool, topic)
    [stolen] = [r for r in first if r.kafka_key == "b"]
    async with pool.acquire() as conn:
        await conn.execute("UPDATE outbox_events SET locked_by = 'other' WHERE id = $1", stolen.id)
    marked = await outbox.mark_published_many(pool, first)
    assert marked == {r.id for r in first if r.kafka_key == "a"}
    assert await outbox.mark_published_many(pool, []) == set()


async def test_events_added_together_are_inserted_once_and_published_in_the_order_given(
    pool: asyncpg.Pool, topic: str
) -> None:
    events = [outbox.NewEvent(topic=topic, kafka_key="wf", event_key=f"e{i}", payload={"i": i})
              for i in range(3)]
    model = _Event(event_key="m", workflow_id="wf-2", generation=4)
    async with pool.acquire() as conn, conn.transaction():
        assert await outbox.add_events(conn, [*events, events[0]]) == 3  # a repeat in the batch is skipped
        assert await outbox.add_events(conn, [events[1], outbox.NewEvent(
            topic=topic, kafka_key="wf-2", event_key="m", payload=model)]) == 1  # e1 exists already
    assert await outbox.add_events(pool, []) == 0
    order = []
    while rows := await _claim(pool, topic):
        order += [(row.kafka_key, row.payload) for row in rows]
        await _publish_all(pool, rows)
    assert [payload for key, payload in order if key == "wf"] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert ("wf-2", model.model_dump()) in order
