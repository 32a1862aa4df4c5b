"""Consumer-side dedupe rows on a real PostgreSQL (reference §6.6)."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
from repository_support import pool_fixture  # noqa: F401  (fixtures register by import)

from domain.ids import uuid7
from store import processed_events


async def test_an_event_key_is_new_once_per_consumer(pool: asyncpg.Pool) -> None:
    key = f"analytics:job:{uuid7()}:completed"
    assert await processed_events.mark_processed(pool, "analytics-processor", key) is True
    assert await processed_events.mark_processed(pool, "analytics-processor", key) is False
    assert await processed_events.mark_processed(pool, "joblogs-processor:analytics", key) is True


async def test_many_keys_are_marked_in_one_call_and_only_the_new_ones_come_back(pool: asyncpg.Pool) -> None:
    consumer = f"test-{uuid7()}"
    assert await processed_events.mark_processed(pool, consumer, "b") is True
    fresh = await processed_events.mark_processed_many(pool, consumer, ["a", "b", "c", "a"])
    assert fresh == ["a", "c"]  # given order, each once; "b" was already recorded
    assert await processed_events.mark_processed_many(pool, consumer, ["a", "b", "c"]) == []
    assert await processed_events.mark_processed_many(pool, consumer, []) == []


async def test_a_rolled_back_effect_leaves_the_key_unprocessed(pool: asyncpg.Pool) -> None:
    key = str(uuid7())
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        assert await processed_events.mark_processed(conn, "analytics-processor", key) is True
        await tx.rollback()
    assert await processed_events.mark_processed(pool, "analytics-processor", key) is True


async def test_cleanup_deletes_rows_older_than_the_retention_in_batches(pool: asyncpg.Pool) -> None:
    consumer = f"test-{uuid7()}"
    for i in range(5):
        await processed_events.mark_processed(pool, consumer, f"e{i}")
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE processed_events SET created_at = created_at - interval '15 days' "
            "WHERE consumer = $1 AND event_key IN ('e0', 'e1', 'e2')",
            consumer,
        )
    retention = timedelta(hours=336)
    assert await processed_events.cleanup(pool, retention=retention, batch_size=2) == 2
    assert await processed_events.cleanup(pool, retention=retention, batch_size=2) == 1
    assert await processed_events.cleanup(pool, retention=retention, batch_size=2) == 0
    async with pool.acquire() as conn:
        left = await conn.fetch("SELECT event_key FROM processed_events WHERE consumer = $1", consumer)
    assert sorted(r["event_key"] for r in left) == ["e3", "e4"]
