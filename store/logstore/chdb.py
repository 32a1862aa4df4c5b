"""The embedded backend: ClickHouse in this process through ``chdb``.

chdb allows one data directory per process and one process per data directory (infra-notes §2b),
so on Ray exactly one actor owns a store (:mod:`actors.log_store`).  Every chdb call runs in a
worker thread (it blocks) and the store's operations are serialised by an asyncio lock.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from domain.errors import Internal, Invalid, Unavailable
from store.logstore.repository import Params, SqlLogStore

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# ClickHouse reads query-parameter values in its "Escaped" text format, where a backslash starts
# an escape sequence and a raw tab or newline ends the value.
_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0", "'": "\\'"}
_MUST_ESCAPE = re.compile("[\\\\\t\n\r\0']")


def escape_param(value: str | int) -> str:
    """Encode a value as the text chdb binds to a ``{name:Type}`` parameter.

    This is the one quoting function of the embedded backend: strings are written in ClickHouse's
    Escaped format, so every character (quotes, backslashes, control characters, any Unicode)
    reaches the engine unchanged.  Integers are written in decimal.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"unsupported parameter type {type(value).__name__}")
    if isinstance(value, int):
        return str(value)
    return _MUST_ESCAPE.sub(lambda match: _ESCAPES[match.group(0)], value)


class ChdbLogStore(SqlLogStore):
    """A :class:`store.logstore.base.LogStore` on an embedded chdb database at ``path``.

    The session opens lazily on first use.  ``database`` other than ``default`` is created if
    missing.  Opening fails with :class:`domain.errors.Unavailable` when another process owns the
    directory (or this process already opened a different one).
    """

    def __init__(self, path: str, *, database: str = "default") -> None:
        if not _IDENTIFIER.match(database):
            raise Invalid(f"invalid ClickHouse database name {database!r}", code="invalid_database")
        self.path = os.path.abspath(path)
        self.database = database
        self._session: Any = None
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def _exclusive(self) -> AsyncIterator[None]:
        async with self._lock:
            yield

    async def _fetch(self, statement: str, params: Params) -> list[dict[str, Any]]:
        raw = await asyncio.to_thread(self._query, statement, params, "JSONEachRow")
        return [json.loads(line) for line in raw.decode("utf-8", errors="replace").splitlines() if line]

    async def _execute(self, statement: str, params: Params) -> None:
        await asyncio.to_thread(self._query, statement, params, "CSV")

    async def close(self) -> None:
        """Close the session; the data stays on disk and a later call reopens it."""
        async with self._lock:
            session, self._session = self._session, None
            if session is not None:
                await asyncio.to_thread(session.close)

    def _query(self, statement: str, params: Params, fmt: str) -> bytes:
        session = self._open()
        bound = {name: escape_param(value) for name, value in params.items()}
        try:
            result = session.query(statement, fmt, params=bound)
        except Exception as exc:  # chdb raises ChdbError/RuntimeError; both mean the statement failed
            raise Internal(f"chdb query failed: {exc}") from exc
        data: bytes = result.bytes()
        return data

    def _open(self) -> Any:
        if self._session is not None:
            return self._session
        try:
            from chdb import session as chdb_session

            os.makedirs(self.path, exist_ok=True)
            opened = chdb_session.Session(self.path)
            if self.database != "default":
                # The name was checked against _IDENTIFIER, so quoting it with backticks is exact.
                opened.query(f"CREATE DATABASE IF NOT EXISTS `{self.database}`")
                opened.query(f"USE `{self.database}`")
        except Exception as exc:
            raise Unavailable(
                f"cannot open the chdb log store at {self.path} (one process per data directory, "
                f"one data directory per process): {exc}"
            ) from exc
        self._session = opened
        return opened
