"""The transactional outbox: every statement on ``outbox_events`` (reference §6.1, SPEC §5.3).

Producers call :func:`add_event` inside the transaction that changes state; the relay claims due
rows with :func:`claim_batch`, publishes them, and settles each with :func:`mark_published` or
:func:`mark_failed`.  Ordering contract: rows of one ``(topic, kafka_key)`` are published in
``(created_at, id)`` order with at most one in flight.  Our change to the seed: a ``DEAD`` row no
longer blocks the later rows of its key (it is counted by :func:`backlog` and re-queued by
:func:`redrive_dead`).

Payloads are handled as JSON text on purpose (``::text`` casts both ways), so this module works
on any asyncpg connection whatever its type codecs, and the relay publishes the stored text as is.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

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

# One statement, hence one transaction.  A row is claimable when it is due (PENDING/FAILED whose
# next_attempt_at has come, or PROCESSING whose lease ran out) and no earlier row of its
# (topic, kafka_key) is still active (PENDING/PROCESSING/FAILED).  Only the earliest active row of
# a key can pass that gate, so a batch holds at most one row per key and a key never has two rows
# in flight.  DEAD and PUBLISHED rows do not gate.  SKIP LOCKED lets concurrent relays split work;
# a row they skip still gates its later siblings through the NOT EXISTS.
CLAIM_BATCH = f"""
WITH due AS (
    SELECT e.id AS due_id
      FROM outbox_events e
     WHERE e.topic = $1
       AND (
               (e.status IN ('PENDING', 'FAILED') AND e.next_attempt_at <= (now() AT TIME ZONE 'utc'))
            OR (e.status = 'PROCESSING' AND e.locked_at <= (now() AT TIME ZONE 'utc') - $4::interval)
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
     LIMIT $3
       FOR UPDATE SKIP LOCKED
)
UPDATE outbox_events o
   SET status = 'PROCESSING',
       locked_at = now() AT TIME ZONE 'utc',
       locked_by = $2,
       attempts = o.attempts + 1
  FROM due
 WHERE o.id = due.due_id
RETURNING {_COLUMNS}
"""

MARK_PUBLISHED = """
UPDATE outbox_events
   SET status = 'PUBLISHED', published_at = now() AT TIME ZONE 'utc', last_error = NULL
 WHERE id = $1 AND locked_by = $2 AND status = 'PROCESSING'
"""

MARK_PUBLISHED_MANY = """
UPDATE outbox_events o
   SET status = 'PUBLISHED', published_at = now() AT TIME ZONE 'utc', last_error = NULL
  FROM unnest($1::uuid[], $2::text[]) AS c (id, token)
 WHERE o.id = c.id AND o.locked_by = c.token AND o.status = 'PROCESSING'
RETURNING o.id
"""

MARK_FAILED = """
UPDATE outbox_events
   SET status = CASE WHEN attempts >= $4 THEN 'DEAD'::outbox_status ELSE 'FAILED'::outbox_status END,
       next_attempt_at = (now() AT TIME ZONE 'utc') + $5::interval,
       last_error = $3
 WHERE id = $1 AND locked_by = $2 AND status = 'PROCESSING'
RETURNING status::text
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
    def claim_token(self) -> str | None:
        """The token of the claim holding this row (pass it back to mark_published/mark_failed)."""
        return self.locked_by

    @property
    def payload(self) -> Any:
        """The payload decoded from JSON."""
        return json.loads(self.payload_json)

    def kafka_value(self) -> bytes:
        """The Kafka record value: the payload's JSON text as UTF-8."""
        return self.payload_json.encode()


def new_claim_token(worker_id: str) -> str:
    """A claim token in the seed's format ``<worker>:<unix nanos>:<32 hex>``."""
    return f"{worker_id}:{time.time_ns()}:{secrets.token_hex(16)}"


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


async def claim_batch(
    pool: Queryable,
    *,
    topic: str,
    worker_id: str,
    batch_size: int,
    processing_lease: timedelta,
) -> list[OutboxRow]:
    """Claim up to ``batch_size`` due rows of ``topic`` (see :data:`CLAIM_BATCH`), oldest first.

    Claimed rows are PROCESSING with ``attempts`` incremented and one fresh claim token.
    """
    token = new_claim_token(worker_id)
    records = await pool.fetch(CLAIM_BATCH, topic, token, batch_size, processing_lease)
    rows = [OutboxRow.model_validate(dict(r)) for r in records]
    rows.sort(key=lambda row: (row.created_at, row.id))
    return rows


async def mark_published(pool: Queryable, row_id: UUID, claim_token: str) -> bool:
    """Mark a claimed row PUBLISHED.  ``False`` when the claim was lost (lease expired and the row
    was re-claimed, or it was redriven): the event may then be published twice, which
    at-least-once delivery allows."""
    return rows_affected(await pool.execute(MARK_PUBLISHED, row_id, claim_token)) == 1


async def mark_published_many(pool: Queryable, rows: Sequence[OutboxRow]) -> set[UUID]:
    """:func:`mark_published` for a whole batch in one statement; returns the ids marked (a claimed
    row missing from the result had lost its claim)."""
    if not rows:
        return set()
    records = await pool.fetch(MARK_PUBLISHED_MANY, [r.id for r in rows], [r.claim_token for r in rows])
    return {r["id"] for r in records}


async def mark_failed(
    pool: Queryable,
    row_id: UUID,
    claim_token: str,
    *,
    error: str,
    max_attempts: int,
    retry_backoff: timedelta,
) -> OutboxStatus | None:
    """Record a failed publish: FAILED, due again after ``retry_backoff``, or DEAD once the row has
    been attempted ``max_attempts`` times.  Returns the new status, or ``None`` when the claim
    was lost (nothing changed)."""
    status = await pool.fetchval(
        MARK_FAILED, row_id, claim_token, error[:MAX_ERROR_LENGTH], max_attempts, retry_backoff
    )
    return OutboxStatus(status) if status is not None else None


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
