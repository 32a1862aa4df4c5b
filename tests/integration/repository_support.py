"""Shared fixtures and builders of the integration tests that work on the database.

:func:`migrated_database` makes a fresh migrated database with a pool (``conftest.py`` turns it
into the ``module_database`` and ``isolated_database`` fixtures).  Each test module imports the
fixture functions it uses (``from repository_support import pool_fixture``); they register as
``pool`` (the pool of the module's ``module_database``), ``redis`` and ``cache`` (a Redis client
and the typed cache).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from domain.config import PostgresConfig
from domain.enums import WorkflowBuildStatus
from domain.ids import uuid7
from domain.models import User, WorkflowDraft
from domain.workflow_spec import prepare_create
from store import users, workflows
from store.cache import Cache
from store.migrate import migrate
from store.postgres import create_pool
from store.redis import create_redis

HEARTBEAT_PAYLOAD = json.dumps({"endpoint": "http://127.0.0.1:9/health"})
CONTAINER_PAYLOAD = json.dumps({"image": "local/busybox:1", "cmd": ["echo", "hi"]})


#: Enough for the busiest test (a worker's claim, renewals and settle at once, plus the test's own).
POOL_MAX_SIZE = 8


@dataclass(frozen=True)
class MigratedDatabase:
    """A fresh database with every migration applied, and a pool on it."""

    config: PostgresConfig
    pool: asyncpg.Pool


@contextlib.asynccontextmanager
async def migrated_database(stack: Any) -> AsyncIterator[MigratedDatabase]:
    """Create a database on the stack's server, migrate it and open a pool (closed on exit)."""
    config: PostgresConfig = stack.create_database()
    await migrate(config)
    pool = await create_pool(config, min_size=1, max_size=POOL_MAX_SIZE)
    try:
        yield MigratedDatabase(config=config, pool=pool)
    finally:
        await pool.close()


@pytest.fixture(scope="module", name="pool")
def pool_fixture(module_database: MigratedDatabase) -> asyncpg.Pool:
    """The pool of the module's own migrated database."""
    return module_database.pool


@pytest.fixture(scope="module", name="redis")
async def redis_fixture(stack: Any) -> AsyncIterator[Redis]:
    client = create_redis(stack.settings.redis)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="module", name="cache")
def cache_fixture(redis: Redis) -> Cache:
    return Cache(redis)


async def new_user(pool: asyncpg.Pool) -> User:
    """A fresh user with a unique e-mail (the hash is a placeholder: these tests never log in)."""
    return await users.create(pool, email=f"user-{uuid7()}@example.com", password_hash="$2b$04$placeholder")


def draft(**overrides: Any) -> WorkflowDraft:
    fields: dict[str, Any] = {
        "name": "probe",
        "payload": CONTAINER_PAYLOAD,
        "kind": "CONTAINER",
        "interval": 5,
        "max_consecutive_job_failures_allowed": 3,
    }
    fields.update(overrides)
    return prepare_create(**fields)


async def new_workflow(
    pool: asyncpg.Pool, user: User, *, cache: Cache | None = None, built: bool = False, **overrides: Any
) -> Any:
    """Create a workflow (optionally marked COMPLETED, as its build would) and return it."""
    workflow_id = await workflows.create(
        pool, user_id=user.id, draft=draft(**overrides), idempotency_key=f"key-{uuid7()}", cache=cache
    )
    if built:
        await workflows.update_build_status(pool, workflow_id, WorkflowBuildStatus.COMPLETED, 1, cache=cache)
    return await workflows.get(pool, user.id, workflow_id)
