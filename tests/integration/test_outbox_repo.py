"""The outbox repository on a real PostgreSQL (reference §6.1 with SPEC §5.3's DEAD change).

Each test uses its own topic, so tests never claim each other's rows.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from pydantic import BaseModel
from repository_support import pool_fixture  # noqa: F401  (the module's migrated database)

from domain.enums import OutboxStatus
from domain.ids import uuid7
from store import outbox

HOLD = timedelta(seconds=30)


class _Event(BaseModel):
    event_key: str
    workflow_id: str
    generation: int


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


def _claim(pool: asyncpg.Pool, topic: str, batch: int = 100,
           hold_limit: timedelta = HOLD) -> AbstractAsyncContextManager[outbox.Claim]:
    return outbox.claim(pool, topic=topic, batch_size=batch, hold_limit=hold_limit)


async def _round(
    pool: asyncpg.Pool, topic: str, *, fail: Callable[[outbox.OutboxRow], bool] = lambda _: False,
    backoff: timedelta = timedelta(0), max_attempts: int = 10, batch: int = 100,
) -> list[tuple[outbox.OutboxRow, OutboxStatus]]:
    """One relay round: claim, then settle every row (failed where ``fail`` says so, else published)."""
    async with _claim(pool, topic, batch) as held:
        failures = {row.id: "broker down" for row in held.rows if fail(row)}
        settled = await held.settle(failures, max_attempts=max_attempts, retry_backoff=backoff)
    assert set(settled) == {row.id for row in held.rows}
    return [(row, settled[row.id]) for row in held.rows]


async def _publish_all(pool: asyncpg.Pool, topic: str, batch: int = 100) -> list[list[outbox.OutboxRow]]:
    """Relay rounds until nothing is due; the rows of each round."""
    rounds = []
    while settled := await _round(pool, topic, batch=batch):
        assert {status for _, status in settled} == {OutboxStatus.PUBLISHED}
        rounds.append([row for row, _ in settled])
    return rounds


async def _row(pool: asyncpg.Pool, topic: str, event_key: str) -> asyncpg.Record:
    return await pool.fetchrow(
        "SELECT status::text AS status, attempts, last_error, published_at, "
        "next_attempt_at - (now() AT TIME ZONE 'utc') AS wait "
        "FROM outbox_events WHERE topic = $1 AND event_key = $2", topic, event_key)


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
    async with _claim(pool, topic) as held:
        [row] = held.rows
        assert _Event.model_validate_json(row.kafka_value()) == event
        assert row.payload == event.model_dump(mode="json")
        assert (row.topic, row.kafka_key, row.event_key) == (topic, "wf-1", "e-1")
        assert (row.status, row.attempts) == (OutboxStatus.PENDING, 0)  # a claim writes nothing
        assert await held.settle({}, max_attempts=10, retry_backoff=timedelta(0)) == {
            row.id: OutboxStatus.PUBLISHED}
    stored = await _row(pool, topic, "e-1")
    assert (stored["status"], stored["attempts"], stored["last_error"]) == ("PUBLISHED", 1, None)
    assert stored["published_at"] is not None


async def test_rows_of_one_key_are_published_in_creation_order(pool: asyncpg.Pool, topic: str) -> None:
    a_keys = await _add(pool, topic, "a", 3)
    b_keys = await _add(pool, topic, "b", 2)
    published = [row.event_key for rows in await _publish_all(pool, topic) for row in rows]
    assert [k for k in published if k.startswith("a:")] == a_keys
    assert [k for k in published if k.startswith("b:")] == b_keys


async def test_at_most_one_row_per_key_is_in_flight(pool: asyncpg.Pool, topic: str) -> None:
    a_keys = await _add(pool, topic, "a", 3)
    b_keys = await _add(pool, topic, "b", 1)
    async with _claim(pool, topic) as first:
        assert [r.event_key for r in first.rows] == [a_keys[0], b_keys[0]]
        # While the first claim holds a[0], a[1] waits behind it and nothing else is due.
        async with _claim(pool, topic) as second:
            assert second.rows == []
        c_keys = await _add(pool, topic, "c", 1)
        async with _claim(pool, topic) as third:  # a new key is free
            assert [r.event_key for r in third.rows] == c_keys
            await third.settle({}, max_attempts=10, retry_backoff=timedelta(0))
        await first.settle({}, max_attempts=10, retry_backoff=timedelta(0))
    async with _claim(pool, topic) as after:
        assert [r.event_key for r in after.rows] == [a_keys[1]]


async def test_a_claim_says_more_may_be_due_when_full_or_when_a_key_has_a_later_row(
    pool: asyncpg.Pool, topic: str
) -> None:
    await _add(pool, topic, "a", 2)
    await _add(pool, topic, "b", 1)
    async with _claim(pool, topic) as held:  # a[1] waits behind a[0]
        assert (len(held.rows), held.more) == (2, True)
        await held.settle({}, max_attempts=10, retry_backoff=timedelta(0))
    async with _claim(pool, topic) as held:  # a[1] is the last of its key
        assert (len(held.rows), held.more) == (1, False)
        await held.settle({}, max_attempts=10, retry_backoff=timedelta(0))
    await _add(pool, topic, "c", 1)
    await _add(pool, topic, "d", 1)
    async with _claim(pool, topic, batch=1) as held:  # full: there may be more
        assert (len(held.rows), held.more) == (1, True)
    async with _claim(pool, topic, batch=5) as held:
        assert (len(held.rows), held.more) == (2, False)


async def test_a_claim_that_ends_without_settling_leaves_its_rows_due_and_unchanged(
    pool: asyncpg.Pool, topic: str
) -> None:
    [event_key] = await _add(pool, topic, "a")
    with pytest.raises(RuntimeError, match="relay crashed"):
        async with _claim(pool, topic) as held:
            assert len(held.rows) == 1
            raise RuntimeError("relay crashed while publishing")
    async with _claim(pool, topic) as held:  # a claim left without settling changes nothing either
        assert [r.event_key for r in held.rows] == [event_key]
    async with _claim(pool, topic) as held:
        assert [(r.event_key, r.attempts, r.status) for r in held.rows] == [
            (event_key, 0, OutboxStatus.PENDING)]


async def test_a_claim_held_past_its_hold_limit_is_ended_and_its_rows_go_to_another_relay(
    pool: asyncpg.Pool, topic: str
) -> None:
    [event_key] = await _add(pool, topic, "a")
    # PostgreSQL ends the idle transaction and its session: settling fails (asyncpg reports a
    # server-side termination or, once it saw the socket close, a released connection).
    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError)):
        async with _claim(pool, topic, hold_limit=timedelta(milliseconds=300)) as hung:
            assert len(hung.rows) == 1
            await asyncio.sleep(1.0)  # a relay stuck between claim and settlement
            await hung.settle({}, max_attempts=10, retry_backoff=timedelta(0))
    [(row, status)] = await _round(pool, topic)
    assert (row.event_key, status) == (event_key, OutboxStatus.PUBLISHED)


async def test_a_row_left_processing_by_a_lease_claim_is_due_once_the_lease_ran_out(
    pool: asyncpg.Pool, topic: str
) -> None:
    fresh, stale = await _add(pool, topic, "fresh"), await _add(pool, topic, "stale")
    await pool.execute(
        "UPDATE outbox_events SET status = 'PROCESSING', attempts = 1, locked_by = 'old-relay', "
        "locked_at = (now() AT TIME ZONE 'utc') - CASE WHEN kafka_key = 'stale' THEN interval '1 hour' "
        "ELSE interval '0' END WHERE topic = $1", topic)
    [(row, status)] = await _round(pool, topic)
    assert (row.event_key, row.attempts, status) == (stale[0], 1, OutboxStatus.PUBLISHED)
    stored = await _row(pool, topic, stale[0])
    assert stored["attempts"] == 2
    assert (await _row(pool, topic, fresh[0]))["status"] == "PROCESSING"


async def test_a_failed_row_waits_for_its_backoff_and_blocks_its_key_meanwhile(
    pool: asyncpg.Pool, topic: str
) -> None:
    slow = await _add(pool, topic, "slow", 2)
    fast = await _add(pool, topic, "fast", 1)
    settled = await _round(pool, topic, fail=lambda _: True, backoff=timedelta(hours=1))
    assert {(r.event_key, s) for r, s in settled} == {
        (slow[0], OutboxStatus.FAILED), (fast[0], OutboxStatus.FAILED)}
    assert await _round(pool, topic) == []  # neither is due, and slow[1] waits behind slow[0]
    row = await _row(pool, topic, slow[0])
    assert (row["status"], row["attempts"], row["last_error"]) == ("FAILED", 1, "broker down")
    assert timedelta(minutes=59) < row["wait"] <= timedelta(hours=1)
    # The backoff of one row has passed: only it is retried.
    await pool.execute("UPDATE outbox_events SET next_attempt_at = (now() AT TIME ZONE 'utc') "
                       "WHERE topic = $1 AND event_key = $2", topic, fast[0])
    retried = await _round(pool, topic)
    assert [(r.event_key, r.attempts, s) for r, s in retried] == [(fast[0], 1, OutboxStatus.PUBLISHED)]


async def test_a_row_is_dead_after_max_attempts_and_no_longer_blocks_its_key(
    pool: asyncpg.Pool, topic: str
) -> None:
    first, second = await _add(pool, topic, "a", 2)
    [(_, status)] = await _round(pool, topic, fail=lambda _: True, max_attempts=2)
    assert status is OutboxStatus.FAILED
    [(row, status)] = await _round(pool, topic, fail=lambda _: True, max_attempts=2)
    assert (row.event_key, row.attempts, status) == (first, 1, OutboxStatus.DEAD)
    async with _claim(pool, topic) as held:
        assert [r.event_key for r in held.rows] == [second]
        counts = (await outbox.backlog(pool))[topic]
    assert counts == {"PENDING": 1, "PROCESSING": 0, "FAILED": 0, "DEAD": 1}


async def test_redrive_requeues_dead_rows_by_topic_and_key(pool: asyncpg.Pool, topic: str) -> None:
    [dead_a] = await _add(pool, topic, "a")
    [dead_b] = await _add(pool, topic, "b")
    settled = await _round(pool, topic, fail=lambda _: True, max_attempts=1)
    assert {status for _, status in settled} == {OutboxStatus.DEAD}
    assert await _round(pool, topic) == []
    assert await outbox.redrive_dead(pool, topic=topic, kafka_key="no-such-key") == 0
    assert await outbox.redrive_dead(pool, topic=topic, kafka_key="a") == 1
    [(row, _)] = await _round(pool, topic)
    assert (row.event_key, row.attempts) == (dead_a, 0)
    assert await outbox.redrive_dead(pool, topic=topic) == 1
    [(row, _)] = await _round(pool, topic)
    assert row.event_key == dead_b


async def test_redrive_without_filters_covers_every_topic(pool: asyncpg.Pool, topic: str) -> None:
    other = f"{topic}-other"
    await _add(pool, topic, "a")
    await _add(pool, other, "a")
    for t in (topic, other):
        await _round(pool, t, fail=lambda _: True, max_attempts=1)
    assert await outbox.redrive_dead(pool) >= 2
    assert len(await _round(pool, topic)) == 1
    assert len(await _round(pool, other)) == 1


async def test_cleanup_deletes_only_published_rows_older_than_the_retention(
    pool: asyncpg.Pool, topic: str
) -> None:
    old = await _add(pool, topic, "old", 3)  # one key: published one by one, round by round
    recent = await _add(pool, topic, "recent", 1)
    dead = await _add(pool, topic, "dead", 1)
    while await _round(pool, topic, fail=lambda row: row.kafka_key == "dead", max_attempts=1):
        pass
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


async def test_claims_held_at_once_never_share_a_row_or_a_key(pool: asyncpg.Pool, topic: str) -> None:
    keys = [f"k{i}" for i in range(40)]
    async with pool.acquire() as conn, conn.transaction():
        for _ in range(3):
            for key in keys:
                await outbox.add_event(conn, topic=topic, kafka_key=key, event_key=str(uuid7()), payload={})
    async with contextlib.AsyncExitStack() as stack:
        claims = [await stack.enter_async_context(_claim(pool, topic, batch=15)) for _ in range(4)]
        claimed = [row for held in claims for row in held.rows]
    assert len(claimed) == len({r.id for r in claimed})  # no row twice
    assert len(claimed) == len({r.kafka_key for r in claimed})  # no key twice in flight
    assert len(claimed) == len(keys)  # 4 x 15 slots cover the 40 heads, nothing more


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
            async with _claim(pool, topic, batch=4) as held:
                idle = 0 if held.rows else idle + 1
                published.extend((row.kafka_key, row.event_key) for row in held.rows)
                await asyncio.sleep(0)  # let the other relays claim while these rows are held
                await held.settle({}, max_attempts=10, retry_backoff=timedelta(0))
            await asyncio.sleep(0)

    await asyncio.gather(*(relay() for _ in range(3)))
    assert len(published) == 60
    for key, event_keys in expected.items():
        assert [e for k, e in published if k == key] == event_keys


async def test_backlog_counts_unpublished_rows_per_topic_and_status(pool: asyncpg.Pool, topic: str) -> None:
    await _add(pool, topic, "a", 2)
    await _add(pool, topic, "b", 1)
    settled = await _round(pool, topic, fail=lambda row: row.kafka_key == "b", backoff=timedelta(hours=1))
    assert sorted(s for _, s in settled) == sorted([OutboxStatus.PUBLISHED, OutboxStatus.FAILED])
    assert (await outbox.backlog(pool))[topic] == {"PENDING": 1, "PROCESSING": 0, "FAILED": 1, "DEAD": 0}


async def test_settling_an_empty_claim_writes_nothing(pool: asyncpg.Pool, topic: str) -> None:
    async with _claim(pool, topic) as held:
        assert held.rows == []
        assert await held.settle({}, max_attempts=1, retry_backoff=timedelta(0)) == {}


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
    order = [(row.kafka_key, row.payload) for rows in await _publish_all(pool, topic) for row in rows]
    assert [payload for key, payload in order if key == "wf"] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert ("wf-2", model.model_dump()) in order
