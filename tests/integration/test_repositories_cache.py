"""The epoch-tagged Redis cache (store/cache.py) on a real Redis: a value read before a concurrent
invalidation is never served afterwards, and invalidation is per user."""

from __future__ import annotations

from datetime import datetime

from redis.asyncio import Redis
from repository_support import redis_fixture  # noqa: F401  (fixtures register by import)

from domain.enums import NotificationPreference
from domain.filters import WorkflowFilters
from domain.ids import uuid7
from domain.models import Page, User
from store.cache import Cache


def user(email: str = "a@example.com") -> User:
    now = datetime(2025, 1, 1)
    return User(
        id=uuid7(),
        email=email,
        notification_preference=NotificationPreference.ALL,
        created_at=now,
        updated_at=now,
    )


async def test_miss_then_hit(redis: Redis) -> None:
    cache = Cache(redis)
    someone = user()
    miss = await cache.get_user(someone.id)
    assert miss.value is None and miss.epoch is not None
    await cache.put_user(miss.epoch, someone)
    assert (await cache.get_user(someone.id)).value == someone


async def test_value_read_before_an_invalidation_is_never_served(redis: Redis) -> None:
    cache = Cache(redis)
    stale = user("old@example.com")
    lookup = await cache.get_user(stale.id)  # a reader misses and goes to the database...
    await cache.invalidate_user(stale.id)  # ...while a writer commits and invalidates...
    await cache.put_user(lookup.epoch, stale)  # ...then the reader stores what it read.
    assert (await cache.get_user(stale.id)).value is None


async def test_workflow_invalidation_drops_every_page_of_that_user_only(redis: Redis) -> None:
    cache = Cache(redis)
    alice, bob = uuid7(), uuid7()
    filters = WorkflowFilters.parse(kind="HEARTBEAT")
    for owner in (alice, bob):
        lookup = await cache.get_workflow_page(owner, None, filters)
        await cache.put_workflow_page(lookup.epoch, owner, None, filters, Page(items=[], cursor=None))
        assert (await cache.get_workflow_page(owner, None, filters)).value is not None
    await cache.invalidate_workflows(alice)
    assert (await cache.get_workflow_page(alice, None, filters)).value is None
    assert (await cache.get_workflow_page(bob, None, filters)).value == Page(items=[], cursor=None)


async def test_lost_epoch_only_costs_misses(redis: Redis) -> None:
    cache = Cache(redis)
    someone = user()
    lookup = await cache.get_user(someone.id)
    await cache.put_user(lookup.epoch, someone)
    await redis.delete(f"cache-epoch:user:{someone.id}")  # evicted or expired
    assert (await cache.get_user(someone.id)).value is None
