"""The log store's logic, written once over two primitives that each backend implements.

:class:`SqlLogStore` runs the statements of :mod:`store.logstore.sql` through ``_fetch`` (rows of a
``JSONEachRow`` result as dicts) and ``_execute`` (no result).  Parameter values handed to the
primitives are only ``str`` and ``int``; each backend binds them its own way.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any
from uuid import UUID

from domain.enums import LogStream
from domain.errors import ChronoverseError, Invalid
from domain.log_cursor import LogCursor
from store.logstore import sql
from store.logstore.base import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    LogEntry,
    LogPage,
    LogRow,
    from_epoch_ms,
    to_epoch_ms,
)
from store.logstore.migrations import load_migrations
from store.logstore.search import check_highlight_token, highlight, like_pattern

Params = Mapping[str, str | int]

#: Longest search query accepted (longer ones are almost certainly not typed by a person).
MAX_QUERY_LENGTH = 1024


def _row_payload(rows: Sequence[LogRow]) -> str:
    """Rows as ``JSONEachRow`` text in the shape of :data:`sql.ROW_STRUCTURE`."""
    return "\n".join(
        json.dumps(
            {
                "event_id": row.event_id,
                "user_id": str(row.user_id),
                "workflow_id": str(row.workflow_id),
                "job_id": str(row.job_id),
                "timestamp_ms": to_epoch_ms(row.timestamp),
                "message": row.message,
                "sequence_num": row.sequence_num,
                "stream": row.stream.value,
                "attempt": row.attempt,
                "expires_at_ms": None if row.expires_at is None else to_epoch_ms(row.expires_at),
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )
        for row in rows
    )


def _key_payload(rows: Sequence[LogRow]) -> str:
    """Rows' keys as ``JSONEachRow`` text in the shape of :data:`sql.KEY_STRUCTURE`."""
    return "\n".join(
        json.dumps(
            {
                "event_id": row.event_id,
                "user_id": str(row.user_id),
                "workflow_id": str(row.workflow_id),
                "job_id": str(row.job_id),
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )
        for row in rows
    )


def _job_scope(user_id: UUID, workflow_id: UUID, job_id: UUID) -> dict[str, str | int]:
    return {"user_id": str(user_id), "workflow_id": str(workflow_id), "job_id": str(job_id)}


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise Invalid(f"limit must be between 1 and {MAX_PAGE_SIZE}", code="invalid_limit")


class SqlLogStore(ABC):
    """Everything a :class:`store.logstore.base.LogStore` does, over ``_fetch``/``_execute``.

    Each public operation runs inside ``_exclusive()``: the embedded backend serialises there
    (chdb runs one statement at a time and an insert's existence check must not interleave
    with another insert); the server backend lets operations run concurrently.
    """

    @abstractmethod
    async def _fetch(self, statement: str, params: Params) -> list[dict[str, Any]]:
        """Run a SELECT and return its rows."""

    @abstractmethod
    async def _execute(self, statement: str, params: Params) -> None:
        """Run a statement that returns nothing (DDL, INSERT, ALTER)."""

    @abstractmethod
    def _exclusive(self) -> AbstractAsyncContextManager[None]:
        """Context in which one public operation runs."""

    @abstractmethod
    async def close(self) -> None:
        """Release the backend's resources."""

    async def ensure_schema(self) -> None:
        """Apply the numbered migrations of ``store/clickhouse/`` that are not applied yet.

        Each is marked dirty before and clean after its statements run; a dirty one (interrupted)
        is re-run, which is safe because migration statements are idempotent.
        """
        async with self._exclusive():
            await self._execute(sql.CREATE_SCHEMA_MIGRATIONS, {})
            state = {
                int(r["version"]): int(r["dirty"])
                for r in await self._fetch(sql.SELECT_APPLIED_MIGRATIONS, {})
            }
            for migration in load_migrations():
                if state.get(migration.version) == 0:
                    continue
                await self._execute(sql.MARK_MIGRATION, {"version": migration.version, "dirty": 1})
                for statement in migration.statements:
                    await self._execute(statement, {})
                await self._execute(sql.MARK_MIGRATION, {"version": migration.version, "dirty": 0})

    async def insert(self, rows: Sequence[LogRow]) -> int:
        """Store the lines whose event ids are new; return how many that was."""
        unique: dict[str, LogRow] = {}
        for row in rows:
            unique.setdefault(row.event_id, row)
        if not unique:
            return 0
        async with self._exclusive():
            existing = {
                str(r["event_id"])
                for r in await self._fetch(
                    sql.SELECT_EXISTING_EVENT_IDS, {"keys": _key_payload(list(unique.values()))}
                )
            }
            fresh = [row for event_id, row in unique.items() if event_id not in existing]
            if fresh:
                await self._execute(sql.INSERT_ROWS, {"rows": _row_payload(fresh)})
        return len(fresh)

    async def page(
        self,
        user_id: UUID,
        workflow_id: UUID,
        job_id: UUID,
        *,
        stream: LogStream | None = None,
        cursor: LogCursor | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        ascending: bool = False,
    ) -> LogPage:
        """One page of a job's lines (see :meth:`store.logstore.base.LogStore.page`)."""
        statement = sql.PAGE_OLDEST_FIRST if ascending else sql.PAGE_NEWEST_FIRST
        return await self._read_page(
            statement, user_id, workflow_id, job_id, stream=stream, cursor=cursor, limit=limit, extra={}
        )

    async def search(
        self,
        user_id: UUID,
        workflow_id: UUID,
        job_id: UUID,
        *,
        query: str,
        stream: LogStream | None = None,
        cursor: LogCursor | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        ascending: bool = False,
        highlight_token: str | None = None,
    ) -> LogPage:
        """Lines containing ``query``, case-insensitively, optionally with highlight markers."""
        needle = query.strip()
        if len(needle) > MAX_QUERY_LENGTH:
            raise Invalid(f"search query longer than {MAX_QUERY_LENGTH} characters", code="invalid_query")
        token = None if highlight_token is None else check_highlight_token(highlight_token)
        if not needle:
            return await self.page(
                user_id, workflow_id, job_id, stream=stream, cursor=cursor, limit=limit, ascending=ascending
            )
        statement = sql.SEARCH_OLDEST_FIRST if ascending else sql.SEARCH_NEWEST_FIRST
        result = await self._read_page(
            statement,
            user_id,
            workflow_id,
            job_id,
            stream=stream,
            cursor=cursor,
            limit=limit,
            extra={"pattern": like_pattern(needle)},
        )
        if token is None:
            return result
        marked = [
            entry.model_copy(update={"message": highlight(entry.message, needle, token)})
            for entry in result.logs
        ]
        return LogPage(logs=marked, cursor=result.cursor)

    async def _read_page(
        self,
        statement: str,
        user_id: UUID,
        workflow_id: UUID,
        job_id: UUID,
        *,
        stream: LogStream | None,
        cursor: LogCursor | None,
        limit: int,
        extra: dict[str, str | int],
    ) -> LogPage:
        _check_limit(limit)
        params: dict[str, str | int] = {
            **_job_scope(user_id, workflow_id, job_id),
            "stream": "" if stream is None else stream.value,
            "has_cursor": 0 if cursor is None else 1,
            "cursor_sequence_num": 0 if cursor is None else cursor.sequence_num,
            "cursor_stream": "" if cursor is None else cursor.stream.value,
            "cursor_event_id": "" if cursor is None else cursor.event_id,
            # One row more than the page tells whether a next page exists and where it starts.
            "limit": limit + 1,
            **extra,
        }
        async with self._exclusive():
            rows = await self._fetch(statement, params)
        entries = [
            LogEntry(
                event_id=r["event_id"],
                timestamp=from_epoch_ms(int(r["timestamp_ms"])),
                message=r["message"],
                sequence_num=int(r["sequence_num"]),
                stream=LogStream(r["stream"]),
                attempt=int(r["attempt"]),
            )
            for r in rows
        ]
        next_cursor = entries[limit].cursor() if len(entries) > limit else None
        return LogPage(logs=entries[:limit], cursor=next_cursor)

    async def count(self, user_id: UUID, workflow_id: UUID, job_id: UUID) -> int:
        """Distinct unexpired lines of one job."""
        async with self._exclusive():
            rows = await self._fetch(sql.COUNT_JOB, _job_scope(user_id, workflow_id, job_id))
        return int(rows[0]["n"]) if rows else 0

    async def delete_workflow(self, user_id: UUID, workflow_id: UUID) -> None:
        """Delete every line of one workflow of one user."""
        async with self._exclusive():
            await self._execute(
                sql.DELETE_WORKFLOW, {"user_id": str(user_id), "workflow_id": str(workflow_id)}
            )

    async def delete_events(self, event_ids: Sequence[str]) -> None:
        """Delete lines by exact event id."""
        ids = sorted(set(event_ids))
        if not ids:
            return
        async with self._exclusive():
            await self._execute(sql.DELETE_EVENTS, {"event_ids": json.dumps(ids, ensure_ascii=False)})

    async def ping(self) -> bool:
        """True when a trivial query succeeds."""
        try:
            async with self._exclusive():
                rows = await self._fetch(sql.PING, {})
        except ChronoverseError:
            return False
        return bool(rows) and int(rows[0]["ok"]) == 1
