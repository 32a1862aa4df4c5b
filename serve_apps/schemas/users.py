"""The user profile (reference §2.2 ``/users``)."""

from __future__ import annotations

from domain.enums import NotificationPreference
from serve_apps.schemas.common import ApiModel, OutModel, Timestamp


class UserProfile(OutModel):
    """``GET /users`` (no id, as in the seed)."""

    email: str
    notification_preference: NotificationPreference
    created_at: Timestamp
    updated_at: Timestamp


class UpdateUserRequest(ApiModel):
    """``PUT /users``.  ``password`` is accepted for compatibility and ignored, as in the seed."""

    notification_preference: NotificationPreference
    password: str | None = None
