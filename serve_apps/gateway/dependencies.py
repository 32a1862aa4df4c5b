"""FastAPI dependencies: the gateway's state, the caller (session cookie or bearer token), CSRF on
mutations and the ``Idempotency-Key`` header.

Routes declare what they need with the ``Annotated`` aliases at the bottom, so OpenAPI shows the
cookie/bearer security schemes and the ``X-CSRF-Token``/``Idempotency-Key`` headers.  Every
dependency is ``async def``: FastAPI runs plain ``def`` dependencies in a thread pool, which costs
more than the work they do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from domain.config import Settings
from domain.errors import Invalid, Unauthenticated
from serve_apps.gateway.auth import (
    SESSION_COOKIE,
    Authenticator,
    ClientAddressPolicy,
    CookiePolicy,
    Principal,
)
from serve_apps.gateway.clients import Services
from serve_apps.resources import ServiceResources
from serve_apps.services.context import CallContext

IDEMPOTENCY_KEY_MAX_LENGTH = 255


@dataclass(frozen=True, slots=True)
class GatewayState:
    """Everything a route needs, built once per gateway replica."""

    settings: Settings
    services: Services
    auth: Authenticator
    cookies: CookiePolicy
    resources: ServiceResources
    client_addresses: ClientAddressPolicy


async def get_state(request: Request) -> GatewayState:
    """The gateway state stored on the app by :func:`serve_apps.gateway.app.create_gateway_app`."""
    state: GatewayState = request.app.state.gateway
    return state


_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiToken",
    description="A personal API token from POST /auth/tokens (no CSRF token needed).",
)
_session_cookie = APIKeyCookie(
    name=SESSION_COOKIE,
    auto_error=False,
    scheme_name="SessionCookie",
    description="Set by /auth/register and /auth/login. Mutations also need the X-CSRF-Token header.",
)


async def get_principal(
    request: Request,
    state: Annotated[GatewayState, Depends(get_state)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    session_id: Annotated[str | None, Depends(_session_cookie)],
) -> Principal:
    """The caller: a bearer token when an ``Authorization`` header is present, else the session."""
    if request.headers.get("authorization") is not None:
        if bearer is None:
            raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
        return await state.auth.from_bearer(bearer.credentials)
    return await state.auth.from_session(session_id)


async def get_mutating_principal(
    principal: Annotated[Principal, Depends(get_principal)],
    state: Annotated[GatewayState, Depends(get_state)],
    csrf_token: Annotated[
        str | None,
        Header(
            alias="X-CSRF-Token",
            description="The CSRF token of the session (not needed with a bearer token).",
        ),
    ] = None,
) -> Principal:
    """The caller of a state-changing route: cookie sessions must present their CSRF token (403)."""
    state.auth.check_csrf(principal, csrf_token)
    return principal


def _context(request: Request, principal: Principal | None) -> CallContext:
    return CallContext.current(
        user_id=principal.user_id if principal else None,
        request_id=getattr(request.state, "request_id", ""),
    )


async def get_caller(
    request: Request, principal: Annotated[Principal, Depends(get_principal)]
) -> CallContext:
    """Call context of an authenticated read."""
    return _context(request, principal)


async def get_mutating_caller(
    request: Request, principal: Annotated[Principal, Depends(get_mutating_principal)]
) -> CallContext:
    """Call context of an authenticated, CSRF-checked mutation."""
    return _context(request, principal)


async def get_anonymous_caller(request: Request) -> CallContext:
    """Call context of register/login (no user yet)."""
    return _context(request, None)


async def get_idempotency_key(
    key: Annotated[
        str,
        Header(
            alias="Idempotency-Key",
            description="Replays with the same key and body return the first "
            "answer; the same key with another body is 409.",
        ),
    ],
) -> str:
    """The ``Idempotency-Key`` header: required and non-empty (400), at most 255 characters."""
    if not key.strip():
        raise Invalid("Idempotency-Key header is required", code="idempotency_key_required")
    if len(key) > IDEMPOTENCY_KEY_MAX_LENGTH:
        raise Invalid(f"Idempotency-Key header must be at most {IDEMPOTENCY_KEY_MAX_LENGTH} characters")
    return key.strip()


State = Annotated[GatewayState, Depends(get_state)]
Caller = Annotated[CallContext, Depends(get_caller)]
MutatingCaller = Annotated[CallContext, Depends(get_mutating_caller)]
MutatingPrincipal = Annotated[Principal, Depends(get_mutating_principal)]
AnonymousCaller = Annotated[CallContext, Depends(get_anonymous_caller)]
IdempotencyKey = Annotated[str, Depends(get_idempotency_key)]
