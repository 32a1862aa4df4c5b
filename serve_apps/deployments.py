"""The Serve deployments: thin shells around the plain classes of :mod:`serve_apps.services` and
the gateway app factory.  Each replica builds its own clients (:class:`ServiceResources`, lazily)
from the settings it is bound with and closes them when Serve stops it.

Options (resources, ``max_ongoing_requests``, ``autoscaling_config``) are not set here: they come
from the cluster file through :func:`serve_apps.app.build_app`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from domain.config import Settings
from serve_apps.gateway.app import create_gateway_app, gateway_resources
from serve_apps.gateway.clients import Services
from serve_apps.resources import ServiceResources
from serve_apps.services.analytics import AnalyticsService as _AnalyticsService
from serve_apps.services.jobs import JobsService as _JobsService
from serve_apps.services.notifications import NotificationsService as _NotificationsService
from serve_apps.services.users import UsersService as _UsersService
from serve_apps.services.workflows import WorkflowsService as _WorkflowsService
from serve_apps.telemetry import setup_tracing
from store.logstore.remote import log_store_client

log = logging.getLogger(__name__)

#: Set in the environment of every Ray process started with Serve's HAProxy ingress
#: (:func:`serve_apps.app.haproxy_ingress_env`); replicas inherit it from their raylet.
HAPROXY_INGRESS_ENV = "RAY_SERVE_ENABLE_HA_PROXY"


@serve.deployment(name="UsersService")
class UsersService(_UsersService):
    """Serve shell of :class:`serve_apps.services.users.UsersService`."""

    def __init__(self, settings: Settings) -> None:
        setup_tracing("chronoverse-users")
        super().__init__(ServiceResources(settings, name="chronoverse-users"))

    async def __del__(self) -> None:
        await self.resources.close()


@serve.deployment(name="WorkflowsService")
class WorkflowsService(_WorkflowsService):
    """Serve shell of :class:`serve_apps.services.workflows.WorkflowsService`; also runs the
    idempotency-key cleanup loop (``WORKFLOWS_CLEANUP_*``; every replica may run it, the delete
    skips rows another replica holds)."""

    async def __init__(self, settings: Settings) -> None:  # type: ignore[misc]  # Serve awaits it
        setup_tracing("chronoverse-workflows")
        super().__init__(ServiceResources(settings, name="chronoverse-workflows"), settings.workflows)
        self._cleanup: asyncio.Task[None] | None = None
        if settings.workflows.cleanup_enabled:
            self._cleanup = asyncio.create_task(self._cleanup_loop())

    async def _cleanup_loop(self) -> None:
        interval = self.config.cleanup_interval.total_seconds()
        while True:
            await asyncio.sleep(interval)
            try:
                purged = await self.cleanup_idempotency_keys()
                if purged:
                    log.info("purged %d expired idempotency keys", purged)
            except Exception:  # a failed round is retried next interval
                log.exception("idempotency key cleanup failed")

    async def __del__(self) -> None:
        if self._cleanup is not None:
            self._cleanup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._cleanup
        await self.resources.close()


@serve.deployment(name="JobsService")
class JobsService(_JobsService):
    """Serve shell of :class:`serve_apps.services.jobs.JobsService`; reads job logs through the
    cluster's log store (the ``log-store`` actor with chdb, the server with http)."""

    def __init__(self, settings: Settings) -> None:
        setup_tracing("chronoverse-jobs")
        super().__init__(
            ServiceResources(settings, name="chronoverse-jobs"),
            settings.jobs,
            log_store_client(settings.clickhouse, settings.ray.namespace),
        )

    async def __del__(self) -> None:
        await self.logs().close()
        await self.resources.close()


@serve.deployment(name="NotificationsService")
class NotificationsService(_NotificationsService):
    """Serve shell of :class:`serve_apps.services.notifications.NotificationsService`."""

    def __init__(self, settings: Settings) -> None:
        setup_tracing("chronoverse-notifications")
        super().__init__(ServiceResources(settings, name="chronoverse-notifications"), settings.notifications)

    async def __del__(self) -> None:
        await self.resources.close()


@serve.deployment(name="AnalyticsService")
class AnalyticsService(_AnalyticsService):
    """Serve shell of :class:`serve_apps.services.analytics.AnalyticsService`."""

    def __init__(self, settings: Settings) -> None:
        setup_tracing("chronoverse-analytics")
        super().__init__(ServiceResources(settings, name="chronoverse-analytics"))

    async def __del__(self) -> None:
        await self.resources.close()


@serve.deployment(name="Gateway")
@serve.ingress()
class Gateway:
    """The HTTP ingress: resolves the caller itself, answers cache hits of the hot reads itself
    (ADR 0004) and makes one handle call per other request.

    The FastAPI app is built per replica (late-bound ingress) so it closes over this replica's
    handles and clients instead of being pickled with the class.
    """

    def __init__(
        self,
        settings: Settings,
        users: DeploymentHandle,
        workflows: DeploymentHandle,
        jobs: DeploymentHandle,
        notifications: DeploymentHandle,
        analytics: DeploymentHandle,
    ) -> None:
        self._settings = settings
        # One set of clients per replica: sessions, tokens, readiness and the cache-hit reads.
        self._resources = gateway_resources(settings)
        self._services = Services.remote(
            users=users,
            workflows=workflows,
            jobs=jobs,
            notifications=notifications,
            analytics=analytics,
            cache_resources=self._resources,
        )

    def __serve_build_asgi_app__(self) -> FastAPI:
        # Behind HAProxy the peer of every request is HAProxy itself (login rate limiting, ADR 0004).
        behind_haproxy = os.environ.get(HAPROXY_INGRESS_ENV) == "1"
        return create_gateway_app(
            self._settings, self._services, self._resources, behind_proxy=behind_haproxy, under_serve=True
        )
