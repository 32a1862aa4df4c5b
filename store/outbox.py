"""The transactional outbox: every statement on ``outbox_events`` (reference §6.1, SPEC §5.3).

Producers call :func:`add_event` inside the transaction that changes state; the relay locks due
rows with :func:`claim`, publishes them and settles them all with :meth:`Claim.settle` before the
claim's transaction commits (one row write per event; ADR 0007).  Ordering contract: rows of one
``(topic, kafka_key)`` are published in ``(created_at, id)`` order with at most one in flight.
Our changes to the seed: a ``DEAD`` row no longer blocks the later rows of its key (it is counted
by :func:`backlog` and re-queued by :func:`redrive_dead`), and a claim is a row lock held while
publishing instead of a ``PROCESSING`` lease written to the row (ADR 0007).

Payloads are handled as JSON text on purpose (``::text`` casts both ways), so this module works
on any asyncpg connection whatever its type codecs, and the relay publishes the stored text as is.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
from pydantic import BaseModel, ConfigDict

from domain.enums import OutboxStatus
from domain.ids import uuid7
from store.postgres import Queryable, encode_json, rows_affected

#: Longest ``last_error`` kept, like the jobs table's error message.
MAX_ERROR_LENGTH = 4096

_COLUMNS = """
    id, topic, kafka_key, event_key, payload::text AS payload_json, status::text AS status, attempts,
    next_attempt_at, locked_at, locked_by, last_error, created_at, updated_at, published_at
"""

# Parameters: id (uuid), topic, kafka_key, event_key, payload as JSON text.  Callers that batch
# (executemany) rely on this order.
INSERT_EVENT = """
INSERT INTO outbox_events (id, topic, kafka_key, event_key, payload)
VALUES ($1, $2, $3, $4, $5::text::jsonb)
ON CONFLICT (topic, event_key) DO NOTHING
RETURNING id
"""

# Many events in one statement, so the NOTIFY trigger fires once.  Rows of one transaction share
# created_at; their uuid7 ids, generated in the order given, keep that order for the relay.
INSERT_EVENTS = """
INSERT INTO outbox_events (id, topic, kafka_key, event_key, payload)
SELECT e.id, e.topic, e.kafka_key, e.event_key, e.payload::jsonb
  FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[])
       AS e(id, topic, kafka_key, event_key, payload)
ON CONFLICT (topic, event_key) DO NOTHING
RETURNING id
"""

# The due rows of a topic, locked for the claiming transaction.  A row is due when it is PENDING
# or FAILED and its next_attempt_at has come (or PROCESSING with an expired lease: left by a relay
# of the earlier lease-writing design, ADR 0007), and no earlier row of its (topic,
# kafka_key) is still active (PENDING/PROCESSING/FAILED).  Only the earliest active row of a key
# passes that gate, so a batch holds at most one row per key.  SKIP LOCKED lets concurrent
# relays split work: a row another relay holds is skipped, and it still gates its later
# siblings, whose NOT EXISTS sees it active until that relay commits.  DEAD and PUBLISHED rows
# do not gate.  ``has_next``: a later row of the row's key waits behind it (due once this claim
# commits), so the relay knows whether to claim again at once.
LOCK_DUE = f"""
SELECT {_COLUMNS},
       EXISTS (
           SELECT 1
             FROM outbox_events n
            WHERE n.topic = e.topic
              AND n.kafka_key = e.kafka_key
              AND n.status IN ('PENDING', 'PROCESSING', 'FAILED')
              AND (n.created_at, n.id) > (e.created_at, e.id)
       ) AS has_next
  FROM outbox_events e
 WHERE e.topic = $1
   AND (
           (e.status IN ('PENDING', 'FAILED') AND e.next_attempt_at <= (now() AT TIME ZONE 'utc'))
        OR (e.status = 'PROCESSING' AND e.locked_at <= (now() AT TIME ZONE 'utc') - $3::interval)
       )
   AND NOT EXISTS (
           SELECT 1
             FROM outbox_events p
            WHERE p.topic = e.topic
              AND p.kafka_key = e.kafka_key
              AND p.status IN ('PENDING', 'PROCESSING', 'FAILED')
              AND (p.created_at, p.id) < (e.created_at, e.id)
       )
 ORDER BY e.created_at, e.id
 LIMIT $2
   FOR UPDATE OF e SKIP LOCKED
