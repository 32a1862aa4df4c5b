"""Read-through Redis cache of users, workflows and workflow list pages (reference §3.4).

Keys keep the seed's names: ``user:<id>``, ``workflow:<user>:<id>`` and
``workflows:<user>:cursor=<c>&query=…`` (one per list page).  TTL 30 minutes.

Invalidation uses a per-user *epoch* instead of the seed's ``SCAN``-and-delete of
``workflows:<user>:*``: every entry is stored together with the epoch token current when its
database read began, and is only served while that token is still the user's current one.  A
mutation replaces the token (one ``SET``), which invalidates the user's workflow entries and list
pages at once, in O(1), and closes the classic read-miss/write race: a reader that fetched old rows
before a concurrent write stores them under the old token, so they are never served.  Mutations
invalidate *before they return*, so a caller never reads its own write stale.

A Redis failure never fails a read (the database answers); a failed invalidation is logged.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Generic, TypeVar, cast
from uuid import UUID

from pydantic import BaseModel, TypeAdapter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from domain.filters import WorkflowFilters
from domain.models import Page, User, Workflow

log = logging.getLogger(__name__)

#: The seed's cache TTL.
CACHE_TTL = timedelta(minutes=30)
#: Epoch tokens outlive the entries that carry them; a lost token only costs misses.
EPOCH_TTL = timedelta(hours=24)

M = TypeVar("M", bound=BaseModel)
_WORKFLOW_PAGE = TypeAdapter(Page[Workflow])


@dataclass(frozen=True, slots=True)
class Lookup(Generic[M]):
    """A cache read: the value (``None`` on a miss) and the epoch to store a fresh value under
    (``None``: do not store)."""

    value: M | None
    epoch: str | None


class Cache:
    """Typed cache operations over one Redis client (``decode_responses=True``)."""

    def __init__(self, redis: Redis, *, ttl: timedelta = CACHE_TTL) -> None:
        self._redis = redis
        self._ttl = max(1, int(ttl.total_seconds()))
        self._epoch_ttl = max(self._ttl, int(EPOCH_TTL.total_seconds()))

    # -- keys -------------------------------------------------------------------------------

    @staticmethod
    def user_key(user_id: UUID) -> str:
        return f"user:{user_id}"

    @staticmethod
    def workflow_key(user_id: UUID, workflow_id: UUID) -> str:
        return f"workflow:{user_id}:{workflow_id}"

    @staticmethod
    def workflow_page_key(user_id: UUID, cursor: str | None, filters: WorkflowFilters) -> str:
        return f"workflows:{user_id}:cursor={cursor or ''}&{filters.cache_key()}"

    @staticmethod
    def _user_epoch_key(user_id: UUID) -> str:
        return f"cache-epoch:user:{user_id}"

    @staticmethod
    def _workflows_epoch_key(user_id: UUID) -> str:
        return f"cache-epoch:workflows:{user_id}"

    # -- users ------------------------------------------------------------------------------

    async def get_user(self, user_id: UUID) -> Lookup[User]:
        return await self._get(self.user_key(user_id), self._user_epoch_key(user_id), User)

    async def put_user(self, epoch: str | None, user: User) -> None:
        await self._put(self.user_key(user.id), epoch, user.model_dump_json())

    async def invalidate_user(self, user_id: UUID) -> None:
        """Call after changing a user row, before returning to the caller."""
        await self._bump(self._user_epoch_key(user_id))

    # -- workflows --------------------------------------------------------------------------

    async def get_workflow(self, user_id: UUID, workflow_id: UUID) -> Lookup[Workflow]:
        return await self._get(
            self.workflow_key(user_id, workflow_id), self._workflows_epoch_key(user_id), Workflow
        )

    async def put_workflow(self, epoch: str | None, workflow: Workflow) -> None:
        await self._put(self.workflow_key(workflow.user_id, workflow.id), epoch, workflow.model_dump_json())

    async def get_workflow_page(
        self, user_id: UUID, cursor: str | None, filters: WorkflowFilters
    ) -> Lookup[Page[Workflow]]:
        key = self.workflow_page_key(user_id, cursor, filters)
        return await self._get(key, self._workflows_epoch_key(user_id), _WORKFLOW_PAGE)

    async def put_workflow_page(
        self,
        epoch: str | None,
        user_id: UUID,
        cursor: str | None,
        filters: WorkflowFilters,
        page: Page[Workflow],
    ) -> None:
        key = self.workflow_page_key(user_id, cursor, filters)
        await self._put(key, epoch, _WORKFLOW_PAGE.dump_json(page).decode())

    async def invalidate_workflows(self, user_id: UUID) -> None:
        """Call after any change to one of the user's workflows, before returning to the caller:
        drops every cached workflow and list page of that user."""
        await self._bump(self._workflows_epoch_key(user_id))

    # -- mechanics --------------------------------------------------------------------------

    async def _get(self, key: str, epoch_key: str, model: type[M] | TypeAdapter) -> Lookup:  # type: ignore[type-arg]
        try:
            # The client decodes responses, so both values are str or None.
            raw, epoch = cast(list[str | None], await self._redis.mget(key, epoch_key))
            if epoch is None:
                # No token yet (first use, or it expired/was evicted): start one.  Only the
                # winner of the race may store under it; a loser just skips storing this time.
                fresh = secrets.token_hex(8)
                created = await self._redis.set(epoch_key, fresh, ex=self._epoch_ttl, nx=True)
                return Lookup(None, fresh if created else None)
        except RedisError as exc:
            log.warning("cache read of %s failed: %s", key, exc)
            return Lookup(None, None)
        if raw is not None:
            stored_epoch, _, body = raw.partition("\n")
            if stored_epoch == epoch:
                try:
                    if isinstance(model, TypeAdapter):
                        return Lookup(model.validate_json(body), epoch)
                    return Lookup(model.model_validate_json(body), epoch)
                except ValueError:
                    log.warning("discarding undecodable cache entry %s", key)
        return Lookup(None, epoch)

    async def _put(self, key: str, epoch: str | None, body: str) -> None:
        if epoch is None:
            return
        try:
            await self._redis.set(key, f"{epoch}\n{body}", ex=self._ttl)
        except RedisError as exc:
            log.warning("cache write of %s failed: %s", key, exc)

    async def _bump(self, epoch_key: str) -> None:
        try:
            await self._redis.set(epoch_key, secrets.token_hex(8), ex=self._epoch_ttl)
        except RedisError as exc:
            log.error("cache invalidation of %s failed (entries may be stale until TTL): %s", epoch_key, exc)
