"""Sessions, CSRF and login rate limiting on a real Redis (SPEC §5.5; checklist items 3, 6)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis
from repository_support import redis_fixture  # noqa: F401  (fixtures register by import)

from domain.config import ServerConfig
from domain.errors import PermissionDenied, RateLimited, Unauthenticated
from domain.ids import uuid7
from store.sessions import LoginRateLimiter, SessionStore

CONFIG = ServerConfig(session_expiry=timedelta(hours=2), csrf_hmac_secret=SecretStr("integration-secret"))


@pytest.fixture
def sessions(redis: Redis) -> SessionStore:
    return SessionStore(redis, CONFIG)


async def test_session_resolves_to_its_user_until_deleted(sessions: SessionStore, redis: Redis) -> None:
    user_id = uuid7()
    session = await sessions.create(user_id)
    assert len(session.session_id) >= 43
    assert await sessions.resolve(session.session_id) == user_id
    ttl = await redis.ttl(f"session:{session.session_id}")
    assert 7100 < ttl <= 7200
    assert await sessions.delete(session.session_id)
    with pytest.raises(Unauthenticated):
        await sessions.resolve(session.session_id)
    assert not await sessions.delete(session.session_id)


async def test_sessions_are_distinct_and_unknown_ones_are_unauthenticated(sessions: SessionStore) -> None:
    a, b = await sessions.create(uuid7()), await sessions.create(uuid7())
    assert a.session_id != b.session_id
    for bad in ["", None, "made-up"]:
        with pytest.raises(Unauthenticated):
            await sessions.resolve(bad)


async def test_session_expires_with_its_ttl(redis: Redis) -> None:
    short = SessionStore(redis, CONFIG.model_copy(update={"session_expiry": timedelta(seconds=1)}))
    session = await short.create(uuid7())
    await asyncio.sleep(1.6)
    with pytest.raises(Unauthenticated):
        await short.resolve(session.session_id)


async def test_csrf_token_is_bound_to_its_session(sessions: SessionStore) -> None:
    a, b = await sessions.create(uuid7()), await sessions.create(uuid7())
    sessions.check_csrf(a.session_id, a.csrf_token)
    sessions.check_csrf(a.session_id, sessions.issue_csrf(a.session_id))
    with pytest.raises(PermissionDenied, match="invalid"):
        sessions.check_csrf(a.session_id, b.csrf_token)
    with pytest.raises(PermissionDenied, match="missing"):
        sessions.check_csrf(a.session_id, None)
    with pytest.raises(PermissionDenied):
        tampered = ("0" if a.csrf_token[0] != "0" else "1") + a.csrf_token[1:]
        sessions.check_csrf(a.session_id, tampered)


async def test_login_attempts_are_limited_per_email(redis: Redis) -> None:
    limiter = LoginRateLimiter(redis, limit=3, window=timedelta(minutes=15))
    email = f"victim-{uuid7()}@example.com"
    for n in range(3):
        await limiter.hit(email, f"10.0.0.{n}")
    with pytest.raises(RateLimited) as caught:
        await limiter.hit(email.upper(), "10.0.0.9")
    assert 0 < caught.value.retry_after_s <= 900
    # Another account is unaffected.
    await limiter.hit(f"other-{uuid7()}@example.com", "10.0.0.9")


async def test_login_attempts_are_limited_per_client_address(redis: Redis) -> None:
    limiter = LoginRateLimiter(redis, limit=3, window=timedelta(minutes=15))
    address = f"192.0.2.{uuid7().int % 250}-{uuid7()}"
    for _ in range(3):
        await limiter.hit(f"u-{uuid7()}@example.com", address)
    with pytest.raises(RateLimited):
        await limiter.hit(f"u-{uuid7()}@example.com", address)


async def test_a_successful_login_forgets_the_emails_failures(redis: Redis) -> None:
    limiter = LoginRateLimiter(redis, limit=2, window=timedelta(minutes=15))
    email = f"user-{uuid7()}@example.com"
    await limiter.hit(email, None)
    await limiter.hit(email, None)
    await limiter.succeeded(email, None)
    await limiter.hit(email, None)
    await limiter.hit(email, None)
    with pytest.raises(RateLimited):
        await limiter.hit(email, None)


async def test_the_window_resets(redis: Redis) -> None:
    # The window (whole seconds in Redis) must outlast the two back-to-back hits on a loaded machine.
    window = timedelta(seconds=3)
    limiter = LoginRateLimiter(redis, limit=1, window=window)
    email = f"user-{uuid7()}@example.com"
    await limiter.hit(email, None)
    with pytest.raises(RateLimited):
        await limiter.hit(email, None)
    await asyncio.sleep(window.total_seconds() + 0.6)
    await limiter.hit(email, None)


async def test_succeeded_never_revives_an_expired_address_counter(redis: Redis) -> None:
    limiter = LoginRateLimiter(redis, limit=5, window=timedelta(minutes=1))
    address = f"addr-{uuid7()}"
    await limiter.succeeded(f"u-{uuid7()}@example.com", address)
    assert await redis.keys(f"login-attempts:address:*{address}*") == []
    keys_before = await redis.dbsize()
    await limiter.succeeded(f"u-{uuid7()}@example.com", address)
    assert await redis.dbsize() == keys_before
