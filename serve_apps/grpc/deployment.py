"""The ``GrpcGateway`` Serve deployment and the ``chronoverse-grpc`` application (ADR 0005).

A Serve application has one ingress, and the HTTP application's is the FastAPI ``Gateway``, so the
gRPC API is a second application whose ingress is :class:`GrpcGateway`.  It owns no domain logic and
no domain deployments: it calls the HTTP application's five services through
``serve.get_deployment_handle(name, app_name=<http app>)`` — the same one hop per call as the HTTP
gateway — resolves bearer tokens with its own small PostgreSQL pool, and serves ``StreamJobLogs``
from its own :class:`~serve_apps.live_logs.LiveLogHub` (one Redis pub/sub connection per replica).

Serve's proxy (or, with the HAProxy ingress, the replica's own gRPC server) finds the RPC methods
through ``grpc_options.grpc_servicer_functions``: :data:`GRPC_SERVICER_FUNCTIONS`.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application
from starlette.requests import Request
from starlette.responses import JSONResponse

from domain.config import Settings
from domain.topology import ClusterSpec
from serve_apps.gateway.clients import Services
from serve_apps.gateway.errors import error_response
from serve_apps.grpc.auth import TokenAuthenticator
from serve_apps.grpc.servicer import GrpcApi
from serve_apps.live_logs import LiveLogHub
from serve_apps.resources import ServiceResources
from serve_apps.telemetry import setup_tracing

#: The deployment's name (its ``serve.deployments`` entry in the cluster file).
GRPC_DEPLOYMENT = "GrpcGateway"

#: The ``add_<Service>Servicer_to_server`` functions Serve registers on its gRPC servers.  Import
#: paths into the installed package: the proxy process does not get the app's runtime_env (SPEC §9).
GRPC_SERVICER_FUNCTIONS: tuple[str, ...] = tuple(
    f"serve_apps.grpc.v1.{module}_pb2_grpc.add_{service}Servicer_to_server"
    for module, service in (
        ("users", "UsersService"),
        ("workflows", "WorkflowsService"),
        ("jobs", "JobsService"),
        ("notifications", "NotificationsService"),
        ("analytics", "AnalyticsService"),
        ("health", "Health"),
    )
)

#: HTTP route prefix of the gRPC application.  Not for HTTP clients (anything under it is 404): Serve's
#: HAProxy ingress only builds gRPC backends for applications that have a route prefix.
GRPC_ROUTE_PREFIX = "/_grpc"

#: Token lookups are one indexed read per call: a small pool is plenty.
GRPC_POOL_MAX = 4


def remote_services(app_name: str, resources: ServiceResources) -> Services:
    """Clients of the five domain deployments of the Serve application ``app_name`` (the names
    :func:`serve_apps.app.build_app` gives them); cache hits of the hot reads are answered with
    ``resources``' Redis client, as in the HTTP gateway."""

    def handle(deployment: str) -> Any:
        return serve.get_deployment_handle(deployment, app_name=app_name)

    return Services.remote(
        users=handle("UsersService"),
        workflows=handle("WorkflowsService"),
        jobs=handle("JobsService"),
        notifications=handle("NotificationsService"),
        analytics=handle("AnalyticsService"),
        cache_resources=resources,
    )


@serve.deployment(name=GRPC_DEPLOYMENT)
class GrpcGateway(GrpcApi):
    """Serve shell of :class:`serve_apps.grpc.servicer.GrpcApi`.

    Handles are looked up on the first call, not here: the HTTP application may still be deploying
    when this replica starts (both are deployed together).
    """

    def __init__(self, settings: Settings, services_app: str) -> None:
        setup_tracing("chronoverse-grpc")
        pool_max = min(GRPC_POOL_MAX, settings.postgres.max_conns)
        self._resources = ServiceResources(settings, name="chronoverse-grpc", pool_min=1, pool_max=pool_max)
        super().__init__(
            lambda: remote_services(services_app, self._resources),
            TokenAuthenticator(self._resources),
            # One pub/sub connection for every StreamJobLogs call of this replica (opened lazily).
            LiveLogHub(settings.redis, client_name="chronoverse-grpc-live"),
        )

    async def __call__(self, request: Request) -> JSONResponse:
        """HTTP requests under :data:`GRPC_ROUTE_PREFIX` find nothing here."""
        return error_response(404, "not_found", "route not found")

    async def __del__(self) -> None:
        await self.live_logs.close()
        await self._resources.close()


def build_grpc_app(settings: Settings, spec: ClusterSpec) -> Application:
    """The ``chronoverse-grpc`` application: ``GrpcGateway`` (options from the cluster file) calling
    the services of the HTTP application ``spec.serve.app_name``."""
    from serve_apps.app import deployment_options  # serve_apps.app imports this module

    gateway: Any = GrpcGateway
    return gateway.options(**deployment_options(spec, GRPC_DEPLOYMENT)).bind(settings, spec.serve.app_name)