"""

# Every row of a claim in one statement: a NULL error → PUBLISHED; an error → FAILED, due again
# after the backoff, or DEAD once attempted max_attempts ($3) times.  Rows are held by the
# claim's row locks, so nothing else changed them since they were read.
SETTLE = """
UPDATE outbox_events o
   SET attempts = o.attempts + 1,
       status = CASE WHEN s.error IS NULL THEN 'PUBLISHED'::outbox_status
                     WHEN o.attempts + 1 >= $3 THEN 'DEAD'::outbox_status
                     ELSE 'FAILED'::outbox_status END,
       published_at = CASE WHEN s.error IS NULL THEN now() AT TIME ZONE 'utc' END,
       next_attempt_at = CASE WHEN s.error IS NULL THEN o.next_attempt_at
                              ELSE (now() AT TIME ZONE 'utc') + $4::interval END,
       last_error = s.error,
       locked_at = NULL,
       locked_by = NULL
  FROM unnest($1::uuid[], $2::text[]) AS s (id, error)
 WHERE o.id = s.id
RETURNING o.id, o.status::text AS status
"""

CLEANUP_PUBLISHED = """
DELETE FROM outbox_events
 WHERE id IN (
       SELECT id
         FROM outbox_events
        WHERE status = 'PUBLISHED'
          AND published_at < (now() AT TIME ZONE 'utc') - $1::interval
        ORDER BY published_at
        LIMIT $2
          FOR UPDATE SKIP LOCKED
 )
"""

REDRIVE_DEAD = """
UPDATE outbox_events
   SET status = 'PENDING', attempts = 0, next_attempt_at = now() AT TIME ZONE 'utc',
       locked_at = NULL, locked_by = NULL
 WHERE status = 'DEAD'
   AND ($1::text IS NULL OR topic = $1)
   AND ($2::text IS NULL OR kafka_key = $2)
"""

# PUBLISHED rows are history, not backlog, and may be millions: they are not counted.
COUNT_BACKLOG = """
SELECT topic, status::text AS status, count(*) AS n
  FROM outbox_events
 WHERE status IN ('PENDING', 'PROCESSING', 'FAILED', 'DEAD')
 GROUP BY topic, status
"""

#: The statuses :func:`backlog` reports, each always present (0 when empty).
BACKLOG_STATUSES = (OutboxStatus.PENDING, OutboxStatus.PROCESSING, OutboxStatus.FAILED, OutboxStatus.DEAD)


class OutboxRow(BaseModel):
    """One ``outbox_events`` row.  ``payload_json`` is the stored JSON text, published verbatim."""

    model_config = ConfigDict(frozen=True)

    id: UUID
    topic: str
    kafka_key: str
    event_key: str
    payload_json: str
    status: OutboxStatus
    attempts: int
    next_attempt_at: datetime
    locked_at: datetime | None
    locked_by: str | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    published_at: datetime | None

    @property
    def payload(self) -> Any:
        """The payload decoded from JSON."""
        return json.loads(self.payload_json)

    def kafka_value(self) -> bytes:
        """The Kafka record value: the payload's JSON text as UTF-8."""
        return self.payload_json.encode()


async def add_event(
    conn: Queryable,
    *,
    topic: str,
    kafka_key: str,
    event_key: str,
    payload: BaseModel | Mapping[str, Any],
) -> bool:
    """Insert an event unless ``(topic, event_key)`` exists; ``True`` when a row was inserted.

    Call it on the connection of the transaction that makes the state change, so both commit
    together.  A pydantic payload is serialised with its JSON mode (aliases as declared).
    """
    inserted = await conn.fetchval(INSERT_EVENT, uuid7(), topic, kafka_key, event_key, _payload_json(payload))
    return inserted is not None


def _payload_json(payload: BaseModel | Mapping[str, Any]) -> str:
    """A payload as JSON text: a pydantic model in its JSON mode (aliases as declared)."""
    return payload.model_dump_json() if isinstance(payload, BaseModel) else encode_json(dict(payload))


@dataclass(frozen=True)
class NewEvent:
    """One event for :func:`add_events` (a payload as for :func:`add_event`)."""

    topic: str
    kafka_key: str
    event_key: str
    payload: BaseModel | Mapping[str, Any]

    def payload_json(self) -> str:
        return _payload_json(self.payload)


