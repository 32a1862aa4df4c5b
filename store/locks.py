"""Redis token locks: ``SET NX PX`` with a random token, compare-and-PEXPIRE renewal and
compare-and-DEL release (reference §3.4, §6.4).

Only the holder of the token can renew or release, so a lock that expired and was taken by somebody
else is never extended or deleted by the former holder.  :class:`HeldLock` keeps a lock alive while
work runs (renewing every TTL/3, at least every second) and reports a lost lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from datetime import timedelta

from redis.asyncio import Redis

from domain.errors import Conflict

log = logging.getLogger(__name__)

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def _millis(ttl: timedelta) -> int:
    return max(1, int(ttl.total_seconds() * 1000))


def new_token() -> str:
    """A random lock token (128 bits, hex)."""
    return secrets.token_hex(16)


async def try_acquire(redis: Redis, key: str, ttl: timedelta, token: str | None = None) -> str | None:
    """Take ``key`` if free; return the token on success, ``None`` if somebody else holds it."""
    token = token or new_token()
    ok = await redis.set(key, token, nx=True, px=_millis(ttl))
    return token if ok else None


async def renew(redis: Redis, key: str, token: str, ttl: timedelta) -> bool:
    """Extend the TTL only if ``token`` still holds ``key``."""
    result = await redis.eval(_RENEW, 1, key, token, str(_millis(ttl)))  # type: ignore[misc]
    return bool(result)


async def release(redis: Redis, key: str, token: str) -> bool:
    """Delete ``key`` only if ``token`` still holds it."""
    result = await redis.eval(_RELEASE, 1, key, token)  # type: ignore[misc]
    return bool(result)


def renew_interval(ttl: timedelta) -> float:
    """Renew every TTL/3, but at least every second (reference §6.4)."""
    return max(1.0, ttl.total_seconds() / 3)


class HeldLock:
    """A lock held by this process, renewed in the background until released.

    ``lost`` becomes true when a renewal finds the token gone (expired and possibly re-taken);
    callers doing long work check it (or :meth:`ensure_held`) before committing side effects.
    """

    def __init__(self, redis: Redis, key: str, token: str, ttl: timedelta) -> None:
        self.redis = redis
        self.key = key
        self.token = token
        self.ttl = ttl
        self.lost = False
        self._task: asyncio.Task[None] | None = None

    def start_renewing(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._renew_loop(), name=f"renew {self.key}")

    async def _renew_loop(self) -> None:
        interval = renew_interval(self.ttl)
        while True:
            await asyncio.sleep(interval)
            try:
                if not await renew(self.redis, self.key, self.token, self.ttl):
                    self.lost = True
                    log.warning("lock %s lost", self.key)
                    return
            except Exception:  # a Redis hiccup: keep trying until the TTL runs out
                log.warning("renewing lock %s failed", self.key, exc_info=True)

    def ensure_held(self) -> None:
        if self.lost:
            raise Conflict(f"lock {self.key} was lost")

    async def release(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await release(self.redis, self.key, self.token)
        except Exception:  # the TTL cleans up if Redis is unreachable right now
            log.warning("releasing lock %s failed", self.key, exc_info=True)


@contextlib.asynccontextmanager
async def hold(redis: Redis, key: str, ttl: timedelta, *, renewing: bool = False) -> AsyncIterator[HeldLock]:
    """Hold ``key`` for the block or raise :class:`~domain.errors.Conflict` (retryable) if taken."""
    token = await try_acquire(redis, key, ttl)
    if token is None:
        raise Conflict(f"lock {key} is held by another worker")
    held = HeldLock(redis, key, token, ttl)
    if renewing:
        held.start_renewing()
    try:
        yield held
    finally:
        await held.release()


async def wait_acquire(
    redis: Redis, key: str, ttl: timedelta, *, wait_timeout: timedelta, retry_interval: timedelta
) -> HeldLock | None:
    """Poll for ``key`` until acquired (renewal started) or ``wait_timeout`` passes (``None``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_timeout.total_seconds()
    while True:
        token = await try_acquire(redis, key, ttl)
        if token is not None:
            held = HeldLock(redis, key, token, ttl)
            held.start_renewing()
            return held
        if loop.time() >= deadline:
            return None
        await asyncio.sleep(min(retry_interval.total_seconds(), max(0.0, deadline - loop.time())) or 0.01)
