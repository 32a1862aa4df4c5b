"""The users repository on real PostgreSQL and Redis (checklist items 4-5, 7-8)."""

from __future__ import annotations

import asyncpg
import pytest
from repository_support import cache_fixture, pool_fixture, redis_fixture  # noqa: F401  (fixtures)

from domain.enums import NotificationPreference
from domain.errors import AlreadyExists, Invalid, NotFound
from domain.ids import uuid7
from domain.passwords import hash_password, verify_password
from store import users
from store.cache import Cache


def unique_email() -> str:
    return f"Someone-{uuid7()}@Example.com"


async def test_registered_user_has_the_default_preference_and_a_bcrypt_hash(pool: asyncpg.Pool) -> None:
    email = unique_email()
    user = await users.create(pool, email=email, password_hash=hash_password("s3cret-pass", rounds=4))
    assert user.email == email.lower()
    assert user.notification_preference == NotificationPreference.ALERTS
    credentials = await users.get_by_email(pool, email.upper())
    assert credentials.id == user.id
    assert credentials.password_hash.startswith("$2b$")
    assert verify_password("s3cret-pass", credentials.password_hash)


async def test_duplicate_email_is_already_exists_whatever_its_case(pool: asyncpg.Pool) -> None:
    email = unique_email()
    await users.create(pool, email=email, password_hash="h")
    with pytest.raises(AlreadyExists):
        await users.create(pool, email=email.swapcase(), password_hash="h")


async def test_unknown_email_is_not_found_and_malformed_is_invalid(pool: asyncpg.Pool) -> None:
    with pytest.raises(NotFound):
        await users.get_by_email(pool, unique_email())
    with pytest.raises(Invalid):
        await users.get_by_email(pool, "not-an-email")


async def test_get_by_id(pool: asyncpg.Pool, cache: Cache) -> None:
    user = await users.create(pool, email=unique_email(), password_hash="h")
    assert await users.get(pool, user.id, cache=cache) == user
    assert await users.get(pool, user.id, cache=cache) == user  # served from the cache
    with pytest.raises(NotFound):
        await users.get(pool, uuid7(), cache=cache)


@pytest.mark.parametrize("preference", list(NotificationPreference))
async def test_preference_update_is_visible_at_once_through_the_cache(
    pool: asyncpg.Pool, cache: Cache, preference: NotificationPreference
) -> None:
    user = await users.create(pool, email=unique_email(), password_hash="h")
    await users.get(pool, user.id, cache=cache)  # warm the cache
    updated = await users.update_notification_preference(pool, user.id, preference.value, cache=cache)
    assert updated.notification_preference == preference
    assert (await users.get(pool, user.id, cache=cache)).notification_preference == preference


async def test_invalid_preference_is_invalid(pool: asyncpg.Pool, cache: Cache) -> None:
    user = await users.create(pool, email=unique_email(), password_hash="h")
    with pytest.raises(Invalid, match="ALERTS, ALL, NONE"):
        await users.update_notification_preference(pool, user.id, "SOME", cache=cache)
    with pytest.raises(NotFound):
        await users.update_notification_preference(pool, uuid7(), "ALL", cache=cache)
