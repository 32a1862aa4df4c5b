"""The ClickHouse job-log store: one interface, two backends sharing the same SQL.

* :class:`ChdbLogStore` — embedded chdb (local stack; one owning process per data directory).
* :class:`HttpLogStore` — a real ClickHouse server through clickhouse-connect.

On Ray, callers get a store from :func:`store.logstore.remote.log_store_client`, which forwards to the
single actor that owns the chdb directory, or builds an :class:`HttpLogStore`.
"""

from __future__ import annotations

from domain.config import ClickHouseConfig
from domain.log_cursor import LogCursor
from store.logstore.base import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    LogEntry,
    LogPage,
    LogRow,
    LogStore,
)
from store.logstore.chdb import ChdbLogStore
from store.logstore.http import HttpLogStore
from store.logstore.search import new_highlight_token

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "ChdbLogStore",
    "HttpLogStore",
    "LogCursor",
    "LogEntry",
    "LogPage",
    "LogRow",
    "LogStore",
    "create_log_store",
    "new_highlight_token",
]


def create_log_store(cfg: ClickHouseConfig) -> LogStore:
    """The backend ``cfg.backend`` names.  A chdb store must live in the one process that owns
    ``cfg.chdb_path``; everywhere else on Ray use :func:`store.logstore.remote.log_store_client`."""
    if cfg.backend == "chdb":
        return ChdbLogStore(cfg.chdb_path, database=cfg.database)
    return HttpLogStore(cfg)
