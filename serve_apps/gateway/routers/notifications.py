"""``/notifications``: unread notifications and marking them read (reference §2.2)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from serve_apps.gateway.dependencies import Caller, MutatingCaller, State
from serve_apps.gateway.errors import error_responses
from serve_apps.schemas.notifications import ListNotificationsQuery, MarkReadRequest, NotificationList

router = APIRouter(prefix="/notifications", tags=["notifications"])


@router.get(
    "", response_model=NotificationList, responses=error_responses(401), summary="Unread notifications"
)
async def list_notifications(
    ctx: Caller,
    state: State,
    cursor: Annotated[str | None, Query(description="From the previous page.")] = None,
) -> NotificationList:
    """Filtered by the caller's preference: ALL, ALERTS (only WEB_ALERT) or NONE (always empty)."""
    return await state.services.notifications.list_notifications(ctx, ListNotificationsQuery(cursor=cursor))


@router.put(
    "",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 403, 404),
    summary="Mark notifications read",
)
async def mark_read(req: MarkReadRequest, ctx: MutatingCaller, state: State) -> None:
    """404 when none of the ids is the caller's."""
    await state.services.notifications.mark_read(ctx, req)
