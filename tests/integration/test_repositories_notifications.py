"""The notifications repository on real PostgreSQL (checklist items 56-58)."""

from __future__ import annotations

import asyncpg
import pytest
from repository_support import cache_fixture, new_user, pool_fixture, redis_fixture  # noqa: F401  (fixtures)

from domain.enums import NotificationKind, NotificationPreference
from domain.errors import Invalid, NotFound
from domain.ids import uuid7
from domain.models import User
from domain.notifications import job_failed
from store import notifications, users
from store.cache import Cache


def payload(title: str) -> dict[str, str]:
    return {
        "title": title,
        "message": "m",
        "entity_id": "e",
        "entity_type": "WORKFLOW",
        "action_url": "/workflows/e",
    }


async def notify_every_kind(pool: asyncpg.Pool, user: User) -> dict[NotificationKind, object]:
    return {
        kind: await notifications.create(
            pool, user_id=user.id, kind=kind, payload=payload(kind.value), idempotency_key=f"key:{kind}"
        )
        for kind in NotificationKind
    }


@pytest.fixture
async def user(pool: asyncpg.Pool) -> User:
    return await new_user(pool)


async def test_create_is_idempotent_per_user_and_key(pool: asyncpg.Pool, user: User) -> None:
    other = await new_user(pool)
    first = await notifications.create(
        pool, user_id=user.id, kind="WEB_INFO", payload=payload("a"), idempotency_key="k"
    )
    again = await notifications.create(
        pool, user_id=user.id, kind="WEB_INFO", payload=payload("changed"), idempotency_key="k"
    )
    theirs = await notifications.create(
        pool, user_id=other.id, kind="WEB_INFO", payload=payload("a"), idempotency_key="k"
    )
    assert first == again != theirs
    assert await pool.fetchval("SELECT count(*) FROM notifications WHERE user_id = $1", user.id) == 1


async def test_create_from_a_domain_draft(pool: asyncpg.Pool, user: User, cache: Cache) -> None:
    await users.update_notification_preference(pool, user.id, NotificationPreference.ALL, cache=cache)
    draft = job_failed(str(user.id), str(uuid7()), str(uuid7()), "probe", "exit 3")
    created = await notifications.create_draft(pool, draft)
    listed = (await notifications.list_notifications(pool, user.id)).items
    assert [(n.id, n.kind) for n in listed] == [(created, NotificationKind.WEB_ERROR)]
    assert listed[0].payload == draft.payload.model_dump(mode="json")


async def test_create_validates_its_input(pool: asyncpg.Pool, user: User) -> None:
    with pytest.raises(Invalid):
        await notifications.create(pool, user_id=user.id, kind="WEB_INFO", payload={}, idempotency_key="")
    with pytest.raises(Invalid):
        await notifications.create(pool, user_id=user.id, kind="EMAIL", payload={}, idempotency_key="k")
    with pytest.raises(NotFound):
        await notifications.create(pool, user_id=uuid7(), kind="WEB_INFO", payload={}, idempotency_key="k")


async def test_list_follows_the_preference(pool: asyncpg.Pool, user: User, cache: Cache) -> None:
    ids = await notify_every_kind(pool, user)

    async def listed() -> list[object]:
        return [n.id for n in (await notifications.list_notifications(pool, user.id)).items]

    assert await listed() == [ids[NotificationKind.WEB_ALERT]]  # default ALERTS
    await users.update_notification_preference(pool, user.id, "ALL", cache=cache)
    assert await listed() == list(reversed(ids.values()))  # newest first
    await users.update_notification_preference(pool, user.id, "NONE", cache=cache)
    assert await listed() == []


async def test_mark_read_hides_notifications_and_is_scoped_to_the_user(
    pool: asyncpg.Pool, user: User, cache: Cache
) -> None:
    await users.update_notification_preference(pool, user.id, "ALL", cache=cache)
    ids = list((await notify_every_kind(pool, user)).values())
    stranger = await new_user(pool)
    with pytest.raises(NotFound):
        await notifications.mark_read(pool, stranger.id, ids[:2])  # type: ignore[arg-type]
    with pytest.raises(Invalid):
        await notifications.mark_read(pool, user.id, [])
    assert await notifications.mark_read(pool, user.id, ids[:2]) == 2  # type: ignore[arg-type]
    remaining = [n.id for n in (await notifications.list_notifications(pool, user.id)).items]
    assert set(remaining) == set(ids[2:])
    # read_at is set once: marking again matches but keeps the first time.
    first_read = await pool.fetchval("SELECT read_at FROM notifications WHERE id = $1", ids[0])
    await notifications.mark_read(pool, user.id, ids[:1])  # type: ignore[arg-type]
    assert await pool.fetchval("SELECT read_at FROM notifications WHERE id = $1", ids[0]) == first_read


async def test_list_pages_without_overlap(pool: asyncpg.Pool, user: User) -> None:
    created = [
        await notifications.create(
            pool, user_id=user.id, kind="WEB_ALERT", payload=payload(str(i)), idempotency_key=f"k{i}"
        )
        for i in range(5)
    ]
    first = await notifications.list_notifications(pool, user.id, page_size=3)
    second = await notifications.list_notifications(pool, user.id, cursor=first.cursor, page_size=3)
    assert second.cursor is None
    assert [n.id for n in first.items + second.items] == list(reversed(created))
