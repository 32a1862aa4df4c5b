"""The five domain services as the gateway sees them: either Serve deployment handles (one hop
each) or the plain service objects in-process (plain uvicorn, the benchmark baseline, tests).

Routes call ``services.workflows.get_workflow(ctx, ref)`` either way; :class:`RemoteService`
turns that into ``await handle.get_workflow.remote(ctx, ref)``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from domain.config import Settings
from serve_apps.resources import ServiceResources
from serve_apps.services.analytics import AnalyticsService
from serve_apps.services.jobs import JobsService
from serve_apps.services.notifications import NotificationsService
from serve_apps.services.users import UsersService
from serve_apps.services.workflows import WorkflowsService

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
        method = self._methods.get(name)
        if method is None:
            bound = getattr(self._handle, name)

            async def call(*args: Any, **kwargs: Any) -> Any:
                return await bound.remote(*args, **kwargs)

            call.__name__ = name
            self._methods[name] = method = call
        return method


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
    ) -> Services:
        """Clients that call the Serve deployments through their handles."""
        return cls(
            users=cast(UsersService, RemoteService(users)),
            workflows=cast(WorkflowsService, RemoteService(workflows)),
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
