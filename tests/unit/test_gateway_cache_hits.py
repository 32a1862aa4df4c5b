"""The gateway's Serve wiring answers cache hits of the hot reads itself (ADR 0004): a hit makes no
handle call and converts the entry exactly as the service would; a miss makes the call.  The cache
and the handles are stand-ins; the cache's own epoch rules are tested against Redis in
tests/integration."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast
from uuid import UUID

import pytest

from domain.enums import NotificationPreference, WorkflowBuildStatus, WorkflowKind
from domain.filters import WorkflowFilters
from domain.ids import uuid7
from domain.models import Page, User, Workflow
from serve_apps.gateway.clients import Services
from serve_apps.resources import ServiceResources
from serve_apps.schemas.workflows import ListWorkflowsQuery, WorkflowDetail, WorkflowList, WorkflowRef
from serve_apps.services.context import CallContext
from serve_apps.services.users import user_profile
from serve_apps.services.workflows import workflow_detail, workflow_list
from store.cache import Lookup

NOW = datetime(2025, 1, 2, 3, 4, 5, 123456)
USER = uuid7()


def _workflow(user_id: UUID = USER, name: str = "cached") -> Workflow:
    return Workflow(
        id=uuid7(),
        user_id=user_id,
        name=name,
        payload={"endpoint": "http://127.0.0.1:9/health"},
        kind=WorkflowKind.HEARTBEAT,
        build_status=WorkflowBuildStatus.COMPLETED,
        interval=5,
        generation=3,
        consecutive_job_failures_count=0,
        max_consecutive_job_failures_allowed=3,
        created_at=NOW,
        updated_at=NOW,
        terminated_at=None,
        log_retention=True,
        log_retention_ttl_seconds=None,
        build_hash=None,
    )


class MemoryCache:
    """Entries by (user, key); what :class:`store.cache.Cache` would return for a current entry."""

    def __init__(self) -> None:
        self.workflows: dict[tuple[UUID, UUID], Workflow] = {}
        self.pages: dict[tuple[UUID, str | None, str], Page[Workflow]] = {}
        self.users: dict[UUID, User] = {}

    async def get_workflow(self, user_id: UUID, workflow_id: UUID) -> Lookup[Workflow]:
        return Lookup(self.workflows.get((user_id, workflow_id)), "epoch")

    async def get_workflow_page(
        self, user_id: UUID, cursor: str | None, filters: WorkflowFilters
    ) -> Lookup[Page[Workflow]]:
        return Lookup(self.pages.get((user_id, cursor, filters.cache_key())), "epoch")

    async def get_user(self, user_id: UUID) -> Lookup[User]:
        return Lookup(self.users.get(user_id), "epoch")


class MemoryResources:
    def __init__(self, cache: MemoryCache) -> None:
        self._cache = cache

    def cache(self) -> MemoryCache:
        return self._cache


class Method:
    def __init__(self, name: str, calls: list[str], answer: Any) -> None:
        self.name, self.calls, self.answer = name, calls, answer

    async def remote(self, *args: Any) -> Any:
        self.calls.append(self.name)
        return self.answer


class Handle:
    """A deployment handle stand-in: ``handle.<method>.remote(...)`` records the call."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.calls: list[str] = []
        self._answers = answers

    def __getattr__(self, name: str) -> Method:
        return Method(name, self.calls, self._answers.get(name))


def _services(cache: MemoryCache, users: Handle, workflows: Handle) -> Services:
    other = cast(Any, Handle({}))
    return Services.remote(
        users=cast(Any, users),
        workflows=cast(Any, workflows),
        jobs=other,
        notifications=other,
        analytics=other,
        cache_resources=cast(ServiceResources, MemoryResources(cache)),
    )


CALLER = CallContext(user_id=USER)


async def test_a_cached_workflow_is_answered_without_a_handle_call() -> None:
    cache, handle = MemoryCache(), Handle({})
    cached = _workflow()
    cache.workflows[(USER, cached.id)] = cached
    services = _services(cache, Handle({}), handle)
    answer = await services.workflows.get_workflow(CALLER, WorkflowRef(workflow_id=cached.id))
    assert answer == workflow_detail(cached)
    assert answer.name == "cached" and answer.generation == 3
    assert handle.calls == []


async def test_a_cache_miss_asks_the_workflows_service() -> None:
    from_service = workflow_detail(_workflow(name="from the database"))
    handle = Handle({"get_workflow": from_service})
    services = _services(MemoryCache(), Handle({}), handle)
    answer = await services.workflows.get_workflow(CALLER, WorkflowRef(workflow_id=from_service.id))
    assert answer is from_service
    assert handle.calls == ["get_workflow"]


async def test_another_users_cached_workflow_is_not_served_to_the_caller() -> None:
    cache = MemoryCache()
    foreign = _workflow(user_id=uuid7())
    cache.workflows[(foreign.user_id, foreign.id)] = foreign
    handle = Handle({"get_workflow": None})  # the service answers (it raises NotFound for real)
    services = _services(cache, Handle({}), handle)
    await services.workflows.get_workflow(CALLER, WorkflowRef(workflow_id=foreign.id))
    assert handle.calls == ["get_workflow"]


async def test_a_cached_list_page_is_answered_without_a_handle_call_and_misses_hop() -> None:
    cache, handle = MemoryCache(), Handle({"list_workflows": WorkflowList(workflows=[], cursor=None)})
    page = Page[Workflow](items=[_workflow(), _workflow()], cursor="next")
    cache.pages[(USER, None, WorkflowFilters().cache_key())] = page
    services = _services(cache, Handle({}), handle)
    hit = await services.workflows.list_workflows(CALLER, ListWorkflowsQuery())
    assert hit == workflow_list(page) and hit.cursor == "next" and len(hit.workflows) == 2
    assert handle.calls == []
    filtered = ListWorkflowsQuery(filters=WorkflowFilters.parse(query="other"))
    await services.workflows.list_workflows(CALLER, filtered)
    assert handle.calls == ["list_workflows"]


async def test_a_cached_profile_is_answered_without_a_handle_call() -> None:
    cache, users = MemoryCache(), Handle({})
    user = User(
        id=USER,
        email="a@b.co",
        notification_preference=NotificationPreference.ALL,
        created_at=NOW,
        updated_at=NOW,
    )
    cache.users[USER] = user
    services = _services(cache, users, Handle({}))
    assert await services.users.get_user(CALLER) == user_profile(user)
    assert users.calls == []
    assert await services.users.get_user(CallContext(user_id=uuid7())) is None  # stand-in's answer
    assert users.calls == ["get_user"]


async def test_other_service_methods_still_hop() -> None:
    handle = Handle({"terminate_workflow": None})
    services = _services(MemoryCache(), Handle({}), handle)
    await services.workflows.terminate_workflow(CALLER, WorkflowRef(workflow_id=uuid7()))
    assert handle.calls == ["terminate_workflow"]


@pytest.mark.parametrize("read", ["get_workflow", "list_workflows"])
async def test_an_anonymous_context_is_refused_before_the_cache(read: str) -> None:
    from domain.errors import Unauthenticated

    services = _services(MemoryCache(), Handle({}), Handle({}))
    arg: Any = WorkflowRef(workflow_id=uuid7()) if read == "get_workflow" else ListWorkflowsQuery()
    with pytest.raises(Unauthenticated):
        await getattr(services.workflows, read)(CallContext(), arg)


def test_workflow_detail_is_the_services_conversion() -> None:
    wf = _workflow()
    assert workflow_detail(wf) == WorkflowDetail.from_record(wf)
