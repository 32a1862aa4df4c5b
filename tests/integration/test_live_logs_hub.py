"""The live-log hub against the stack's real Redis: many viewers on one pub/sub connection,
reference-counted channels, a viewer that falls behind, and reconnecting after ``CLIENT KILL``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from uuid import UUID

import pytest
from redis.asyncio import Redis

from cluster.localstack import free_port
from domain.config import RedisConfig
from domain.enums import JobStatus, LogStream
from domain.errors import RateLimited, Unavailable
from domain.ids import uuid7
from domain.log_lines import LiveLogMessage, LogLine, live_channel
from serve_apps.live_logs import FELL_BEHIND_CODE, INTERRUPTED_CODE, LiveLogHub, Subscription
from store.redis import create_redis

#: Bound on every wait here (Redis answers in milliseconds; this only keeps a failure from hanging).
WAIT_S = 10.0


@pytest.fixture
def redis_cfg(stack: Any) -> RedisConfig:
    cfg: RedisConfig = stack.settings.redis
    return cfg


@pytest.fixture
async def redis(redis_cfg: RedisConfig) -> AsyncIterator[Redis]:
    client = create_redis(redis_cfg, client_name="test-live-publisher")
    try:
        yield client
    finally:
        await client.aclose()


def make_hub(cfg: RedisConfig, **options: Any) -> LiveLogHub:
    return LiveLogHub(cfg, client_name=f"test-live-{uuid7().hex[-12:]}", reconnect_min_s=0.05, **options)


@pytest.fixture
async def hub(redis_cfg: RedisConfig) -> AsyncIterator[LiveLogHub]:
    live = make_hub(redis_cfg)
    try:
        yield live
    finally:
        await live.close()


def line(job_id: UUID, seq: int) -> LiveLogMessage:
    return LiveLogMessage.log(
        job_id=job_id,
        workflow_id=job_id,
        event_id=f"log:{job_id}:stdout:{seq}",
        line=LogLine(stream=LogStream.STDOUT, sequence_num=seq, message=f"line {seq}",
                     timestamp=datetime(2025, 3, 1, 12, 0, 0)),
    )


async def publish(redis: Redis, message: LiveLogMessage) -> int:
    receivers: int = await redis.publish(live_channel(message.job_id), message.model_dump_json())
    return receivers


async def next_line(sub: Subscription) -> LiveLogMessage:
    message = await sub.next(WAIT_S)
    assert message is not None, "no message within the wait"
    return message


async def hub_connections(redis: Redis, hub: LiveLogHub) -> list[dict[str, Any]]:
    clients: list[dict[str, Any]] = await redis.client_list()
    return [c for c in clients if c.get("name") == hub.client_name]


async def subscribers(redis: Redis, job_id: UUID) -> int:
    [(_, count)] = await redis.pubsub_numsub(live_channel(job_id))
    return int(count)


async def eventually(check: Any) -> None:
    """Wait until ``check()`` holds: the state polled is the Redis server's (nothing to await)."""
    async with asyncio.timeout(WAIT_S):
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_many_viewers_of_several_jobs_share_one_subscriber_connection(
    hub: LiveLogHub, redis: Redis
) -> None:
    jobs = [uuid7(), uuid7()]
    viewers = {job: [await hub.subscribe(job) for _ in range(25)] for job in jobs}

    [connection] = await hub_connections(redis, hub)
    assert int(connection["sub"]) == 2  # one subscription per job, not per viewer
    assert hub.channels == {live_channel(job): 25 for job in jobs}
    for job in jobs:
        assert await publish(redis, line(job, 7)) == 1  # one receiving connection
    for job in jobs:
        for sub in viewers[job]:
            got = await next_line(sub)
            assert (got.job_id, got.sequence_num) == (job, 7)
            assert await sub.next(0) is None  # the other job's line went elsewhere
    for subs in viewers.values():
        for sub in subs:
            await sub.close()


async def test_a_returned_subscription_is_already_confirmed_by_redis(hub: LiveLogHub, redis: Redis) -> None:
    job = uuid7()
    sub = await hub.subscribe(job)
    # No wait: a line published right after subscribe() returned (what the caller's status
    # check races against) is received.
    assert await subscribers(redis, job) == 1
    await publish(redis, line(job, 0))
    assert (await next_line(sub)).sequence_num == 0
    await sub.close()


