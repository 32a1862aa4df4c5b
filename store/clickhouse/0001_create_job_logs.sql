-- job_logs: one row per log line (reference §3.2), plus `attempt` and the optional retention column.
--
-- * ReplacingMergeTree on the full sort key: a replayed line (same deterministic event_id, so the same
--   key) collapses at merge time; reads deduplicate exactly with LIMIT 1 BY event_id meanwhile.
-- * Search index: ngrambf_v1 on lowerUTF8(message), used by `lowerUTF8(message) LIKE lowerUTF8(pattern)`
--   (case-insensitive substring search).  Chosen over the `text` index type because it exists on every
--   ClickHouse server version clickhouse-connect supports, while `text` needs a recent server; chdb 26.9
--   supports both.  32 KiB per 8192-row granule keeps the bloom filter useful for log-sized granules.
-- * Retention: `expires_at` NULL = keep until the workflow is deleted (the seed's only rule); otherwise
--   the row TTL drops the line at merges after that time (reads hide it from that moment on).
CREATE TABLE IF NOT EXISTS job_logs
(
    event_id String,
    user_id UUID,
    workflow_id UUID,
    job_id UUID,
    timestamp DateTime64(3, 'UTC'),
    message String CODEC(ZSTD(3)),
    sequence_num UInt32,
    stream LowCardinality(String),
    attempt UInt16 DEFAULT 1,
    expires_at Nullable(DateTime64(3, 'UTC')),
    INDEX idx_user_id user_id TYPE minmax GRANULARITY 1,
    INDEX idx_workflow_id workflow_id TYPE minmax GRANULARITY 1,
    INDEX idx_stream stream TYPE tokenbf_v1(512, 2, 0) GRANULARITY 1,
    INDEX idx_message_ngrams lowerUTF8(message) TYPE ngrambf_v1(3, 32768, 3, 0) GRANULARITY 1
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(timestamp)
ORDER BY (user_id, workflow_id, job_id, sequence_num, stream, event_id)
-- A TTL expression cannot be Nullable: rows without an expiry get a date no row will reach.
TTL ifNull(expires_at, toDateTime64('2299-12-31 00:00:00', 3, 'UTC'))
SETTINGS index_granularity = 8192;
