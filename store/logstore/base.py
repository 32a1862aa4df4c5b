"""The log store's contract: the models that cross it and the :class:`LogStore` protocol.

Every read is scoped by ``(user_id, workflow_id, job_id)`` and every delete by at least
``(user_id, workflow_id)`` or exact event ids, so no call can reach another user's lines.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Protocol, runtime_checkable
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from domain.enums import LogStream
from domain.log_cursor import LogCursor

#: Page size of ``GET …/logs`` (reference §2.1, ``JOBS_SERVICE_CONFIG_LOGS_FETCH_LIMIT``).
DEFAULT_PAGE_SIZE = 100
#: Largest page any caller may ask for (downloads page through with this at most).
MAX_PAGE_SIZE = 1000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Lone UTF-16 surrogates (e.g. from undecodable container output) are not encodable as UTF-8.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _as_utc(value: datetime) -> datetime:
    # Naive datetimes are UTC throughout the project (ADR 0001 "Ids and time").
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UtcDateTime = Annotated[datetime, AfterValidator(_as_utc)]


def to_epoch_ms(value: datetime) -> int:
    """Milliseconds since the Unix epoch (exact integer arithmetic, no float rounding)."""
    return (_as_utc(value) - _EPOCH) // timedelta(milliseconds=1)


def from_epoch_ms(value: int) -> datetime:
    """Inverse of :func:`to_epoch_ms`: an aware UTC datetime."""
    return _EPOCH + timedelta(milliseconds=value)


class LogRow(BaseModel):
    """One job-log line as stored (reference §3.2 plus ``attempt`` and ``expires_at``).

    ``event_id`` is the deterministic key ``log:<job>:[attempt:<n>:]<stream>:<seq>`` made by the
    producer; inserting the same ``event_id`` again never creates a second visible line.
    ``expires_at`` is ``None`` for "keep until the workflow is deleted" (the seed's only rule) or the
    end of the workflow's optional retention period (a ClickHouse row TTL).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: str = Field(min_length=1, max_length=512)
    user_id: UUID
    workflow_id: UUID
    job_id: UUID
    timestamp: UtcDateTime
    message: str
    sequence_num: int = Field(ge=0, le=2**32 - 1)
    stream: LogStream
    attempt: int = Field(default=1, ge=0, le=2**16 - 1)
    expires_at: UtcDateTime | None = None

    @field_validator("message")
    @classmethod
    def _valid_unicode(cls, value: str) -> str:
        return _LONE_SURROGATE.sub("\ufffd", value)


class LogEntry(BaseModel):
    """One line as read back; ``message`` carries highlight markers when a search asked for them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: str
    timestamp: UtcDateTime
    message: str
    sequence_num: int
    stream: LogStream
    attempt: int

    def cursor(self) -> LogCursor:
        """The cursor that starts a page at this line."""
        return LogCursor(sequence_num=self.sequence_num, stream=self.stream, event_id=self.event_id)


class LogPage(BaseModel):
    """One page of lines in the requested order, and the cursor of the next page (``None`` = last)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    logs: list[LogEntry]
    cursor: LogCursor | None = None


@runtime_checkable
class LogStore(Protocol):
    """The ClickHouse job-log store.  Implemented by :class:`store.logstore.ChdbLogStore` (embedded),
    :class:`store.logstore.HttpLogStore` (a real server) and the actor adapter in
    :mod:`store.logstore.remote`; callers never care which one they hold.

    Errors: bad arguments raise :class:`domain.errors.Invalid`; an unreachable or restarting store
    raises :class:`domain.errors.Unavailable`; anything else :class:`domain.errors.Internal`.
    """

    async def ensure_schema(self) -> None:
        """Apply the numbered ClickHouse migrations not applied yet (idempotent)."""
        ...

    async def insert(self, rows: Sequence[LogRow]) -> int:
        """Store lines, ignoring event ids already stored or repeated in ``rows``.

        Returns how many lines were new.  Exact for the embedded store (one serialised owner);
        with several concurrent writers to a server a racing duplicate may be counted twice,
        but reads stay exact because they deduplicate by ``event_id``.
        """
        ...

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
        """A page of one job's lines: newest first (``sequence_num`` desc, then ``stream``,
        ``event_id``) unless ``ascending``; starts at ``cursor`` inclusive."""
        ...

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
        """Like :meth:`page`, keeping lines that contain ``query`` (case-insensitive substring).

        With ``highlight_token`` every match is wrapped in ``__CV_HL_START_<token>__`` /
        ``__CV_HL_END_<token>__``.  A blank ``query`` is the same as :meth:`page`.
        """
        ...

    async def count(self, user_id: UUID, workflow_id: UUID, job_id: UUID) -> int:
        """Number of distinct (unexpired) lines of one job."""
        ...

    async def delete_workflow(self, user_id: UUID, workflow_id: UUID) -> None:
        """Delete every line of one workflow (synchronously: gone when this returns)."""
        ...

    async def delete_events(self, event_ids: Sequence[str]) -> None:
        """Delete lines by event id (used for lines of workflows deleted meanwhile)."""
        ...

    async def ping(self) -> bool:
        """True when the store answers a trivial query."""
        ...

    async def close(self) -> None:
        """Release connections (the embedded store keeps its data on disk)."""
        ...
