"""The asyncpg pool and one-off connections built from PostgresConfig, on a real PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from uuid import UUID

import pytest
from pydantic import BaseModel

from domain.config import PostgresConfig
from store.postgres import connect, create_pool, pool_saturation


class _Payload(BaseModel):
    id: UUID
    tags: list[str]


@pytest.fixture
def pg(stack) -> PostgresConfig:  # type: ignore[no-untyped-def]
    cfg: PostgresConfig = stack.settings.postgres
    return cfg


async def test_pool_is_sized_from_the_settings(pg: PostgresConfig) -> None:
    pool = await create_pool(pg.model_copy(update={"min_conns": 2, "max_conns": 3}))
    try:
        assert pool.get_min_size() == 2
        assert pool.get_max_size() == 3
        assert pool.get_size() == 2  # the minimum is opened up front
    finally:
        await pool.close()


async def test_minimum_above_the_maximum_is_clipped(pg: PostgresConfig) -> None:
    pool = await create_pool(pg, min_size=8, max_size=2)
    try:
        assert (pool.get_min_size(), pool.get_max_size()) == (2, 2)
    finally:
        await pool.close()


async def test_json_and_jsonb_round_trip_as_python_objects(pg: PostgresConfig) -> None:
    conn = await connect(pg)
    try:
        value = {"a": [1, 2, {"b": None}], "s": "x"}
        assert await conn.fetchval("SELECT $1::jsonb", value) == value
        assert await conn.fetchval("SELECT $1::json", value) == value
        model = _Payload(id=UUID(int=1), tags=["t"])
        assert await conn.fetchval("SELECT $1::jsonb", model) == {"id": str(UUID(int=1)), "tags": ["t"]}
        assert await conn.fetchval("SELECT $1::jsonb", "text") == "text"  # a str is a JSON string
    finally:
        await conn.close()


async def test_sessions_run_in_utc_and_carry_the_application_name(pg: PostgresConfig) -> None:
    pool = await create_pool(pg, min_size=1, max_size=1, application_name="chronoverse-test")
    try:
        assert await pool.fetchval("SHOW TimeZone") == "UTC"
        assert await pool.fetchval("SHOW application_name") == "chronoverse-test"
    finally:
        await pool.close()


async def test_saturation_is_the_checked_out_fraction_of_the_maximum(pg: PostgresConfig) -> None:
    pool = await create_pool(pg, min_size=1, max_size=4)
    try:
        assert pool_saturation(pool) == 0.0
        first = await pool.acquire()
        second = await pool.acquire()
        assert pool_saturation(pool) == 0.5
        await pool.release(first)
        await pool.release(second)
        assert pool_saturation(pool) == 0.0
    finally:
        await pool.close()


async def test_connections_older_than_max_conn_life_are_replaced(pg: PostgresConfig) -> None:
    # Long enough that the two back-to-back checkouts below fall inside it even on a loaded machine.
    life = timedelta(seconds=3)
    cfg = pg.model_copy(update={"max_conn_life": life})
    pool = await create_pool(cfg, min_size=1, max_size=1)
    try:
        first_pid = await pool.fetchval("SELECT pg_backend_pid()")
        assert await pool.fetchval("SELECT pg_backend_pid()") == first_pid  # reused while young
        await asyncio.sleep(life.total_seconds() + 0.2)
        await pool.fetchval("SELECT 1")  # this checkout finds it too old and expires it
        assert await pool.fetchval("SELECT pg_backend_pid()") != first_pid
    finally:
        await pool.close()


async def test_release_skips_the_reset_query_but_still_ends_an_open_transaction(pg: PostgresConfig) -> None:
    pool = await create_pool(pg, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            backend = await conn.fetchval("SELECT pg_backend_pid()")
            await conn.execute("BEGIN")
            await conn.execute("CREATE TEMP TABLE left_open (x int) ON COMMIT DROP")
        async with pool.acquire() as conn:
            # Same backend (no reconnect), and the abandoned transaction was rolled back.
            assert await conn.fetchval("SELECT pg_backend_pid()") == backend
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT to_regclass('pg_temp.left_open')") is None
            # Transaction-scoped advisory locks (the only kind pooled code takes) are gone at commit.
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(42)")
            assert await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0
            await conn.execute("SELECT 'last statement before release'")
        observer = await connect(pg)
        try:
            # The released backend's last statement is ours, not asyncpg's reset query.
            last = await observer.fetchval("SELECT query FROM pg_stat_activity WHERE pid = $1", backend)
            assert last == "SELECT 'last statement before release'"
        finally:
            await observer.close()
    finally:
        await pool.close()
