"""The project's Redis client and memory policy against a real Redis server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from domain.config import RedisConfig
from domain.ids import uuid7
from store.redis import apply_memory_policy, create_redis


@pytest.fixture
def redis_cfg(stack) -> RedisConfig:  # type: ignore[no-untyped-def]
    cfg: RedisConfig = stack.settings.redis
    return cfg


@pytest.fixture
async def client(redis_cfg: RedisConfig) -> AsyncIterator[Redis]:
    c = create_redis(redis_cfg)
    try:
        yield c
    finally:
        await c.aclose()


async def test_ping_and_values_come_back_as_text(client: Redis) -> None:
    assert await client.ping() is True
    key = f"test:{uuid7()}"
    await client.set(key, '{"a": 1}', ex=60)
    assert await client.get(key) == '{"a": 1}'
    await client.delete(key)


async def test_memory_policy_is_applied_from_the_settings(client: Redis, redis_cfg: RedisConfig) -> None:
    before = await client.config_get("maxmemory*")
    wanted = redis_cfg.model_copy(
        update={"max_memory": "64mb", "eviction_policy": "volatile-lru", "eviction_policy_sample_size": 7}
    )
    try:
        assert await apply_memory_policy(client, wanted) is True
        got = await client.config_get("maxmemory*")
        assert got["maxmemory"] == str(64 * 1024 * 1024)
        assert got["maxmemory-policy"] == "volatile-lru"
        assert got["maxmemory-samples"] == "7"
    finally:
        for name in ("maxmemory", "maxmemory-policy", "maxmemory-samples"):
            await client.config_set(name, str(before[name]))


async def test_memory_policy_is_skipped_where_config_is_forbidden(
    client: Redis, redis_cfg: RedisConfig
) -> None:
    # A user without the CONFIG command stands in for managed Redis services that disable it.
    user, password = f"no-config-{uuid7()}", "secret"
    await client.acl_setuser(
        user, enabled=True, passwords=[f"+{password}"], keys=["*"], commands=["+@all", "-config"]
    )
    limited = Redis(
        host=redis_cfg.host, port=redis_cfg.port, username=user, password=password, decode_responses=True
    )
    if redis_cfg.host.startswith("/"):
        limited = Redis(
            unix_socket_path=redis_cfg.host, username=user, password=password, decode_responses=True
        )
    before = await client.config_get("maxmemory-policy")
    try:
        assert (
            await apply_memory_policy(limited, redis_cfg.model_copy(update={"eviction_policy": "noeviction"}))
            is False
        )
        assert await client.config_get("maxmemory-policy") == before
    finally:
        await limited.aclose()
        await client.acl_deluser(user)


async def test_callers_wait_for_a_free_connection_instead_of_failing(
    client: Redis, redis_cfg: RedisConfig
) -> None:
    small = create_redis(redis_cfg.model_copy(update={"pool_size": 2}))
    key = f"test:{uuid7()}"
    try:
        # Five blocking pops on a two-connection pool: three must queue for a connection.
        pops = [asyncio.ensure_future(small.blpop([key], timeout=4)) for _ in range(5)]
        await asyncio.sleep(0)
        for i in range(5):
            await client.rpush(key, str(i))
        results = await asyncio.gather(*pops)
        assert None not in results  # none timed out
        assert sorted(str(r[1]) for r in results if r is not None) == ["0", "1", "2", "3", "4"]
    finally:
        await small.aclose()
