"""Every statement the log store runs, shared verbatim by the chdb and clickhouse-connect backends.

Values are never spliced into SQL text: each statement uses ClickHouse server-side parameters
(``{name:Type}``), which both backends bind.  Lists travel as one JSON string parameter and are
unpacked in SQL (chdb cannot bind ``Array`` parameters from Python lists); batches of rows travel as
one ``JSONEachRow`` string parameter read through the ``format`` table function.  The only text that
varies is the sort direction, chosen from a closed set when this module is imported.

Every read deduplicates with ``LIMIT 1 BY event_id`` (ReplacingMergeTree merges lazily) and hides
rows whose ``expires_at`` has passed (TTL deletes them lazily, at merges).
"""

from __future__ import annotations

TABLE = "job_logs"

#: Shape of one row in an insert payload (``JSONEachRow``); times are epoch milliseconds.
ROW_STRUCTURE = (
    "event_id String, user_id UUID, workflow_id UUID, job_id UUID, timestamp_ms Int64, "
    "message String, sequence_num UInt32, stream String, attempt UInt16, expires_at_ms Nullable(Int64)"
)

#: Shape of the batch keys sent to the existence check.
KEY_STRUCTURE = "event_id String, user_id UUID, workflow_id UUID, job_id UUID"

CREATE_SCHEMA_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version UInt32,
    dirty UInt8,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY (version, applied_at)
"""

# The latest state per version wins: a version is applied when its last mark is clean.
SELECT_APPLIED_MIGRATIONS = """
SELECT version, argMax(dirty, applied_at) AS dirty
FROM schema_migrations
GROUP BY version
"""

MARK_MIGRATION = """
INSERT INTO schema_migrations (version, dirty, applied_at)
VALUES ({version:UInt32}, {dirty:UInt8}, now64(3))
"""

INSERT_ROWS = f"""
INSERT INTO {TABLE}
    (event_id, user_id, workflow_id, job_id, timestamp, message, sequence_num, stream, attempt, expires_at)
SELECT
    event_id, user_id, workflow_id, job_id,
    fromUnixTimestamp64Milli(timestamp_ms, 'UTC'),
    message, sequence_num, stream, attempt,
    fromUnixTimestamp64Milli(expires_at_ms, 'UTC')
FROM format(JSONEachRow, '{ROW_STRUCTURE}', {{rows:String}})
"""

# Which of a batch's event ids are stored already.  The key tuple lets the primary index narrow
# the read to the batch's jobs before event ids are compared.
SELECT_EXISTING_EVENT_IDS = f"""
SELECT DISTINCT event_id
FROM {TABLE}
WHERE (user_id, workflow_id, job_id) IN (
        SELECT user_id, workflow_id, job_id
        FROM format(JSONEachRow, '{KEY_STRUCTURE}', {{keys:String}}))
  AND event_id IN (
        SELECT event_id
        FROM format(JSONEachRow, '{KEY_STRUCTURE}', {{keys:String}}))
"""

_JOB_SCOPE = """user_id = {user_id:UUID}
  AND workflow_id = {workflow_id:UUID}
  AND job_id = {job_id:UUID}
  AND (expires_at IS NULL OR expires_at > now64(3))"""

COUNT_JOB = f"""
SELECT uniqExact(event_id) AS n
FROM {TABLE}
WHERE {_JOB_SCOPE}
"""

# Case-insensitive substring match.  The expression matches the ngram skip index on
# ``lowerUTF8(message)`` exactly, so ClickHouse can skip granules without the pattern's trigrams.
_SEARCH_FILTER = "\n  AND lowerUTF8(message) LIKE lowerUTF8({pattern:String})"


def _page_statement(*, ascending: bool, search: bool) -> str:
    # The cursor row is the first row of the page (inclusive), as in the seed.
    direction, past = ("ASC", ">") if ascending else ("DESC", "<")
    text_filter = _SEARCH_FILTER if search else ""
    return f"""
SELECT
    event_id,
    toUnixTimestamp64Milli(timestamp) AS timestamp_ms,
    message,
    sequence_num,
    stream,
    attempt
FROM {TABLE}
WHERE {_JOB_SCOPE}
  AND ({{stream:String}} = '' OR stream = {{stream:String}})
  AND ({{has_cursor:UInt8}} = 0
       OR sequence_num {past} {{cursor_sequence_num:UInt32}}
       OR (sequence_num = {{cursor_sequence_num:UInt32}}
           AND (stream, event_id) >= ({{cursor_stream:String}}, {{cursor_event_id:String}}))){text_filter}
ORDER BY sequence_num {direction}, stream ASC, event_id ASC
LIMIT 1 BY event_id
LIMIT {{limit:UInt32}}
"""


PAGE_NEWEST_FIRST = _page_statement(ascending=False, search=False)
PAGE_OLDEST_FIRST = _page_statement(ascending=True, search=False)
SEARCH_NEWEST_FIRST = _page_statement(ascending=False, search=True)
SEARCH_OLDEST_FIRST = _page_statement(ascending=True, search=True)

# Mutations are synchronous (``mutations_sync = 2``), as in the seed: the caller may rely on the
# lines being gone when the call returns.
DELETE_WORKFLOW = f"""
ALTER TABLE {TABLE}
DELETE WHERE user_id = {{user_id:UUID}} AND workflow_id = {{workflow_id:UUID}}
SETTINGS mutations_sync = 2
"""

DELETE_EVENTS = f"""
ALTER TABLE {TABLE}
DELETE WHERE has(JSONExtract({{event_ids:String}}, 'Array(String)'), event_id)
SETTINGS mutations_sync = 2
"""

PING = "SELECT 1 AS ok"
