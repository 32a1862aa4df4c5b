"""The five domain services as the gateway sees them: either Serve deployment handles (one hop
each) or the plain service objects in-process (plain uvicorn, the benchmark baseline, tests).

Routes call ``services.workflows.get_workflow(ctx, ref)`` either way; :class:`RemoteService`
turns that into ``await handle.get_workflow.remote(ctx, ref)``.  Behind handles, the hot reads
(one workflow, a workflow list page, the caller's profile) are first looked up in the services'
read-through Redis cache with the gateway's own client, and only a miss makes the hop (ADR 0004).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from domain.config import Settings
from serve_apps.resources import ServiceResources
from serve_apps.schemas.users import UserProfile
from serve_apps.schemas.workflows import ListWorkflowsQuery, WorkflowDetail, WorkflowList, WorkflowRef
from serve_apps.services.analytics import AnalyticsService
from serve_apps.services.context import CallContext
from serve_apps.services.jobs import JobsService
from serve_apps.services.notifications import NotificationsService
from serve_apps.services.users import UsersService, cached_user_profile
from serve_apps.services.workflows import WorkflowsService, cached_workflow, cached_workflow_list

if TYPE_CHECKING:
    from ray.serve.handle import DeploymentHandle


class RemoteService:
    """Exposes a deployment handle's methods as ``async def method(*args) -> result``.

    The per-method handles are created once and reused (``handle.<method>`` builds a new handle
    object each time).  Exceptions raised in the replica re-raise here (wrapped by Ray; the
    gateway's error mapping unwraps them).
    """

    def __init__(self, handle: DeploymentHandle) -> None:
        self._handle = handle
        self._methods: dict[str, Callable[..., Awaitable[Any]]] = {}

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._remote(name)

    def _remote(self, name: str) -> Callable[..., Awaitable[Any]]:
        """``await handle.<name>.remote(*args)`` as a coroutine function."""
        method = self._methods.get(name)
        if method is None:
            bound = getattr(self._handle, name)

            async def call(*args: Any, **kwargs: Any) -> Any:
                return await bound.remote(*args, **kwargs)

            call.__name__ = name
            self._methods[name] = method = call
        return method


class CachedWorkflowsService(RemoteService):
    """The WorkflowsService handle, answering cache hits of its two hot reads in the gateway."""

    def __init__(self, handle: DeploymentHandle, resources: ServiceResources) -> None:
        super().__init__(handle)
        self._resources = resources

    async def get_workflow(self, ctx: CallContext, ref: WorkflowRef) -> WorkflowDetail:
        """A cache hit, else the service (which reads PostgreSQL and fills the cache)."""
        hit = await cached_workflow(self._resources.cache(), ctx, ref)
        if hit is not None:
            return hit
        result: WorkflowDetail = await self._remote("get_workflow")(ctx, ref)
        return result

    async def list_workflows(self, ctx: CallContext, query: ListWorkflowsQuery) -> WorkflowList:
        """A cached page, else the service."""
        hit = await cached_workflow_list(self._resources.cache(), ctx, query)
        if hit is not None:
            return hit
        result: WorkflowList = await self._remote("list_workflows")(ctx, query)
        return result


class CachedUsersService(RemoteService):
    """The UsersService handle, answering cache hits of ``GET /users`` in the gateway."""

    def __init__(self, handle: DeploymentHandle, resources: ServiceResources) -> None:
        super().__init__(handle)
        self._resources = resources

    async def get_user(self, ctx: CallContext) -> UserProfile:
        """A cache hit, else the service."""
        hit = await cached_user_profile(self._resources.cache(), ctx)
        if hit is not None:
            return hit
        result: UserProfile = await self._remote("get_user")(ctx)
        return result


@dataclass(frozen=True, slots=True)
class Services:
    """One client per domain service, typed as the plain classes whose methods they expose."""

    users: UsersService
    workflows: WorkflowsService
    jobs: JobsService
    notifications: NotificationsService
    analytics: AnalyticsService

    @classmethod
    def remote(
        cls,
        *,
        users: DeploymentHandle,
        workflows: DeploymentHandle,
        jobs: DeploymentHandle,
        notifications: DeploymentHandle,
        analytics: DeploymentHandle,
        cache_resources: ServiceResources,
    ) -> Services:
        """Clients that call the Serve deployments through their handles; the hot reads answer
        cache hits with ``cache_resources``' Redis client (the gateway's own) without a hop."""
        return cls(
            users=cast(UsersService, CachedUsersService(users, cache_resources)),
            workflows=cast(WorkflowsService, CachedWorkflowsService(workflows, cache_resources)),
            jobs=cast(JobsService, RemoteService(jobs)),
            notifications=cast(NotificationsService, RemoteService(notifications)),
            analytics=cast(AnalyticsService, RemoteService(analytics)),
        )

    @classmethod
    def local(cls, settings: Settings, resources: ServiceResources) -> Services:
        """The plain services in this process, sharing ``resources`` (no Ray involved)."""
        return cls(
            users=UsersService(resources),
            workflows=WorkflowsService(resources, settings.workflows),
            jobs=JobsService(resources, settings.jobs),
            notifications=NotificationsService(resources, settings.notifications),
            analytics=AnalyticsService(resources),
        )
