"""Accounts and personal API tokens (reference §2.2 ``/auth``, ``/users``; SPEC §5.5).

Sessions are not here: the gateway owns them (it resolves them on every request without a hop).
This service checks credentials — bcrypt, off the event loop — and owns the ``users`` and
``api_tokens`` rows.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from domain.durations import parse_duration
from domain.errors import Invalid
from domain.models import ApiToken, User
from domain.passwords import hash_password, normalize_email, validate_password, verify_password
from serve_apps.resources import ServiceResources
from serve_apps.schemas.auth import (
    ApiTokenList,
    ApiTokenOut,
    CreatedApiToken,
    CreateTokenRequest,
    Credentials,
    TokenRef,
    UserIdentity,
)
from serve_apps.schemas.users import UpdateUserRequest, UserProfile
from serve_apps.services.context import CallContext, service_method
from store import api_tokens as tokens_repo
from store import users as users_repo
from store.cache import Cache


def _token_out(record: ApiToken) -> ApiTokenOut:
    return ApiTokenOut(
        id=record.id,
        name=record.name,
        prefix=record.prefix,
        created_at=record.created_at,
        last_used_at=record.last_used_at,
        expires_at=record.expires_at,
        revoked_at=record.revoked_at,
    )


def user_profile(user: User) -> UserProfile:
    """``GET /users``'s answer for a user (from the database or the cache)."""
    return UserProfile(
        email=user.email,
        notification_preference=user.notification_preference,
        created_at=user.created_at,
        updated_at=user.updated_at,
    )


async def cached_user_profile(cache: Cache, ctx: CallContext) -> UserProfile | None:
    """The caller's profile if the read-through cache holds a current ``user:<id>`` entry, else
    ``None`` (then :meth:`UsersService.get_user` reads PostgreSQL and fills the cache).  The key is
    the caller's own id and an entry is only current under the user's epoch, which
    :meth:`UsersService.update_user` replaces before it returns."""
    lookup = await cache.get_user(ctx.require_user())
    return None if lookup.value is None else user_profile(lookup.value)


class UsersService:
    """Register, log in (credential check only), read and update the caller; manage API tokens."""

    def __init__(self, resources: ServiceResources) -> None:
        self.resources = resources

    @service_method
    async def register(self, ctx: CallContext, creds: Credentials) -> UserIdentity:
        """Create an account (409 when the e-mail is taken)."""
        email = normalize_email(creds.email)
        validate_password(creds.password)
        password_hash = await asyncio.to_thread(hash_password, creds.password)
        user = await users_repo.create(await self.resources.pool(), email=email, password_hash=password_hash)
        return UserIdentity(user_id=user.id)

    @service_method
    async def login(self, ctx: CallContext, creds: Credentials) -> UserIdentity:
        """Check credentials: 404 for an unknown e-mail and 400 for a wrong password (the seed's
        answers; the gateway's rate limiter bounds guessing)."""
        validate_password(creds.password)
        found = await users_repo.get_by_email(await self.resources.pool(), creds.email)
        if not await asyncio.to_thread(verify_password, creds.password, found.password_hash):
            raise Invalid("password is incorrect", code="invalid_credentials")
        return UserIdentity(user_id=found.id)

    @service_method
    async def get_user(self, ctx: CallContext) -> UserProfile:
        """The caller's profile (cached as ``user:<id>``)."""
        user = await users_repo.get(
            await self.resources.pool(), ctx.require_user(), cache=self.resources.cache()
        )
        return user_profile(user)

    @service_method
    async def update_user(self, ctx: CallContext, req: UpdateUserRequest) -> None:
        """Set the caller's notification preference (the cached user is invalidated first)."""
        await users_repo.update_notification_preference(
            await self.resources.pool(),
            ctx.require_user(),
            req.notification_preference,
            cache=self.resources.cache(),
        )

    @service_method
    async def create_token(self, ctx: CallContext, req: CreateTokenRequest) -> CreatedApiToken:
        """Issue a personal API token; its secret is in this answer only."""
        expires_at = None
        if req.expires_in is not None:
            try:
                lifetime = parse_duration(req.expires_in)
            except ValueError as exc:
                raise Invalid(f"expires_in: {exc}") from None
            if lifetime.total_seconds() <= 0:
                raise Invalid("expires_in must be a positive duration")
            expires_at = datetime.now(UTC).replace(tzinfo=None) + lifetime
        issued = await tokens_repo.create(
            await self.resources.pool(), ctx.require_user(), name=req.name, expires_at=expires_at
        )
        return CreatedApiToken(**_token_out(issued.record).model_dump(), token=issued.token)

    @service_method
    async def list_tokens(self, ctx: CallContext) -> ApiTokenList:
        """The caller's tokens, newest first."""
        records = await tokens_repo.list_tokens(await self.resources.pool(), ctx.require_user())
        return ApiTokenList(tokens=[_token_out(r) for r in records])

    @service_method
    async def revoke_token(self, ctx: CallContext, ref: TokenRef) -> None:
        """Revoke one of the caller's tokens (idempotent; 404 for anyone else's)."""
        await tokens_repo.revoke(await self.resources.pool(), ctx.require_user(), ref.token_id)
