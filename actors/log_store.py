"""The one Ray actor that owns the embedded (chdb) log store, and the client every other process uses.

chdb allows one process per data directory, so with ``CLICKHOUSE_BACKEND=chdb`` a single named actor
(``log-store``) owns the directory and every other process — Serve replicas, the joblogs processor —
reaches it through :func:`log_store_client`.  With ``CLICKHOUSE_BACKEND=http`` there is no actor:
each process talks to the server directly.  Callers get a :class:`store.logstore.LogStore` either way.

The actor is pinned to the node that starts it (its data directory lives there) and restarts
forever; every store operation is idempotent, so calls interrupted by a restart are retried.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import ray
from ray.exceptions import RayActorError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from domain.config import ClickHouseConfig
from domain.enums import LogStream
from domain.errors import ChronoverseError, Internal, Unavailable
from domain.log_cursor import LogCursor
from store.logstore import DEFAULT_PAGE_SIZE, ChdbLogStore, HttpLogStore, LogPage, LogRow, LogStore

#: Name of the actor in the cluster's namespace (shown as such in the Ray dashboard).
LOG_STORE_ACTOR_NAME = "log-store"
#: Calls interrupted by an actor restart are retried this many times (all operations are idempotent).
MAX_TASK_RETRIES = 3


@ray.remote
class LogStoreActor:
    """Ray shell around one :class:`store.logstore.ChdbLogStore`; methods mirror ``LogStore``."""

    def __init__(self, path: str, database: str = "default") -> None:
        self._store = ChdbLogStore(path, database=database)

    async def ensure_schema(self) -> None:
        await self._store.ensure_schema()

    async def insert(self, rows: list[LogRow]) -> int:
        return await self._store.insert(rows)

    async def page(self, user_id: UUID, workflow_id: UUID, job_id: UUID, *, stream: LogStream | None,
                   cursor: LogCursor | None, limit: int, ascending: bool) -> LogPage:
        return await self._store.page(user_id, workflow_id, job_id, stream=stream, cursor=cursor,
                                      limit=limit, ascending=ascending)

    async def search(self, user_id: UUID, workflow_id: UUID, job_id: UUID, *, query: str,
                     stream: LogStream | None, cursor: LogCursor | None, limit: int, ascending: bool,
                     highlight_token: str | None) -> LogPage:
        return await self._store.search(user_id, workflow_id, job_id, query=query, stream=stream,
                                        cursor=cursor, limit=limit, ascending=ascending,
                                        highlight_token=highlight_token)

    async def count(self, user_id: UUID, workflow_id: UUID, job_id: UUID) -> int:
        return await self._store.count(user_id, workflow_id, job_id)

    async def delete_workflow(self, user_id: UUID, workflow_id: UUID) -> None:
        await self._store.delete_workflow(user_id, workflow_id)

    async def delete_events(self, event_ids: list[str]) -> None:
        await self._store.delete_events(event_ids)

    async def ping(self) -> bool:
        return await self._store.ping()


def start_log_store_actor(
    cfg: ClickHouseConfig,
    namespace: str,
    *,
    detached: bool = True,
    num_cpus: float = 0.1,
    memory: int = 512 * 1024**2,
    node_id: str | None = None,
) -> Any:
    """Create (or find) the ``log-store`` actor for ``cfg.chdb_path`` and apply the schema.

    Call from the composition root on the node that holds the data directory (default: this
    node).  Returns the actor handle once the schema is in place.  Relative paths are resolved
    here, because Ray workers do not share the caller's working directory.
    """
    if cfg.backend != "chdb":
        raise ValueError("the log-store actor is only used with CLICKHOUSE_BACKEND=chdb")
    options: dict[str, Any] = {
        "name": LOG_STORE_ACTOR_NAME,
        "namespace": namespace,
        "get_if_exists": True,
        "max_restarts": -1,
        "max_task_retries": MAX_TASK_RETRIES,
        "num_cpus": num_cpus,
        "memory": memory,
        "scheduling_strategy": NodeAffinitySchedulingStrategy(
            node_id=node_id or ray.get_runtime_context().get_node_id(), soft=False),
    }
    if detached:
        options["lifetime"] = "detached"
    actor_class: Any = LogStoreActor  # ray.remote hides .options() from type checkers
    handle = actor_class.options(**options).remote(os.path.abspath(cfg.chdb_path), cfg.database)
    ray.get(handle.ensure_schema.remote())
    return handle


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
        try:
            return await getattr(self._actor(), method).remote(*args, **kwargs)
        except RayActorError as exc:  # died, restarting or unreachable
            self._handle = None
            raise Unavailable(f"the {LOG_STORE_ACTOR_NAME} actor is unavailable: {exc}") from exc
        except RayTaskError as exc:
            # Ray's wrapper is an instance of the cause's class but drops its attributes (the
            # error ``code``), so re-raise the store's own error as it was raised.
            if isinstance(exc.cause, ChronoverseError):
                raise exc.cause from None
            raise Internal(f"the {LOG_STORE_ACTOR_NAME} actor failed: {exc.cause!r}") from exc

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
