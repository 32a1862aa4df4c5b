"""The server backend: a real ClickHouse over HTTP through ``clickhouse-connect``.

The synchronous client runs in worker threads (it is thread-safe without a session id); it binds
``{name:Type}`` parameters server-side and sends large ones (insert batches) as form data instead
of URL parameters.  Operations run concurrently; reads stay exact because they deduplicate.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from domain.config import ClickHouseConfig
from domain.errors import Internal, Unavailable
from store.logstore.repository import Params, SqlLogStore

#: Server-side query limit, as the seed's client setting (reference §3.2).
MAX_EXECUTION_TIME_S = 60


class HttpLogStore(SqlLogStore):
    """A :class:`store.logstore.base.LogStore` on a ClickHouse server (``CLICKHOUSE_*`` settings).

    ``cfg.hosts`` lists HTTP endpoints (``host:8123``); the first that accepts a connection is used.
    ``client`` injects an already-built clickhouse-connect client (any interface it supports).
    """

    def __init__(self, cfg: ClickHouseConfig, *, client: Any = None) -> None:
        self._cfg = cfg
        self._client: Any = client
        self._connect_lock = threading.Lock()

    @asynccontextmanager
    async def _exclusive(self) -> AsyncIterator[None]:
        yield

    async def _fetch(self, statement: str, params: Params) -> list[dict[str, Any]]:
        raw = await asyncio.to_thread(self._query, statement, params, "JSONEachRow")
        return [json.loads(line) for line in raw.decode("utf-8", errors="replace").splitlines() if line]

    async def _execute(self, statement: str, params: Params) -> None:
        await asyncio.to_thread(self._query, statement, params, None)

    async def close(self) -> None:
        """Close the HTTP connection pool."""
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)

    def _query(self, statement: str, params: Params, fmt: str | None) -> bytes:
        from clickhouse_connect.driver.exceptions import OperationalError

        client = self._connect()
        try:
            data: bytes = client.raw_query(statement, parameters=dict(params), fmt=fmt)
        except OperationalError as exc:
            raise Unavailable(f"ClickHouse unreachable: {exc}") from exc
        except Exception as exc:
            raise Internal(f"ClickHouse query failed: {exc}") from exc
        return data

    def _connect(self) -> Any:
        with self._connect_lock:
            if self._client is not None:
                return self._client
            import clickhouse_connect

            cfg = self._cfg
            errors = []
            for host, port in cfg.host_list:
                try:
                    self._client = clickhouse_connect.get_client(
                        host=host,
                        port=port,
                        username=cfg.username,
                        password=cfg.password.get_secret_value(),
                        database=cfg.database,
                        secure=cfg.tls_enabled,
                        ca_cert=cfg.tls_ca_file or None,
                        connect_timeout=cfg.dial_timeout.total_seconds(),
                        settings={"max_execution_time": MAX_EXECUTION_TIME_S},
                        autogenerate_session_id=False,
                        compress=True,
                    )
                    return self._client
                except Exception as exc:
                    errors.append(f"{host}:{port}: {exc}")
            raise Unavailable(
                "no ClickHouse host answered: " + "; ".join(errors)
                if errors
                else "CLICKHOUSE_HOSTS lists no host"
            )
