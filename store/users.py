"""The ``users`` table (reference §3.1): registration, login lookup, profile and preference.

Passwords arrive already hashed (:func:`domain.passwords.hash_password`, run in a thread by the
caller: bcrypt is slow).  E-mails are normalised with :func:`domain.passwords.normalize_email` on
both write and lookup, so ``Alice@Example.com`` and ``alice@example.com`` are one account.
"""

from __future__ import annotations

from uuid import UUID

import asyncpg

from domain.enums import NotificationPreference
from domain.errors import AlreadyExists, Invalid, NotFound
from domain.ids import uuid7
from domain.models import User, UserCredentials
from domain.passwords import normalize_email
from store.cache import Cache
from store.postgres import Queryable

_COLUMNS = "id, email, notification_preference::text AS notification_preference, created_at, updated_at"

INSERT_USER = f"""
INSERT INTO users (id, email, password)
VALUES ($1, $2, $3)
RETURNING {_COLUMNS}
"""

SELECT_USER = f"SELECT {_COLUMNS} FROM users WHERE id = $1"

SELECT_CREDENTIALS = "SELECT id, email, password AS password_hash FROM users WHERE email = $1"

UPDATE_PREFERENCE = f"""
UPDATE users SET notification_preference = $2::notification_preference
 WHERE id = $1
RETURNING {_COLUMNS}
"""


async def create(db: Queryable, *, email: str, password_hash: str) -> User:
    """Register a user.  Raises ``Invalid`` for a malformed e-mail, ``AlreadyExists`` (409) when the
    e-mail is taken."""
    address = normalize_email(email)
    try:
        row = await db.fetchrow(INSERT_USER, uuid7(), address, password_hash)
    except asyncpg.UniqueViolationError:
        raise AlreadyExists("a user with this email already exists") from None
    return User.model_validate(dict(row))


async def get(db: Queryable, user_id: UUID, *, cache: Cache | None = None) -> User:
    """A user by id (read-through ``user:<id>`` when ``cache`` is given).  ``NotFound`` if absent."""
    lookup = await cache.get_user(user_id) if cache is not None else None
    if lookup is not None and lookup.value is not None:
        return lookup.value
    row = await db.fetchrow(SELECT_USER, user_id)
    if row is None:
        raise NotFound("user not found")
    user = User.model_validate(dict(row))
    if cache is not None and lookup is not None:
        await cache.put_user(lookup.epoch, user)
    return user


async def get_by_email(db: Queryable, email: str) -> UserCredentials:
    """Id and bcrypt hash for login.  ``NotFound`` (404, as the seed) for an unknown e-mail;
    ``Invalid`` for a malformed one."""
    row = await db.fetchrow(SELECT_CREDENTIALS, normalize_email(email))
    if row is None:
        raise NotFound("user not found")
    return UserCredentials.model_validate(dict(row))


async def update_notification_preference(
    db: Queryable, user_id: UUID, preference: NotificationPreference | str, *, cache: Cache | None
) -> User:
    """Set ``notification_preference`` (``ALERTS|ALL|NONE``; anything else is ``Invalid``) and
    invalidate the cached user before returning.  ``NotFound`` if the user is gone."""
    try:
        value = NotificationPreference(preference)
    except ValueError:
        raise Invalid("notification_preference must be one of ALERTS, ALL, NONE") from None
    row = await db.fetchrow(UPDATE_PREFERENCE, user_id, value.value)
    if row is None:
        raise NotFound("user not found")
    if cache is not None:
        await cache.invalidate_user(user_id)
    return User.model_validate(dict(row))
