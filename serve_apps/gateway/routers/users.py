"""``/users``: the caller's profile and notification preference."""

from __future__ import annotations

from fastapi import APIRouter, status

from serve_apps.gateway.dependencies import Caller, MutatingCaller, State
from serve_apps.gateway.errors import error_responses
from serve_apps.schemas.users import UpdateUserRequest, UserProfile

router = APIRouter(prefix="/users", tags=["users"])


@router.get("", response_model=UserProfile, responses=error_responses(401), summary="The caller's profile")
async def get_user(ctx: Caller, state: State) -> UserProfile:
    """E-mail, notification preference and timestamps (no id)."""
    return await state.services.users.get_user(ctx)


@router.put(
    "",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 403),
    summary="Set the notification preference",
)
async def update_user(req: UpdateUserRequest, ctx: MutatingCaller, state: State) -> None:
    """``ALERTS`` (only WEB_ALERT), ``ALL`` or ``NONE``."""
    await state.services.users.update_user(ctx, req)