async def test_the_last_viewer_to_leave_unsubscribes_and_a_new_one_subscribes_again(
    hub: LiveLogHub, redis: Redis
) -> None:
    job = uuid7()
    first, second, third = [await hub.subscribe(job) for _ in range(3)]
    await first.close()
    await second.close()
    assert await subscribers(redis, job) == 1
    await publish(redis, line(job, 1))
    assert (await next_line(third)).sequence_num == 1

    await third.close()
    assert hub.channels == {}

    async def unsubscribed() -> bool:
        return await subscribers(redis, job) == 0

    await eventually(unsubscribed)
    again = await hub.subscribe(job)
    await publish(redis, line(job, 2))
    assert (await next_line(again)).sequence_num == 2
    await again.close()


async def test_a_viewer_that_falls_behind_reads_its_lines_then_an_error_while_others_get_all(
    redis_cfg: RedisConfig, redis: Redis
) -> None:
    hub = make_hub(redis_cfg, viewer_buffer=5)
    job = uuid7()
    try:
        slow, fast = await hub.subscribe(job), await hub.subscribe(job)
        # The fast viewer reads as lines come (in two bursts that each fit its buffer); the slow
        # one reads nothing until its buffer overflows.
        for burst in (range(5), range(5, 8)):
            for seq in burst:
                await publish(redis, line(job, seq))
            assert [(await next_line(fast)).sequence_num for _ in burst] == list(burst)

        assert slow.fell_behind and slow.buffered == 5
        assert [(await next_line(slow)).sequence_num for _ in range(5)] == list(range(5))
        with pytest.raises(RateLimited) as caught:
            await slow.next(WAIT_S)
        assert caught.value.code == FELL_BEHIND_CODE
        await publish(redis, line(job, 8))
        assert (await next_line(fast)).sequence_num == 8
    finally:
        await hub.close()


async def test_after_client_kill_viewers_learn_of_the_gap_and_the_hub_resubscribes(
    hub: LiveLogHub, redis: Redis
) -> None:
    job, other = uuid7(), uuid7()
    subs = [await hub.subscribe(job), await hub.subscribe(job), await hub.subscribe(other)]
    await publish(redis, line(job, 0))
    assert [(await next_line(sub)).sequence_num for sub in subs[:2]] == [0, 0]

    [connection] = await hub_connections(redis, hub)
    assert await redis.client_kill_filter(_id=connection["id"]) == 1

    for sub in subs:
        with pytest.raises(Unavailable) as caught:
            await sub.next(WAIT_S)
        assert caught.value.code == INTERRUPTED_CODE

    async def resubscribed() -> bool:
        return await subscribers(redis, job) == 1 and await subscribers(redis, other) == 1

    await eventually(resubscribed)
    assert hub.connections == 2
    [reconnected] = await hub_connections(redis, hub)
    assert reconnected["id"] != connection["id"] and int(reconnected["sub"]) == 2
    # The subscriptions carry on after the gap: lines published after the resubscription arrive.
    await publish(redis, line(job, 1))
    assert (await next_line(subs[1])).sequence_num == 1
    # A new viewer of a resubscribed channel is confirmed on the new connection.
    late = await hub.subscribe(other)
    end = LiveLogMessage.end(job_id=other, workflow_id=other, status=JobStatus.COMPLETED)
    await publish(redis, end)
    assert (await next_line(late)).type == "end"
    assert (await next_line(subs[2])).status is JobStatus.COMPLETED
    for sub in (*subs, late):
        await sub.close()


async def test_malformed_messages_are_skipped(hub: LiveLogHub, redis: Redis) -> None:
    job = uuid7()
    sub = await hub.subscribe(job)
    await redis.publish(live_channel(job), "not json")
    await publish(redis, line(job, 3))
    assert (await next_line(sub)).sequence_num == 3
    await sub.close()


async def test_subscribe_is_unavailable_when_redis_cannot_be_reached(redis_cfg: RedisConfig) -> None:
    nowhere = redis_cfg.model_copy(update={"host": "127.0.0.1", "port": free_port()})
    hub = make_hub(nowhere, confirm_timeout_s=0.5)
    try:
        with pytest.raises(Unavailable):
            await hub.subscribe(uuid7())
        assert hub.channels == {}
    finally:
        await hub.close()


async def test_closing_the_hub_interrupts_its_viewers(redis_cfg: RedisConfig, redis: Redis) -> None:
    hub = make_hub(redis_cfg)
    job = uuid7()
    sub = await hub.subscribe(job)
    await hub.close()
    with pytest.raises(Unavailable):
        await sub.next(WAIT_S)
    assert await hub_connections(redis, hub) == []
    with pytest.raises(Unavailable):
        await hub.subscribe(job)