async def add_events(conn: Queryable, events: Sequence[NewEvent]) -> int:
    """:func:`add_event` for several events in one statement (one round trip, one NOTIFY), in the
    order given; returns how many rows were inserted (existing ``(topic, event_key)`` are skipped)."""
    if not events:
        return 0
    ids = [uuid7() for _ in events]
    records = await conn.fetch(
        INSERT_EVENTS,
        ids,
        [e.topic for e in events],
        [e.kafka_key for e in events],
        [e.event_key for e in events],
        [e.payload_json() for e in events],
    )
    return len(records)


class Claim:
    """Due rows of one topic held by row locks in an open transaction (see :func:`claim`)."""

    def __init__(self, conn: asyncpg.Connection, rows: list[OutboxRow], *, more: bool) -> None:
        self._conn = conn
        self.rows = rows
        #: Whether more rows may be due once this claim commits: it was full, or a later row of
        #: one of its keys waits behind it.  Otherwise only new rows (a notification) or a
        #: backoff coming due make claiming again worthwhile.
        self.more = more

    async def settle(
        self, failures: Mapping[UUID, str], *, max_attempts: int, retry_backoff: timedelta
    ) -> dict[UUID, OutboxStatus]:
        """Record the publish of every claimed row in one statement: rows named in ``failures``
        (id → error) become FAILED, due again after ``retry_backoff``, or DEAD once attempted
        ``max_attempts`` times; the others PUBLISHED.  Returns each row's new status."""
        if not self.rows:
            return {}
        ids = [row.id for row in self.rows]
        errors = [failures[i][:MAX_ERROR_LENGTH] if i in failures else None for i in ids]
        records = await self._conn.fetch(SETTLE, ids, errors, max_attempts, retry_backoff)
        return {r["id"]: OutboxStatus(r["status"]) for r in records}


@asynccontextmanager
async def claim(
    pool: asyncpg.Pool, *, topic: str, batch_size: int, hold_limit: timedelta
) -> AsyncIterator[Claim]:
    """Lock up to ``batch_size`` due rows of ``topic`` (see :data:`LOCK_DUE`), oldest first, for
    the body of the ``async with``: publish them, then :meth:`Claim.settle` them.  One write per
    row, at settlement; leaving the body commits (an exception rolls back, leaving the rows due).

    The rows stay locked while they are published, so another relay can take them only once
    this transaction ended: at once when the relay dies (its connection closes), and after
    ``hold_limit`` when it hangs (PostgreSQL then ends the idle transaction).  The same
    ``hold_limit`` lets rows a lease-claiming relay left PROCESSING be taken after it.
    """
    hold_ms = max(1, int(hold_limit.total_seconds() * 1000))
    async with pool.acquire() as conn:
        # One round trip: BEGIN and the hold limit go as a single simple query.
        await conn.execute(f"BEGIN; SET LOCAL idle_in_transaction_session_timeout = {hold_ms}")
        try:
            records = await conn.fetch(LOCK_DUE, topic, batch_size, hold_limit)
            more = len(records) >= batch_size or any(r["has_next"] for r in records)
            yield Claim(conn, [OutboxRow.model_validate(dict(r)) for r in records], more=more)
        except BaseException:
            # A broken connection cannot roll back; the pool discards it, which ends the transaction.
            with contextlib.suppress(Exception):
                await conn.execute("ROLLBACK")
            raise
        await conn.execute("COMMIT")


async def cleanup_published(pool: Queryable, *, retention: timedelta, batch_size: int) -> int:
    """Delete up to ``batch_size`` PUBLISHED rows published before ``now - retention``; return how
    many.  DEAD rows are kept.  Call again while it returns ``batch_size`` to drain a backlog."""
    return rows_affected(await pool.execute(CLEANUP_PUBLISHED, retention, batch_size))


async def redrive_dead(pool: Queryable, *, topic: str | None = None, kafka_key: str | None = None) -> int:
    """Re-queue DEAD rows (optionally of one topic and/or key): PENDING, due now, attempts reset.
    Returns how many rows were re-queued."""
    return rows_affected(await pool.execute(REDRIVE_DEAD, topic, kafka_key))


async def backlog(pool: Queryable) -> dict[str, dict[str, int]]:
    """Unpublished rows per topic per status, e.g. ``{"jobs": {"PENDING": 3, "PROCESSING": 1,
    "FAILED": 0, "DEAD": 0}}``.  Topics without unpublished rows are absent."""
    out: dict[str, dict[str, int]] = {}
    for record in await pool.fetch(COUNT_BACKLOG):
        counts = out.setdefault(record["topic"], {str(s): 0 for s in BACKLOG_STATUSES})
        counts[record["status"]] = record["n"]
    return out
