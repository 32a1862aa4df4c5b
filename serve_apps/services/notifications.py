"""The caller's notifications: unread ones by preference, and marking them read (reference §2.2, §8).

Creation is internal (the workflow worker writes them through :mod:`store.notifications`).
"""

from __future__ import annotations

from domain.config import NotificationsServiceConfig
from serve_apps.resources import ServiceResources
from serve_apps.schemas.notifications import (
    ListNotificationsQuery,
    MarkReadRequest,
    NotificationList,
    NotificationOut,
)
from serve_apps.services.context import CallContext, service_method
from store import notifications as notifications_repo


class NotificationsService:
    """List unread notifications and mark them read."""

    def __init__(self, resources: ServiceResources, config: NotificationsServiceConfig) -> None:
        self.resources = resources
        self.config = config

    @service_method
    async def list_notifications(self, ctx: CallContext, query: ListNotificationsQuery) -> NotificationList:
        """Unread notifications allowed by the caller's preference, newest first."""
        page = await notifications_repo.list_notifications(
            await self.resources.pool(),
            ctx.require_user(),
            cursor=query.cursor,
            page_size=self.config.fetch_limit,
        )
        return NotificationList(
            notifications=[NotificationOut.from_record(n) for n in page.items], cursor=page.cursor
        )

    @service_method
    async def mark_read(self, ctx: CallContext, req: MarkReadRequest) -> None:
        """Mark the caller's notifications among ``req.ids`` read (404 when none is the caller's)."""
        await notifications_repo.mark_read(await self.resources.pool(), ctx.require_user(), req.ids)
