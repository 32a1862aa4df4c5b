"""The outbox relay against a real PostgreSQL and the real broker (reference §6.1, §12 items 38-39;
SPEC §5.3: DEAD rows do not block their key and can be re-driven).

Rows go to the ``analytics`` topic under fresh random keys, and each test uses its own database, so
what a test reads back from the broker is only what its own relay published.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from repository_support import MigratedDatabase

from actors.outbox_relay import OutboxRelay, relayed_topics
from cluster.backbone import redrive
from domain.config import OutboxRelayConfig, Settings
from domain.enums import OutboxStatus
from domain.ids import uuid7
from ingest.producer import EventProducer
from ingest.topics import ANALYTICS
from store import outbox

TOPIC = ANALYTICS


def relay_config(**overrides: Any) -> OutboxRelayConfig:
    base: dict[str, Any] = {
        "workflow_enabled": False,
        "jobs_enabled": False,
        "analytics_enabled": True,
        "retry_backoff": timedelta(milliseconds=200),
        "context_timeout": timedelta(seconds=5),
    }
    base.update(overrides)
    return OutboxRelayConfig(**base)


@pytest.fixture
def pool(isolated_database: MigratedDatabase) -> asyncpg.Pool:
    return isolated_database.pool


@pytest.fixture
def settings(stack, isolated_database: MigratedDatabase) -> Settings:  # type: ignore[no-untyped-def]
    return stack.settings.model_copy(update={"postgres": isolated_database.config})  # type: ignore[no-any-return]


@pytest.fixture
async def producer(settings: Settings) -> AsyncIterator[EventProducer]:
    async with EventProducer(settings.kafka, client_id="test-relay") as p:
        yield p


async def add(pool: asyncpg.Pool, key: str, n: int, *, start: int = 0) -> list[str]:
    """Add ``n`` rows for ``key`` (payload ``n`` = start, start+1, …), each in its own transaction."""
    keys = []
    for i in range(start, start + n):
        event_key = f"{key}:{i}"
        async with pool.acquire() as conn, conn.transaction():
            await outbox.add_event(conn, topic=TOPIC, kafka_key=key, event_key=event_key,
                                   payload={"event_key": event_key, "n": i})
        keys.append(event_key)
    return keys


async def read_back(settings: Settings, keys: set[str], expected: int, within_s: float = 20.0) -> list[Any]:
    """Every record of TOPIC whose key is in ``keys``, in partition order, once ``expected`` arrived."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(TOPIC, p) for p in consumer.partitions_for_topic(TOPIC) or {0}]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        found: list[Any] = []
        deadline = asyncio.get_running_loop().time() + within_s
        while len(found) < expected and asyncio.get_running_loop().time() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                found.extend(r for r in records if r.key is not None and r.key.decode() in keys)
        return found
    finally:
        await consumer.stop()


async def statuses(pool: asyncpg.Pool, key: str) -> list[str]:
    rows = await pool.fetch(
        "SELECT status::text AS s FROM outbox_events WHERE kafka_key = $1 ORDER BY created_at, id", key
    )
    return [r["s"] for r in rows]


async def drain(relay: OutboxRelay) -> None:
    while (await relay.relay_once(TOPIC)).claimed:
        pass


def test_only_enabled_topics_are_relayed() -> None:
    assert relayed_topics(OutboxRelayConfig()) == ["workflows", "jobs", "analytics"]
    assert relayed_topics(OutboxRelayConfig(jobs_enabled=False)) == ["workflows", "analytics"]


async def test_rows_are_published_in_order_per_key(
    pool: asyncpg.Pool, producer: EventProducer, settings: Settings
) -> None:
    keys = [str(uuid7()) for _ in range(3)]
    for round_ in range(4):  # interleave keys so creation order mixes them
        for key in keys:
            await add(pool, key, 1, start=round_)
    relay = OutboxRelay(relay_config(), pool, producer)

    first = await relay.relay_once(TOPIC)
    assert first.claimed == 3  # one row per key in flight, never two
    await drain(relay)

    records = await read_back(settings, set(keys), expected=12)
    assert len(records) == 12
    for key in keys:
        assert [json.loads(r.value)["n"] for r in records if r.key.decode() == key] == [0, 1, 2, 3]
        assert await statuses(pool, key) == ["PUBLISHED"] * 4


async def test_rows_held_by_a_relay_that_died_are_published_once_its_connection_is_gone(
    pool: asyncpg.Pool, producer: EventProducer, settings: Settings
) -> None:
    key = str(uuid7())
    await add(pool, key, 1)
    # A relay that locked the row and died before settling it: its transaction stays open until
    # PostgreSQL sees the connection end.
    crashed = await pool.acquire()
    try:
        await crashed.execute("BEGIN")
        assert len(await crashed.fetch(outbox.LOCK_DUE, TOPIC, 10, timedelta(seconds=30))) == 1
        relay = OutboxRelay(relay_config(), pool, producer)
        assert (await relay.relay_once(TOPIC)).claimed == 0  # held by the other relay
        assert await pool.fetchval("SELECT pg_terminate_backend($1)", crashed.get_server_pid())

        async def published() -> bool:
            return (await relay.relay_once(TOPIC)).published == 1

        deadline = asyncio.get_running_loop().time() + 15
        while not await published():
            assert asyncio.get_running_loop().time() < deadline, "the dead relay's row was not released"
            await asyncio.sleep(0.05)
    finally:
        await pool.release(crashed)
    assert await statuses(pool, key) == ["PUBLISHED"]
    assert len(await read_back(settings, {key}, expected=1)) == 1


