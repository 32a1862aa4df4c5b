"""The gateway's FastAPI application factory: routers, middleware, error mapping, OpenAPI.

The same factory serves the Serve ingress deployment (services behind handles) and plain uvicorn
(services in-process, :func:`create_local_app`), so the benchmark compares identical handler code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import FastAPI

from domain.config import Settings
from serve_apps.gateway.auth import Authenticator, ClientAddressPolicy, CookiePolicy
from serve_apps.gateway.clients import Services
from serve_apps.gateway.dependencies import GatewayState
from serve_apps.gateway.errors import install_error_handlers
from serve_apps.gateway.middleware import install_middleware
from serve_apps.gateway.routers import ROUTERS
from serve_apps.live_logs import LiveLogHub
from serve_apps.resources import ServiceResources
from serve_apps.telemetry import setup_tracing
from store.sessions import LoginRateLimiter, SessionStore

#: The gateway only reads ``api_tokens`` and probes readiness: a small pool is plenty.
GATEWAY_POOL_MAX = 4

DESCRIPTION = """\
Chronoverse: a distributed job scheduler on Ray.

**Authentication.** `POST /auth/register` or `/auth/login` sets an HttpOnly `session` cookie and
returns a `csrf_token`; every mutating request made with the cookie must carry it in the
`X-CSRF-Token` header (403 otherwise). Scripts can use a personal API token instead
(`POST /auth/tokens`, then `Authorization: Bearer <token>`; no CSRF token needed).

**Errors** are `{"error": {"code": "...", "message": "..."}}`; validation errors are 400.
`POST /workflows`, `PUT /workflows/{id}` and `POST /workflows/{id}/jobs/schedule` require an
`Idempotency-Key` header.
"""


def _version() -> str:
    try:
        return version("chronoverse")
    except PackageNotFoundError:
        return "0.0.0"


def create_gateway_app(
    settings: Settings,
    services: Services,
    resources: ServiceResources,
    *,
    auth: Authenticator | None = None,
    also_close: Sequence[ServiceResources] = (),
    behind_proxy: bool = False,
    under_serve: bool = False,
) -> FastAPI:
    """Build the gateway.  ``resources`` (the gateway's own Redis client and small PostgreSQL pool)
    resolve sessions and tokens unless another ``auth`` is given; ``services`` are the five domain
    services (handles or local).  ``behind_proxy``: every peer is a proxy (Serve's HAProxy
    ingress), never the client.  ``under_serve``: Serve's own middleware answers with the request id
    (this app does otherwise).  The replica's live-log hub (``app.state.live_logs``, a
    :class:`~serve_apps.live_logs.LiveLogHub`) is made here.  On shutdown the app closes the hub,
    ``resources`` and ``also_close``."""
    setup_tracing("chronoverse-gateway")
    # One pub/sub connection for every SSE viewer of this replica (opened by the first one).
    live_logs = LiveLogHub(settings.redis, client_name=f"{resources.name}-live")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await live_logs.close()
        for owned in (resources, *also_close):
            await owned.close()

    app = FastAPI(
        title="Chronoverse API",
        version=_version(),
        description=DESCRIPTION,
        docs_url="/docs",
        openapi_url="/openapi.json",
        redoc_url=None,
        lifespan=lifespan,
        # One server span per request comes from AccessLogMiddleware (with the route, the status and
        # the access-log line); FastAPI's own spans per dependency/serialisation would cost more
        # than the handlers on the hot path.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    if auth is None:
        redis = resources.redis()
        auth = Authenticator(
            SessionStore(redis, settings.server),
            LoginRateLimiter.from_config(redis, settings.server),
            resources,
        )
    app.state.gateway = GatewayState(
        settings=settings,
        services=services,
        auth=auth,
        cookies=CookiePolicy.from_config(settings.server),
        resources=resources,
        client_addresses=ClientAddressPolicy(
            trust_forwarded_for=settings.server.trust_forwarded_for, peer_is_proxy=behind_proxy
        ),
    )
    app.state.live_logs = live_logs
    install_error_handlers(app)
    install_middleware(app, settings.server, echo_request_id=not under_serve)
    for router in ROUTERS:
        app.include_router(router)
    _document_400_not_422(app)
    return app


def _document_400_not_422(app: FastAPI) -> None:
    """Make OpenAPI match the real responses: validation errors are 400 with the common error
    body (installed by :func:`install_error_handlers`), so FastAPI's default 422 entries and their
    schemas are dropped."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def gateway_resources(settings: Settings) -> ServiceResources:
    """The gateway replica's own clients (sessions in Redis, tokens and readiness in PostgreSQL)."""
    return ServiceResources(
        settings,
        name="chronoverse-gateway",
        pool_min=1,
        pool_max=min(GATEWAY_POOL_MAX, settings.postgres.max_conns),
    )


def create_local_app(settings: Settings) -> FastAPI:
    """The gateway with the five services in-process (no Ray): for plain uvicorn and the
    benchmark baseline.  Services share one set of clients."""
    resources = gateway_resources(settings)
    service_resources = ServiceResources(settings, name="chronoverse-local-services")
    return create_gateway_app(
        settings, Services.local(settings, service_resources), resources, also_close=(service_resources,)
    )
