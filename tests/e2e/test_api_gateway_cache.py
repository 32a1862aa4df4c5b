"""Cache hits answered by the gateway itself (ADR 0004), over real HTTP through the deployed app:
a hit is the cached entry, the caller's own write is visible on the very next read, and another
user never gets the owner's cached workflow.

To tell a cache answer from a database answer, a test plants a changed copy of the entry under the
user's current epoch (exactly what the service would have stored) and sees it come back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import pytest_asyncio

from store.cache import Cache
from store.redis import create_redis


@pytest_asyncio.fixture
async def cache(api: Any) -> AsyncIterator[Cache]:
    """The services' read-through cache, on the deployment's Redis."""
    redis = create_redis(api.target.settings.redis, client_name="e2e-cache")
    try:
        yield Cache(redis)
    finally:
        await redis.aclose()


async def _plant_workflow_name(cache: Cache, user_id: UUID, workflow_id: UUID, name: str) -> None:
    lookup = await cache.get_workflow(user_id, workflow_id)
    assert lookup.value is not None, "the first read should have filled the cache"
    await cache.put_workflow(lookup.epoch, lookup.value.model_copy(update={"name": name}))


async def test_a_cached_workflow_is_served_until_the_callers_own_write(
    api: Any, api_user: Any, cache: Cache
) -> None:
    body = api.heartbeat_body(name="real")
    workflow_id = await api.create_workflow(api_user, body)
    first = await api_user.client.get(f"/workflows/{workflow_id}")  # a miss: the service fills it
    assert first.status_code == 200 and first.json()["name"] == "real"
    await _plant_workflow_name(cache, api_user.user_id, workflow_id, "planted")

    hit = await api_user.client.get(f"/workflows/{workflow_id}")
    assert hit.status_code == 200
    assert hit.json() == {**first.json(), "name": "planted"}  # the cached entry, shaped like a miss

    update = {k: v for k, v in body.items() if k not in ("kind", "log_retention")}
    response = await api_user.client.put(
        f"/workflows/{workflow_id}", json={**update, "name": "renamed"}, headers=api_user.keyed()
    )
    assert response.status_code == 204, response.text
    after = (await api_user.client.get(f"/workflows/{workflow_id}")).json()
    assert after["name"] == "renamed" and after["generation"] == 2


async def test_a_cached_list_page_shows_the_callers_new_workflow_at_once(api: Any, api_user: Any) -> None:
    first = await api.create_workflow(api_user)
    assert [w["id"] for w in (await api_user.client.get("/workflows")).json()["workflows"]] == [str(first)]
    cached = (await api_user.client.get("/workflows")).json()  # served from the cache
    assert [w["id"] for w in cached["workflows"]] == [str(first)]

    second = await api.create_workflow(api_user)
    listed = (await api_user.client.get("/workflows")).json()
    assert [w["id"] for w in listed["workflows"]] == [str(second), str(first)]
    await api_user.client.patch(f"/workflows/{first}", headers=api_user.mutating())
    terminated = (await api_user.client.get("/workflows", params={"terminated": "true"})).json()
    assert [w["id"] for w in terminated["workflows"]] == [str(first)]
    assert (await api_user.client.get(f"/workflows/{first}")).json()["terminated_at"] is not None


async def test_the_owners_cached_workflow_is_404_for_another_user(
    api: Any, api_user: Any, other_user: Any, cache: Cache
) -> None:
    workflow_id = await api.create_workflow(api_user)
    assert (await api_user.client.get(f"/workflows/{workflow_id}")).status_code == 200
    await _plant_workflow_name(cache, api_user.user_id, workflow_id, "planted")

    foreign = await other_user.client.get(f"/workflows/{workflow_id}")
    assert foreign.status_code == 404
    assert foreign.json()["error"]["code"] == "not_found"
    assert (await other_user.client.get("/workflows")).json()["workflows"] == []
    assert (await api_user.client.get(f"/workflows/{workflow_id}")).json()["name"] == "planted"


async def test_a_cached_profile_shows_the_callers_new_preference_at_once(api_user: Any) -> None:
    before = (await api_user.client.get("/users")).json()
    assert (await api_user.client.get("/users")).json() == before  # served from the cache
    new = "ALL" if before["notification_preference"] != "ALL" else "NONE"
    response = await api_user.client.put(
        "/users", json={"notification_preference": new}, headers=api_user.mutating()
    )
    assert response.status_code == 204, response.text
    after = (await api_user.client.get("/users")).json()
    assert after["notification_preference"] == new and after["email"] == before["email"]
