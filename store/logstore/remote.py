"""The client side of the ``log-store`` actor: a :class:`store.logstore.LogStore` that forwards to it.

chdb allows one process per data directory, so with ``CLICKHOUSE_BACKEND=chdb`` a single named actor
(``log-store``, started by :func:`actors.log_store.start_log_store_actor`) owns the directory and every
other process — Serve replicas, the joblogs processor — reaches it through :func:`log_store_client`.
With ``CLICKHOUSE_BACKEND=http`` there is no actor: each process talks to the server directly.
Callers get a :class:`store.logstore.LogStore` either way.

This module only looks the actor up by name (it never imports ``actors``), so the layering
``serve_apps, actors → store`` holds.  Every store operation is idempotent, so calls interrupted
by an actor restart are retried by Ray (``MAX_TASK_RETRIES``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import ray
from ray.exceptions import ActorDiedError, RayActorError, RayTaskError

from domain.config import ClickHouseConfig
from domain.enums import LogStream
from domain.errors import ChronoverseError, Internal, Unavailable
from domain.log_cursor import LogCursor
from store.logstore.base import DEFAULT_PAGE_SIZE, LogPage, LogRow, LogStore
from store.logstore.http import HttpLogStore

#: Name of the actor in the cluster's namespace (shown as such in the Ray dashboard).
LOG_STORE_ACTOR_NAME = "log-store"
#: Calls interrupted by an actor restart are retried this many times (all operations are idempotent).
MAX_TASK_RETRIES = 3


class ActorLogStore:
    """A :class:`store.logstore.LogStore` that forwards every call to the ``log-store`` actor.

    The handle is looked up on first use (and again after the actor is lost), so a client can be
    made before the actor exists.  A missing or dead actor raises :class:`domain.errors.Unavailable`.
    """

    def __init__(self, namespace: str) -> None:
        self._namespace = namespace
        self._handle: Any = None

    def _actor(self) -> Any:
        if self._handle is None:
            try:
                self._handle = ray.get_actor(LOG_STORE_ACTOR_NAME, namespace=self._namespace)
            except ValueError as exc:
                raise Unavailable(f"the {LOG_STORE_ACTOR_NAME} actor is not running") from exc
        return self._handle

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        for attempt in (1, 2):
            try:
                return await getattr(self._actor(), method).remote(*args, **kwargs)
            except RayActorError as exc:  # died, restarting or unreachable
                self._handle = None
                if attempt == 1 and isinstance(exc, ActorDiedError):
                    # Dead for good: a new actor may own the name by now (every call is
                    # idempotent: reads, and inserts deduplicated by event id).
                    continue
                raise Unavailable(f"the {LOG_STORE_ACTOR_NAME} actor is unavailable: {exc}") from exc
            except RayTaskError as exc:
                # Ray's wrapper is an instance of the cause's class but drops its attributes (the
                # error ``code``), so re-raise the store's own error as it was raised.
                if isinstance(exc.cause, ChronoverseError):
                    raise exc.cause from None
                raise Internal(f"the {LOG_STORE_ACTOR_NAME} actor failed: {exc.cause!r}") from exc
        raise AssertionError("unreachable")

    async def ensure_schema(self) -> None:
        await self._call("ensure_schema")

    async def insert(self, rows: Sequence[LogRow]) -> int:
        if not rows:
            return 0
        result: int = await self._call("insert", list(rows))
        return result

    async def page(self, user_id: UUID, workflow_id: UUID, job_id: UUID, *, stream: LogStream | None = None,
                   cursor: LogCursor | None = None, limit: int = DEFAULT_PAGE_SIZE,
                   ascending: bool = False) -> LogPage:
        result: LogPage = await self._call("page", user_id, workflow_id, job_id, stream=stream,
                                           cursor=cursor, limit=limit, ascending=ascending)
        return result

    async def search(self, user_id: UUID, workflow_id: UUID, job_id: UUID, *, query: str,
                     stream: LogStream | None = None, cursor: LogCursor | None = None,
                     limit: int = DEFAULT_PAGE_SIZE, ascending: bool = False,
                     highlight_token: str | None = None) -> LogPage:
        result: LogPage = await self._call("search", user_id, workflow_id, job_id, query=query,
                                           stream=stream, cursor=cursor, limit=limit, ascending=ascending,
                                           highlight_token=highlight_token)
        return result

    async def count(self, user_id: UUID, workflow_id: UUID, job_id: UUID) -> int:
        result: int = await self._call("count", user_id, workflow_id, job_id)
        return result

    async def delete_workflow(self, user_id: UUID, workflow_id: UUID) -> None:
        await self._call("delete_workflow", user_id, workflow_id)

    async def delete_events(self, event_ids: Sequence[str]) -> None:
        if event_ids:
            await self._call("delete_events", list(event_ids))

    async def ping(self) -> bool:
        try:
            result: bool = await self._call("ping")
        except Unavailable:
            return False
        return result

    async def close(self) -> None:
        """Nothing to release: the actor outlives its clients."""
        self._handle = None


def log_store_client(cfg: ClickHouseConfig, namespace: str) -> LogStore:
    """The log store for any process on the cluster: the actor's proxy (chdb) or a server client (http)."""
    if cfg.backend == "chdb":
        return ActorLogStore(namespace)
    return HttpLogStore(cfg)
