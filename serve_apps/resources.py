"""The I/O clients one replica owns: an asyncpg pool, a Redis client and the cache over it.

Created lazily on first use (so a replica starts even while PostgreSQL or Redis is briefly down,
and a failed connect is retried by the next request instead of crash-looping the replica), sized
from settings, and closed when the replica shuts down.
"""

from __future__ import annotations

import asyncio

import asyncpg
from redis.asyncio import Redis

from domain.config import Settings
from store.cache import Cache
from store.postgres import create_pool
from store.redis import create_redis


class ServiceResources:
    """Lazily-created PostgreSQL pool, Redis client and :class:`~store.cache.Cache` of one replica.

    ``name`` becomes the PostgreSQL ``application_name`` and the Redis client name, so
    ``pg_stat_activity`` and ``CLIENT LIST`` show which deployment holds a connection.
    ``pool_min``/``pool_max`` override ``POSTGRES_MIN_CONNS``/``POSTGRES_MAX_CONNS``.
    """

    def __init__(
        self, settings: Settings, *, name: str, pool_min: int | None = None, pool_max: int | None = None
    ) -> None:
        self.settings = settings
        self.name = name
        self._pool_min = pool_min
        self._pool_max = pool_max
        self._pool: asyncpg.Pool | None = None
        self._redis: Redis | None = None
        self._cache: Cache | None = None
        self._lock = asyncio.Lock()

    async def pool(self) -> asyncpg.Pool:
        """The replica's pool (created on first call)."""
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    self._pool = await create_pool(
                        self.settings.postgres,
                        min_size=self._pool_min,
                        max_size=self._pool_max,
                        application_name=self.name,
                    )
        return self._pool

    def redis(self) -> Redis:
        """The replica's Redis client (connections are opened on demand by its pool)."""
        if self._redis is None:
            self._redis = create_redis(self.settings.redis, client_name=self.name)
        return self._redis

    def cache(self) -> Cache:
        """The read-through cache over :meth:`redis`."""
        if self._cache is None:
            self._cache = Cache(self.redis())
        return self._cache

    async def close(self) -> None:
        """Close the pool and the Redis client (idempotent)."""
        pool, self._pool = self._pool, None
        redis, self._redis = self._redis, None
        self._cache = None
        if pool is not None:
            await pool.close()
        if redis is not None:
            await redis.aclose()
