"""Personal API tokens on a real PostgreSQL (SPEC §5.5)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from repository_support import new_user, pool_fixture  # noqa: F401  (fixtures register by import)

from domain.errors import Invalid, NotFound, Unauthenticated
from domain.ids import uuid7
from domain.models import User
from store import api_tokens


@pytest.fixture
async def user(pool: asyncpg.Pool) -> User:
    return await new_user(pool)


async def test_token_is_shown_once_and_only_its_hash_is_stored(pool: asyncpg.Pool, user: User) -> None:
    issued = await api_tokens.create(pool, user.id, name="ci")
    assert issued.token.startswith("cvt_") and len(issued.token) > 40
    assert issued.token.startswith(issued.record.prefix)
    stored = await pool.fetchrow("SELECT * FROM api_tokens WHERE id = $1", issued.record.id)
    assert issued.token not in [str(v) for v in dict(stored).values()]
    assert stored["token_hash"] == api_tokens.hash_token(issued.token)
    assert await api_tokens.resolve(pool, issued.token) == user.id


async def test_resolve_records_the_last_use(pool: asyncpg.Pool, user: User) -> None:
    issued = await api_tokens.create(pool, user.id, name="cli")
    assert issued.record.last_used_at is None
    await api_tokens.resolve(pool, issued.token)
    [record] = [t for t in await api_tokens.list_tokens(pool, user.id) if t.id == issued.record.id]
    assert record.last_used_at is not None


async def test_revoked_token_fails_and_revoke_is_scoped_to_the_owner(pool: asyncpg.Pool, user: User) -> None:
    issued = await api_tokens.create(pool, user.id, name="old")
    stranger = await new_user(pool)
    with pytest.raises(NotFound):
        await api_tokens.revoke(pool, stranger.id, issued.record.id)
    assert await api_tokens.resolve(pool, issued.token) == user.id
    await api_tokens.revoke(pool, user.id, issued.record.id)
    await api_tokens.revoke(pool, user.id, issued.record.id)  # idempotent
    with pytest.raises(Unauthenticated, match="revoked"):
        await api_tokens.resolve(pool, issued.token)
    with pytest.raises(NotFound):
        await api_tokens.revoke(pool, user.id, uuid7())


async def test_expired_token_fails(pool: asyncpg.Pool, user: User) -> None:
    issued = await api_tokens.create(
        pool, user.id, name="short", expires_at=datetime.now(UTC) + timedelta(hours=1)
    )
    await pool.execute(
        "UPDATE api_tokens SET expires_at = (now() AT TIME ZONE 'utc') - interval '1 second' WHERE id = $1",
        issued.record.id,
    )
    with pytest.raises(Unauthenticated, match="expired"):
        await api_tokens.resolve(pool, issued.token)


@pytest.mark.parametrize("token", ["", "cvt_short", "Bearer nope", "cvt_" + "x" * 43])
async def test_unknown_tokens_fail(pool: asyncpg.Pool, token: str) -> None:
    with pytest.raises(Unauthenticated):
        await api_tokens.resolve(pool, token)


async def test_list_shows_only_the_users_tokens_newest_first(pool: asyncpg.Pool, user: User) -> None:
    first = await api_tokens.create(pool, user.id, name="one")
    second = await api_tokens.create(pool, user.id, name="two")
    stranger = await new_user(pool)
    await api_tokens.create(pool, stranger.id, name="theirs")
    assert [t.id for t in await api_tokens.list_tokens(pool, user.id)] == [second.record.id, first.record.id]


@pytest.mark.parametrize(
    ("name", "expires_at"),
    [("", None), ("x" * 101, None), ("ok", datetime.now(UTC) - timedelta(minutes=1))],
)
async def test_bad_token_requests_are_invalid(
    pool: asyncpg.Pool, user: User, name: str, expires_at: datetime | None
) -> None:
    with pytest.raises(Invalid):
        await api_tokens.create(pool, user.id, name=name, expires_at=expires_at)
