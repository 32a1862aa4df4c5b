"""Personal API tokens for ``Authorization: Bearer`` (SPEC §5.5), table ``api_tokens``.

A token is ``cvt_`` + 43 url-safe random characters (256 bits).  Only its sha256 hex is stored, with
a short ``prefix`` so users can tell tokens apart; the token itself is shown once, at creation.
Resolution is a unique-index lookup of the hash; revoked or expired tokens are ``Unauthenticated``.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg

from domain.errors import Invalid, NotFound, Unauthenticated
from domain.ids import uuid7
from domain.models import ApiToken, IssuedApiToken
from store.postgres import Queryable, rows_affected

TOKEN_PREFIX = "cvt_"
NAME_MAX_LENGTH = 100
#: How stale ``last_used_at`` may get: at most one write per token per interval on the hot path.
TOUCH_INTERVAL = timedelta(minutes=1)
_SHOWN_PREFIX_LENGTH = len(TOKEN_PREFIX) + 6

_COLUMNS = "id, user_id, name, prefix, created_at, last_used_at, expires_at, revoked_at"

INSERT_TOKEN = f"""
INSERT INTO api_tokens (id, user_id, name, token_hash, prefix, expires_at)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING {_COLUMNS}
"""

LIST_TOKENS = f"SELECT {_COLUMNS} FROM api_tokens WHERE user_id = $1 ORDER BY created_at DESC, id DESC"

REVOKE_TOKEN = """
UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, now() AT TIME ZONE 'utc')
 WHERE id = $1 AND user_id = $2
"""

SELECT_BY_HASH = """
SELECT id, user_id, revoked_at IS NOT NULL AS revoked,
       expires_at IS NOT NULL AND expires_at <= (now() AT TIME ZONE 'utc') AS expired,
       last_used_at IS NULL OR last_used_at < (now() AT TIME ZONE 'utc') - $2::interval AS touch_due
  FROM api_tokens
 WHERE token_hash = $1
"""

TOUCH_TOKEN = "UPDATE api_tokens SET last_used_at = now() AT TIME ZONE 'utc' WHERE id = $1"


def hash_token(token: str) -> str:
    """sha256 hex of a token: what is stored and looked up."""
    return hashlib.sha256(token.encode()).hexdigest()


def looks_like_token(value: str) -> bool:
    """Whether a bearer credential has our token shape (cheap check before a database lookup)."""
    return value.startswith(TOKEN_PREFIX) and len(value) > len(TOKEN_PREFIX) + 16


async def create(
    db: Queryable, user_id: UUID, *, name: str, expires_at: datetime | None = None
) -> IssuedApiToken:
    """Issue a token for the user.  ``Invalid`` for an empty/too long name or a past ``expires_at``;
    ``NotFound`` for an unknown user.  The returned ``token`` is never retrievable again."""
    clean_name = (name or "").strip()
    if not clean_name:
        raise Invalid("name is required")
    if len(clean_name) > NAME_MAX_LENGTH:
        raise Invalid(f"name must be at most {NAME_MAX_LENGTH} characters")
    expiry = None
    if expires_at is not None:
        expiry = expires_at if expires_at.tzinfo is None else expires_at.astimezone(UTC).replace(tzinfo=None)
        if expiry <= datetime.now(UTC).replace(tzinfo=None):
            raise Invalid("expires_at must be in the future")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    try:
        row = await db.fetchrow(
            INSERT_TOKEN, uuid7(), user_id, clean_name, hash_token(token), token[:_SHOWN_PREFIX_LENGTH],
            expiry,
        )
    except asyncpg.ForeignKeyViolationError:
        raise NotFound("user not found") from None
    return IssuedApiToken(token=token, record=ApiToken.model_validate(dict(row)))


async def list_tokens(db: Queryable, user_id: UUID) -> list[ApiToken]:
    """The user's tokens (revoked and expired ones included, with their timestamps), newest first."""
    return [ApiToken.model_validate(dict(r)) for r in await db.fetch(LIST_TOKENS, user_id)]


async def revoke(db: Queryable, user_id: UUID, token_id: UUID) -> None:
    """Revoke one of the user's tokens (idempotent).  ``NotFound`` for a missing or foreign id."""
    if rows_affected(await db.execute(REVOKE_TOKEN, token_id, user_id)) == 0:
        raise NotFound("token not found")


async def resolve(db: Queryable, token: str) -> UUID:
    """The user a bearer token belongs to, recording its use (at most once per ``TOUCH_INTERVAL``).
    ``Unauthenticated`` (401) for an unknown, revoked or expired token."""
    if not looks_like_token(token):
        raise Unauthenticated("invalid token")
    row = await db.fetchrow(SELECT_BY_HASH, hash_token(token), TOUCH_INTERVAL)
    if row is None:
        raise Unauthenticated("invalid token")
    if row["revoked"]:
        raise Unauthenticated("token has been revoked")
    if row["expired"]:
        raise Unauthenticated("token has expired")
    if row["touch_due"]:
        await db.execute(TOUCH_TOKEN, row["id"])
    return UUID(str(row["user_id"]))
