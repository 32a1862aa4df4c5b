"""The one Ray actor that owns the embedded (chdb) log store.

chdb allows one process per data directory, so with ``CLICKHOUSE_BACKEND=chdb`` a single named actor
(``log-store``) owns the directory and every other process — Serve replicas, the joblogs processor —
reaches it through :func:`store.logstore.remote.log_store_client` (the client lives in ``store`` so
that Serve apps never import ``actors``).

The actor is pinned to the node that starts it (its data directory lives there) and restarts
forever; every store operation is idempotent, so calls interrupted by a restart are retried.
"""

from __future__ import annotations

import os
from typing import Any
from uuid import UUID

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from domain.config import ClickHouseConfig
from domain.enums import LogStream
from domain.log_cursor import LogCursor
from store.logstore import ChdbLogStore, LogPage, LogRow
from store.logstore.remote import LOG_STORE_ACTOR_NAME, MAX_TASK_RETRIES

__all__ = ["LOG_STORE_ACTOR_NAME", "LogStoreActor", "start_log_store_actor"]


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