async def test_failed_publish_backs_off_then_goes_dead_without_blocking_its_key(
    pool: asyncpg.Pool, producer: EventProducer, settings: Settings
) -> None:
    key = str(uuid7())
    await add(pool, key, 1)
    closed = EventProducer(settings.kafka, client_id="test-closed")
    await closed.start()
    await closed.stop()  # a producer that can no longer send: every publish fails for real
    cfg = relay_config(max_attempts=2, retry_backoff=timedelta(seconds=1))
    failing = OutboxRelay(cfg, pool, closed)

    first = await failing.relay_once(TOPIC)
    assert first.failed == 1
    row = await pool.fetchrow(
        """SELECT status::text AS status, attempts, last_error,
                  next_attempt_at - (now() AT TIME ZONE 'utc') AS wait
             FROM outbox_events WHERE kafka_key = $1""", key)
    assert row["status"] == "FAILED" and row["attempts"] == 1 and row["last_error"]
    assert timedelta(milliseconds=500) < row["wait"] <= timedelta(seconds=1)
    assert (await failing.relay_once(TOPIC)).claimed == 0  # not due before the backoff

    await asyncio.sleep(1.1)
    second = await failing.relay_once(TOPIC)
    assert second.dead == 1
    assert await statuses(pool, key) == ["DEAD"]

    # A later row of the same key is not blocked by the DEAD one.
    later = str(uuid7())
    await outbox.add_event(pool, topic=TOPIC, kafka_key=key, event_key=later, payload={"event_key": later})
    working = OutboxRelay(cfg, pool, producer)
    await drain(working)
    assert await statuses(pool, key) == ["DEAD", "PUBLISHED"]
    backlog = await working.refresh_backlog()
    assert backlog[TOPIC]["DEAD"] == 1

    # Redrive re-queues it (only that key), and it is published.
    assert await redrive(settings, TOPIC, str(uuid7())) == 0
    assert await redrive(settings, TOPIC, key) == 1
    await drain(working)
    assert await statuses(pool, key) == ["PUBLISHED", "PUBLISHED"]
    published = await read_back(settings, {key}, expected=2)
    assert sorted(json.loads(r.value)["event_key"] for r in published) == sorted([f"{key}:0", later])


async def test_published_rows_past_retention_are_cleaned_up(
    pool: asyncpg.Pool, producer: EventProducer
) -> None:
    key = str(uuid7())
    await add(pool, key, 3)
    cfg = relay_config(published_retention=timedelta(hours=1), cleanup_batch_size=2)
    relay = OutboxRelay(cfg, pool, producer)
    await drain(relay)
    assert await relay.cleanup_once() == 0  # too young
    await pool.execute(
        "UPDATE outbox_events SET published_at = published_at - interval '2 hours' WHERE kafka_key = $1", key
    )
    dead_key = str(uuid7())
    await add(pool, dead_key, 1)
    await pool.execute("UPDATE outbox_events SET status = 'DEAD' WHERE kafka_key = $1", dead_key)

    assert await relay.cleanup_once() == 3  # in batches of 2
    assert await statuses(pool, key) == []
    assert await statuses(pool, dead_key) == ["DEAD"]  # DEAD rows are kept


async def test_a_new_row_is_published_on_notify_not_on_the_poll(
    isolated_database: MigratedDatabase, producer: EventProducer, settings: Settings
) -> None:
    cfg, pool = isolated_database.config, isolated_database.pool
    relay = OutboxRelay(relay_config(poll_interval=timedelta(seconds=60)), pool, producer, listen=cfg)
    relay.start()
    try:
        for _ in range(200):
            if relay.stats().listening:
                break
            await asyncio.sleep(0.05)
        assert relay.stats().listening
        await asyncio.sleep(0.3)  # the loop has found nothing and sleeps (up to 60 s)
        key = str(uuid7())
        await add(pool, key, 2)
        deadline = asyncio.get_running_loop().time() + 15
        while await statuses(pool, key) != ["PUBLISHED", "PUBLISHED"]:
            assert asyncio.get_running_loop().time() < deadline, "not published after a NOTIFY"
            await asyncio.sleep(0.05)
        assert relay.stats().published == 2
    finally:
        await relay.stop()


async def test_concurrent_relays_publish_each_row_once(
    pool: asyncpg.Pool, producer: EventProducer, settings: Settings
) -> None:
    keys = [str(uuid7()) for _ in range(10)]
    for key in keys:
        await add(pool, key, 3)
    relays = [OutboxRelay(relay_config(), pool, producer, name=f"relay-{i}") for i in range(3)]

    async def run(relay: OutboxRelay) -> None:
        for _ in range(50):
            if not (await relay.relay_once(TOPIC)).claimed:
                await asyncio.sleep(0.02)
            if await pool.fetchval("SELECT count(*) FROM outbox_events WHERE status <> 'PUBLISHED'") == 0:
                return

    await asyncio.gather(*(run(r) for r in relays))
    records = await read_back(settings, set(keys), expected=30)
    assert len(records) == 30
    assert sum(r.stats().published for r in relays) == 30
    for key in keys:
        assert [json.loads(r.value)["n"] for r in records if r.key.decode() == key] == [0, 1, 2]


async def test_rows_of_disabled_topics_stay_pending(pool: asyncpg.Pool, producer: EventProducer) -> None:
    key = str(uuid7())
    await outbox.add_event(pool, topic="workflows", kafka_key=key, event_key=key, payload={"event_key": key})
    relay = OutboxRelay(relay_config(), pool, producer)
    assert relay.topics == [TOPIC]
    await drain(relay)
    assert await statuses(pool, key) == [OutboxStatus.PENDING.value]
