"""Shared fixtures and builders of the repository tests (``test_repositories_*.py``).

Each test module imports the fixture functions it uses (``from repository_support import
pool_fixture``); they register as ``pool``, ``redis`` and ``cache``: one migrated database per
module, a pool, a Redis client and the typed cache.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
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


@pytest.fixture(scope="module", name="pool")
async def pool_fixture(stack: Any) -> AsyncIterator[asyncpg.Pool]:
    cfg: PostgresConfig = stack.create_database()
    await migrate(cfg)
    p = await create_pool(cfg, min_size=1, max_size=8)
    try:
        yield p
    finally:
        await p.close()


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
