"""Notifications (reference §2.2, §8)."""

from __future__ import annotations

import json
from typing import Annotated
from uuid import UUID

from pydantic import Field

from domain.enums import NotificationKind
from domain.models import Notification
from serve_apps.schemas.common import ApiModel, OutModel, Timestamp


class NotificationOut(OutModel):
    """An unread notification; ``payload`` is the JSON text of
    ``{"title","message","entity_id","entity_type","action_url"}``."""

    id: UUID
    kind: NotificationKind
    payload: str
    read_at: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def from_record(cls, item: Notification) -> NotificationOut:
        return cls(
            id=item.id,
            kind=item.kind,
            payload=json.dumps(item.payload, separators=(",", ":")),
            read_at=item.read_at,
            created_at=item.created_at,
            updated_at=item.updated_at,
        )


class NotificationList(OutModel):
    """Unread notifications allowed by the caller's preference, newest first."""

    notifications: list[NotificationOut]
    cursor: str | None


class ListNotificationsQuery(OutModel):
    """Handle argument of ``NotificationsService.list_notifications``."""

    cursor: str | None = None


class MarkReadRequest(ApiModel):
    """``PUT /notifications``: at least one id."""

    ids: Annotated[list[UUID], Field(min_length=1)]
