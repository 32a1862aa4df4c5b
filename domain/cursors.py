"""Keyset pagination cursors for workflows, jobs and notifications (reference §2.1).

A cursor is ``base64(std)`` of ``"<id>$<created_at RFC3339Nano>"`` of the *first row of the next page*;
the next query reads rows with ``(created_at, id) <= cursor`` ordered ``created_at DESC, id DESC``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple, Protocol, TypeVar
from uuid import UUID

from domain.errors import Invalid
from domain.event_keys import parse_rfc3339nano, rfc3339nano
from domain.models import Page


class Cursor(NamedTuple):
    """The position a page starts at (inclusive)."""

    id: UUID
    created_at: datetime  # naive UTC


def encode_cursor(row_id: UUID, created_at: datetime) -> str:
    """Cursor naming the row ``(row_id, created_at)`` as the first of the next page."""
    raw = f"{row_id}${rfc3339nano(created_at)}"
    return base64.b64encode(raw.encode()).decode()


def decode_cursor(cursor: str) -> Cursor:
    """Parse a cursor made by :func:`encode_cursor`; anything else raises ``Invalid`` (HTTP 400)."""
    try:
        raw = base64.b64decode(cursor.encode("ascii"), validate=True).decode()
        id_text, created_text = raw.split("$", 1)
        return Cursor(UUID(id_text), parse_rfc3339nano(created_text).replace(tzinfo=None))
    except (ValueError, UnicodeError, binascii.Error):
        raise Invalid("cursor: invalid cursor") from None


def decode_optional_cursor(cursor: str | None) -> Cursor | None:
    """``None``/empty → first page; otherwise :func:`decode_cursor`."""
    if not cursor:
        return None
    return decode_cursor(cursor)


class _Keyed(Protocol):
    @property
    def id(self) -> UUID: ...

    @property
    def created_at(self) -> datetime: ...


K = TypeVar("K", bound=_Keyed)


def paginate(rows: Sequence[K], page_size: int) -> Page[K]:
    """Cut a ``page_size + 1`` newest-first fetch into a page plus the cursor of the row after it."""
    if len(rows) > page_size:
        following = rows[page_size]
        return Page(items=list(rows[:page_size]), cursor=encode_cursor(following.id, following.created_at))
    return Page(items=list(rows), cursor=None)
