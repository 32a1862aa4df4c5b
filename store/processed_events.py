"""Consumer-side dedupe: ``processed_events(consumer, event_key)`` (reference §6.6).

A consumer records an event key in the same transaction as the effect it guards; a replayed event
finds its key and is skipped.  Rows older than the retention (336 h by default) are deleted, after
which a replay would be applied again.  Known consumers: ``analytics-processor``,
``joblogs-processor:analytics``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from store.postgres import Queryable, rows_affected

INSERT_PROCESSED = """
INSERT INTO processed_events (consumer, event_key)
VALUES ($1, $2)
ON CONFLICT (consumer, event_key) DO NOTHING
RETURNING 1
"""

# The keys come de-duplicated: ON CONFLICT cannot resolve one key twice in a statement.
INSERT_PROCESSED_MANY = """
INSERT INTO processed_events (consumer, event_key)
SELECT $1, k FROM unnest($2::text[]) AS k
ON CONFLICT (consumer, event_key) DO NOTHING
RETURNING event_key
"""

# Every consumer's rows, as in the seed's analytics-processor cleanup.
CLEANUP_PROCESSED = """
DELETE FROM processed_events
 WHERE (consumer, event_key) IN (
       SELECT consumer, event_key
         FROM processed_events
        WHERE created_at < (now() AT TIME ZONE 'utc') - $1::interval
        ORDER BY created_at
        LIMIT $2
          FOR UPDATE SKIP LOCKED
 )
"""


async def mark_processed(conn: Queryable, consumer: str, event_key: str) -> bool:
    """Record ``event_key`` as processed by ``consumer``; ``True`` if it is new (apply the effect),
    ``False`` if it was already recorded (skip).  Use the effect's transaction connection."""
    return await conn.fetchval(INSERT_PROCESSED, consumer, event_key) is not None


async def mark_processed_many(conn: Queryable, consumer: str, event_keys: Sequence[str]) -> list[str]:
    """:func:`mark_processed` for many keys in one statement: returns the keys that were new (in the
    order given, each once); the others were already recorded.  Use the effect's transaction."""
    if not event_keys:
        return []
    unique = list(dict.fromkeys(event_keys))
    fresh = {r["event_key"] for r in await conn.fetch(INSERT_PROCESSED_MANY, consumer, unique)}
    return [key for key in unique if key in fresh]


async def cleanup(pool: Queryable, *, retention: timedelta, batch_size: int) -> int:
    """Delete up to ``batch_size`` rows older than ``retention`` (all consumers); return how many."""
    return rows_affected(await pool.execute(CLEANUP_PROCESSED, retention, batch_size))
