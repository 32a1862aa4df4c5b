"""``/auth``: register, login, logout, validate, and personal API tokens (SPEC §5.5)."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Request, Response, status

from serve_apps.gateway.dependencies import (
    AnonymousCaller,
    Caller,
    MutatingCaller,
    MutatingPrincipal,
    State,
)
from serve_apps.gateway.errors import error_responses
from serve_apps.schemas.auth import (
    ApiTokenList,
    CreatedApiToken,
    CreateTokenRequest,
    Credentials,
    SessionResponse,
    TokenRef,
    ValidateResponse,
)

router = APIRouter(prefix="/auth", tags=["auth"])


async def _open_session(state: State, user_id: UUID, response: Response) -> SessionResponse:
    session = await state.auth.start_session(user_id)
    state.cookies.set(response, session)
    return SessionResponse(
        user_id=session.user_id, csrf_token=session.csrf_token, expires_at=session.expires_at
    )


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=SessionResponse,
    responses=error_responses(409),
    summary="Create an account and log in",
)
async def register(
    creds: Credentials, ctx: AnonymousCaller, state: State, response: Response
) -> SessionResponse:
    """Sets the ``session`` cookie; the CSRF token is in the body and the ``X-CSRF-Token`` header."""
    identity = await state.services.users.register(ctx, creds)
    return await _open_session(state, identity.user_id, response)


@router.post(
    "/login",
    status_code=status.HTTP_201_CREATED,
    response_model=SessionResponse,
    responses=error_responses(404, 429),
    summary="Log in",
)
async def login(
    creds: Credentials, ctx: AnonymousCaller, state: State, request: Request, response: Response
) -> SessionResponse:
    """404 for an unknown e-mail, 400 for a wrong password; attempts are limited per e-mail and per
    client address (429 with ``Retry-After``)."""
    address = state.client_addresses.address(request)
    await state.auth.check_login_allowed(creds.email, address)
    identity = await state.services.users.login(ctx, creds)
    await state.auth.login_succeeded(creds.email, address)
    return await _open_session(state, identity.user_id, response)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 403),
    summary="End the cookie session",
)
async def logout(principal: MutatingPrincipal, state: State, response: Response) -> None:
    """The session is deleted server-side and the cookie expired."""
    await state.auth.end_session(principal)
    state.cookies.clear(response)


@router.post(
    "/validate",
    response_model=ValidateResponse,
    responses=error_responses(401, 403),
    summary="Check the credentials",
)
async def validate(principal: MutatingPrincipal) -> ValidateResponse:
    """200 with the caller's id when the session (plus CSRF token) or bearer token is valid."""
    return ValidateResponse(user_id=principal.user_id, auth_method=principal.method)


@router.post(
    "/tokens",
    status_code=status.HTTP_201_CREATED,
    response_model=CreatedApiToken,
    responses=error_responses(401, 403),
    summary="Create a personal API token",
)
async def create_token(req: CreateTokenRequest, ctx: MutatingCaller, state: State) -> CreatedApiToken:
    """The token is shown once; send it as ``Authorization: Bearer <token>``."""
    return await state.services.users.create_token(ctx, req)


@router.get("/tokens", response_model=ApiTokenList, responses=error_responses(401), summary="List API tokens")
async def list_tokens(ctx: Caller, state: State) -> ApiTokenList:
    """Metadata of the caller's tokens, newest first."""
    return await state.services.users.list_tokens(ctx)


@router.delete(
    "/tokens/{token_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 403, 404),
    summary="Revoke an API token",
)
async def revoke_token(token_id: UUID, ctx: MutatingCaller, state: State) -> None:
    """Takes effect immediately (idempotent)."""
    await state.services.users.revoke_token(ctx, TokenRef(token_id=token_id))
