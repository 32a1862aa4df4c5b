"""The ``notifications`` table (reference §3.1, §8): idempotent creation by the workers, the unread
list filtered by the user's preference, and marking read.

Preference filter (reference §0.2 item 13, §8): ``ALL`` lists every kind, ``ALERTS`` only
``WEB_ALERT``, ``NONE`` nothing.  Only unread notifications are listed, newest first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

import asyncpg
from pydantic import BaseModel

from domain.cursors import decode_optional_cursor, paginate
from domain.enums import NotificationKind
from domain.errors import Invalid, NotFound
from domain.ids import uuid7
from domain.models import Notification, Page
from domain.notifications import NotificationDraft
from store.postgres import Queryable, rows_affected
from store.transaction import transaction

#: Default page size (``NOTIFICATIONS_SERVICE_CONFIG_FETCH_LIMIT``).
DEFAULT_PAGE_SIZE = 1000

_COLUMNS = "n.id, n.user_id, n.kind, n.payload, n.read_at, n.created_at, n.updated_at"

INSERT_NOTIFICATION = """
INSERT INTO notifications (id, user_id, kind, payload, idempotency_key)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id
"""

SELECT_BY_KEY = "SELECT id FROM notifications WHERE user_id = $1 AND idempotency_key = $2"

LIST_UNREAD = f"""
SELECT {_COLUMNS}
  FROM notifications n
  JOIN users u ON u.id = n.user_id
 WHERE n.user_id = $1
   AND n.read_at IS NULL
   AND (u.notification_preference = 'ALL'
        OR (u.notification_preference = 'ALERTS' AND n.kind = 'WEB_ALERT'))
   AND ($2::timestamp IS NULL OR (n.created_at, n.id) <= ($2::timestamp, $3::uuid))
 ORDER BY n.created_at DESC, n.id DESC
 LIMIT $4
"""

MARK_READ = """
UPDATE notifications SET read_at = COALESCE(read_at, now() AT TIME ZONE 'utc')
 WHERE user_id = $1 AND id = ANY($2::uuid[])
"""


async def create(
    db: Queryable,
    *,
    user_id: UUID,
    kind: NotificationKind | str,
    payload: Mapping[str, Any] | BaseModel,
    idempotency_key: str,
) -> UUID:
    """Admin (workers): create a notification unless ``(user_id, idempotency_key)`` exists; either
    way return its id.  ``Invalid`` for an empty key or unknown kind; ``NotFound`` for an unknown
    user."""
    row = _insert_args(user_id, kind, payload, idempotency_key)
    try:
        new_id = await db.fetchval(INSERT_NOTIFICATION, *row)
    except asyncpg.ForeignKeyViolationError:
        raise NotFound("user not found") from None
    if new_id is None:
        new_id = await db.fetchval(SELECT_BY_KEY, user_id, idempotency_key)
    return UUID(str(new_id))


def _insert_args(
    user_id: UUID, kind: NotificationKind | str, payload: Mapping[str, Any] | BaseModel, idempotency_key: str
) -> tuple[Any, ...]:
    """The checked arguments of :data:`INSERT_NOTIFICATION` (``Invalid`` names the bad field)."""
    if not idempotency_key:
        raise Invalid("idempotency_key is required")
    try:
        checked_kind = NotificationKind(kind)
    except ValueError:
        raise Invalid(f"kind must be one of {', '.join(k.value for k in NotificationKind)}") from None
    body = payload.model_dump(mode="json") if isinstance(payload, BaseModel) else dict(payload)
    return uuid7(), user_id, checked_kind.value, body, idempotency_key


async def create_draft(db: Queryable, draft: NotificationDraft) -> UUID:
    """:func:`create` for a :class:`domain.notifications.NotificationDraft`."""
    return await create(
        db,
        user_id=UUID(draft.user_id),
        kind=draft.kind,
        payload=draft.payload,
        idempotency_key=draft.idempotency_key,
    )


async def create_drafts(db: Queryable, drafts: Sequence[NotificationDraft]) -> None:
    """:func:`create_draft` for many drafts in one transaction (pipelined inserts; existing
    ``(user_id, idempotency_key)`` pairs are left as they are).  ``NotFound`` for an unknown user
    (nothing is created)."""
    if not drafts:
        return
    rows = [_insert_args(UUID(d.user_id), d.kind, d.payload, d.idempotency_key) for d in drafts]
    try:
        async with transaction(db) as conn:
            await conn.executemany(INSERT_NOTIFICATION, rows)
    except asyncpg.ForeignKeyViolationError:
        raise NotFound("user not found") from None


async def list_notifications(
    db: Queryable, user_id: UUID, *, cursor: str | None = None, page_size: int = DEFAULT_PAGE_SIZE
) -> Page[Notification]:
    """The user's unread notifications allowed by their preference, newest first.  ``Invalid`` for
    a malformed cursor."""
    position = decode_optional_cursor(cursor)
    rows = await db.fetch(
        LIST_UNREAD,
        user_id,
        position.created_at if position else None,
        position.id if position else None,
        page_size + 1,
    )
    return paginate([Notification.model_validate(dict(r)) for r in rows], page_size)


async def mark_read(db: Queryable, user_id: UUID, ids: Sequence[UUID]) -> int:
    """Set ``read_at`` (once) on the user's notifications among ``ids``; return how many matched.
    ``Invalid`` for an empty list; ``NotFound`` when none is the user's."""
    if not ids:
        raise Invalid("ids must contain at least one notification id")
    matched = rows_affected(await db.execute(MARK_READ, user_id, list(ids)))
    if matched == 0:
        raise NotFound("no matching notifications")
    return matched
