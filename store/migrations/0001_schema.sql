-- 0001: the whole relational data model (reference §3.1, seed migrations 000001-000008) plus our
-- additions: api_tokens, workflows.log_retention_ttl_seconds, outbox_events.last_error, the RAY
-- workflow kind, and LISTEN/NOTIFY wake-ups for the event-driven scheduler and the outbox relay.
--
-- Applied by store/migrate.py inside one transaction; this file must not BEGIN/COMMIT itself.
-- Portable across PostgreSQL 15-18: ids are normally UUIDv7 values supplied by the application
-- (domain.ids.uuid7); the column DEFAULT is only a fallback built on gen_random_uuid() (core since
-- PG 13), never PG 18's uuidv7().
-- All timestamps are TIMESTAMP WITHOUT TIME ZONE holding UTC, as in the seed.

-- ---------------------------------------------------------------------------------------------
-- Functions
-- ---------------------------------------------------------------------------------------------

-- Time-ordered UUIDv7 fallback: 48-bit unix ms over the random bytes of a v4 uuid, with the
-- version nibble turned from 0100 into 0111 (bits 52 and 53 of the 16-byte value).
CREATE FUNCTION chronoverse_uuid7() RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT encode(
        set_bit(
            set_bit(
                overlay(
                    uuid_send(gen_random_uuid())
                    PLACING substring(
                        int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3
                    )
                    FROM 1 FOR 6
                ),
                52, 1
            ),
            53, 1
        ),
        'hex'
    )::uuid
$$;

-- BEFORE UPDATE on every table with updated_at (seed behaviour).
CREATE FUNCTION chronoverse_set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now() AT TIME ZONE 'utc';
    RETURN NEW;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Enum types
-- ---------------------------------------------------------------------------------------------

CREATE TYPE notification_preference AS ENUM ('ALERTS', 'ALL', 'NONE');
CREATE TYPE workflow_build_status AS ENUM ('QUEUED', 'STARTED', 'COMPLETED', 'FAILED', 'CANCELED');
CREATE TYPE job_status AS ENUM ('PENDING', 'QUEUED', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELED');
CREATE TYPE job_trigger AS ENUM ('AUTOMATIC', 'MANUAL');
CREATE TYPE idempotency_status AS ENUM ('PROCESSING', 'COMPLETED', 'FAILED');
CREATE TYPE outbox_status AS ENUM ('PENDING', 'PROCESSING', 'PUBLISHED', 'FAILED', 'DEAD');

-- ---------------------------------------------------------------------------------------------
-- users
-- ---------------------------------------------------------------------------------------------

CREATE TABLE users (
    id                      UUID PRIMARY KEY DEFAULT chronoverse_uuid7(),
    email                   VARCHAR(100) NOT NULL,
    password                VARCHAR(100) NOT NULL,  -- bcrypt hash
    notification_preference notification_preference NOT NULL DEFAULT 'ALERTS',
    created_at              TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    updated_at              TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    CONSTRAINT users_email_key UNIQUE (email)
);

CREATE TRIGGER users_set_updated_at BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION chronoverse_set_updated_at();

-- ---------------------------------------------------------------------------------------------
-- api_tokens (ours): personal tokens for `Authorization: Bearer`; only the sha256 hex is stored.
-- ---------------------------------------------------------------------------------------------

CREATE TABLE api_tokens (
    id           UUID PRIMARY KEY DEFAULT chronoverse_uuid7(),
    user_id      UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    token_hash   TEXT NOT NULL,
    prefix       TEXT NOT NULL,  -- the first characters, shown to the user to tell tokens apart
    created_at   TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    last_used_at TIMESTAMP NULL,
    expires_at   TIMESTAMP NULL,
    revoked_at   TIMESTAMP NULL,
    CONSTRAINT api_tokens_token_hash_key UNIQUE (token_hash)
);

CREATE INDEX idx_api_tokens_user_id ON api_tokens (user_id);

-- ---------------------------------------------------------------------------------------------
-- workflows
-- ---------------------------------------------------------------------------------------------

CREATE TABLE workflows (
    id                                   UUID PRIMARY KEY DEFAULT chronoverse_uuid7(),
    user_id                              UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name                                 VARCHAR(255) NOT NULL,
    payload                              JSONB NOT NULL,
    -- TEXT + CHECK rather than an enum type: adding a kind is one constraint swap, not ALTER TYPE.
    kind                                 TEXT NOT NULL,
    build_status                         workflow_build_status NOT NULL DEFAULT 'QUEUED',
    "interval"                           INTEGER NOT NULL,  -- minutes
    consecutive_job_failures_count       INTEGER NOT NULL DEFAULT 0,
    max_consecutive_job_failures_allowed INTEGER NOT NULL DEFAULT 3,
    created_at                           TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    updated_at                           TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    terminated_at                        TIMESTAMP NULL,
    log_retention                        BOOLEAN NOT NULL DEFAULT TRUE,
    -- Ours (SPEC §5.6): optional retention duration of the workflow's logs; NULL = keep forever.
    log_retention_ttl_seconds            INTEGER NULL,
    generation                           BIGINT NOT NULL DEFAULT 1,
    build_hash                           TEXT NULL,
    CONSTRAINT workflows_kind_check CHECK (kind IN ('HEARTBEAT', 'CONTAINER', 'RAY')),
    CONSTRAINT workflows_interval_check CHECK ("interval" >= 1),
    CONSTRAINT workflows_consecutive_job_failures_count_check CHECK (consecutive_job_failures_count >= 0),
    CONSTRAINT workflows_max_consecutive_job_failures_allowed_check
        CHECK (max_consecutive_job_failures_allowed > 0),
    CONSTRAINT workflows_log_retention_ttl_seconds_check
        CHECK (log_retention_ttl_seconds IS NULL OR log_retention_ttl_seconds > 0)
);

CREATE INDEX idx_workflows_user_id ON workflows (user_id);
CREATE INDEX idx_workflows_created_at_id ON workflows (created_at DESC, id DESC);

CREATE TRIGGER workflows_set_updated_at BEFORE UPDATE ON workflows
    FOR EACH ROW EXECUTE FUNCTION chronoverse_set_updated_at();

-- ---------------------------------------------------------------------------------------------
-- jobs
-- ---------------------------------------------------------------------------------------------

CREATE TABLE jobs (
    id                 UUID PRIMARY KEY DEFAULT chronoverse_uuid7(),
    workflow_id        UUID NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    user_id            UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    container_id       TEXT NULL,
    status             job_status NOT NULL DEFAULT 'PENDING',
    scheduled_at       TIMESTAMP NOT NULL,
    started_at         TIMESTAMP NULL,
    completed_at       TIMESTAMP NULL,
    created_at         TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    updated_at         TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    "trigger"          job_trigger NOT NULL DEFAULT 'AUTOMATIC',
    idempotency_key    TEXT NULL,
    -- lease / retry (reference §6.3)
    queued_at          TIMESTAMP NULL,
    lease_token        TEXT NULL,
    leased_by          TEXT NULL,
    lease_expires_at   TIMESTAMP NULL,
    last_heartbeat_at  TIMESTAMP NULL,
    dispatch_attempts  INTEGER NOT NULL DEFAULT 0,
    attempts           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at    TIMESTAMP NULL,
    -- error columns (the writer truncates last_error_message to 4096 characters)
    failure_kind       TEXT NULL,
    last_error_code    TEXT NULL,
    last_error_message TEXT NULL,
    CONSTRAINT jobs_dispatch_attempts_check CHECK (dispatch_attempts >= 0),
    CONSTRAINT jobs_attempts_check CHECK (attempts >= 0),
    CONSTRAINT jobs_failure_kind_check CHECK (failure_kind IS NULL OR failure_kind IN ('USER', 'SYSTEM'))
);

CREATE INDEX idx_jobs_workflow_id ON jobs (workflow_id);
CREATE INDEX idx_jobs_user_id ON jobs (user_id);
CREATE INDEX idx_jobs_status ON jobs (status);
CREATE INDEX idx_jobs_trigger ON jobs ("trigger");
CREATE INDEX idx_jobs_pending_scheduled_at ON jobs (scheduled_at) WHERE status = 'PENDING';
CREATE INDEX idx_jobs_failed_scheduled_at ON jobs (scheduled_at) WHERE status = 'FAILED';
CREATE INDEX idx_jobs_created_at_id ON jobs (created_at DESC, id DESC);
CREATE INDEX idx_jobs_pending_due ON jobs (scheduled_at, created_at, id) WHERE status = 'PENDING';
CREATE INDEX idx_jobs_workflow_active ON jobs (workflow_id, status, scheduled_at, created_at, id)
    WHERE status IN ('PENDING', 'QUEUED', 'RUNNING');
CREATE INDEX idx_jobs_running_lease_expires_at ON jobs (lease_expires_at, id)
    WHERE status = 'RUNNING' AND lease_expires_at IS NOT NULL;
-- Ours: the scheduler's stale-QUEUED re-dispatch (SPEC §5.3) scans QUEUED jobs by queued_at.
CREATE INDEX idx_jobs_queued_queued_at ON jobs (queued_at, id) WHERE status = 'QUEUED';

-- MANUAL: same idempotency key => same job (per user and workflow).
CREATE UNIQUE INDEX uq_jobs_manual_idempotency_key ON jobs (user_id, workflow_id, idempotency_key)
    WHERE "trigger" = 'MANUAL' AND idempotency_key IS NOT NULL;
-- AUTOMATIC: one job per schedule slot, which makes follow-up inserts idempotent across retries.
CREATE UNIQUE INDEX uq_jobs_automatic_slot ON jobs (workflow_id, scheduled_at, "trigger")
    WHERE "trigger" = 'AUTOMATIC';
CREATE UNIQUE INDEX uq_jobs_automatic_idempotency_key ON jobs (workflow_id, idempotency_key)
    WHERE "trigger" = 'AUTOMATIC' AND idempotency_key IS NOT NULL;

CREATE TRIGGER jobs_set_updated_at BEFORE UPDATE ON jobs
    FOR EACH ROW EXECUTE FUNCTION chronoverse_set_updated_at();

-- Scheduler wake-ups (SPEC §5.2).  Channel `chronoverse_jobs`, payload = unix epoch milliseconds
-- (as text) of the earliest moment at which a job touched by the statement may become
-- dispatchable.  A listener wakes at min(its current target, payload).  One NOTIFY per statement
-- (statement-level triggers over transition tables), delivered at commit; PostgreSQL folds
-- identical notifications of one transaction.  Sent when:
--   * PENDING jobs are inserted (due = greatest(scheduled_at, next_attempt_at));
--   * a job becomes PENDING or a PENDING job's scheduled_at/next_attempt_at changes;
--   * a job leaves QUEUED/RUNNING for anything but RUNNING (completion, failure, cancel, release):
--     a later sibling of the same workflow may be unblocked right now, so due = now.
CREATE FUNCTION chronoverse_notify_jobs_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    due timestamp;
BEGIN
    SELECT min(greatest(n.scheduled_at, coalesce(n.next_attempt_at, n.scheduled_at)))
      INTO due
      FROM inserted_jobs n
     WHERE n.status = 'PENDING';
    IF due IS NOT NULL THEN
        PERFORM pg_notify('chronoverse_jobs', floor(extract(epoch FROM due) * 1000)::bigint::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION chronoverse_notify_jobs_updated() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    due timestamp;
BEGIN
    SELECT min(
               CASE
                   WHEN n.status = 'PENDING'
                       THEN greatest(n.scheduled_at, coalesce(n.next_attempt_at, n.scheduled_at))
                   ELSE now() AT TIME ZONE 'utc'
               END
           )
      INTO due
      FROM new_jobs n
      JOIN old_jobs o ON o.id = n.id
     WHERE (n.status = 'PENDING'
            AND (o.status <> 'PENDING'
                 OR o.scheduled_at IS DISTINCT FROM n.scheduled_at
                 OR o.next_attempt_at IS DISTINCT FROM n.next_attempt_at))
        OR (o.status IN ('QUEUED', 'RUNNING') AND n.status NOT IN ('QUEUED', 'RUNNING'));
    IF due IS NOT NULL THEN
        PERFORM pg_notify('chronoverse_jobs', floor(extract(epoch FROM due) * 1000)::bigint::text);
    END IF;
    RETURN NULL;
END
$$;

-- Transition tables allow one event per trigger, hence two triggers.
CREATE TRIGGER jobs_notify_inserted AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS inserted_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION chronoverse_notify_jobs_inserted();

CREATE TRIGGER jobs_notify_updated AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_jobs NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION chronoverse_notify_jobs_updated();

-- ---------------------------------------------------------------------------------------------
-- notifications
-- ---------------------------------------------------------------------------------------------

CREATE TABLE notifications (
    id              UUID PRIMARY KEY DEFAULT chronoverse_uuid7(),
    user_id         UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind            TEXT NOT NULL,
    payload         JSONB NOT NULL,
    read_at         TIMESTAMP NULL,
    created_at      TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    updated_at      TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    idempotency_key TEXT NULL
);

CREATE INDEX idx_notifications_user_id_unread ON notifications (user_id) WHERE read_at IS NULL;
CREATE INDEX idx_notifications_user_id_unread_first_created_at
    ON notifications (user_id, (read_at IS NULL) DESC, created_at DESC);
CREATE UNIQUE INDEX uq_notifications_user_id_idempotency_key ON notifications (user_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TRIGGER notifications_set_updated_at BEFORE UPDATE ON notifications
    FOR EACH ROW EXECUTE FUNCTION chronoverse_set_updated_at();

-- ---------------------------------------------------------------------------------------------
-- analytics (workflow_id has no FK on purpose: rows survive workflow deletion)
-- ---------------------------------------------------------------------------------------------

CREATE TABLE analytics (
    id                           UUID PRIMARY KEY DEFAULT chronoverse_uuid7(),
    user_id                      UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    workflow_id                  UUID NOT NULL,
    kind                         TEXT NOT NULL DEFAULT '',
    total_job_execution_duration BIGINT NOT NULL DEFAULT 0,  -- seconds
    jobs_count                   INTEGER NOT NULL DEFAULT 0,
    logs_count                   BIGINT NOT NULL DEFAULT 0,
    updated_at                   TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc')
);

CREATE INDEX idx_analytics_user_id ON analytics (user_id);
CREATE UNIQUE INDEX uq_analytics_user_id_workflow_id ON analytics (user_id, workflow_id);

CREATE TRIGGER analytics_set_updated_at BEFORE UPDATE ON analytics
    FOR EACH ROW EXECUTE FUNCTION chronoverse_set_updated_at();

-- ---------------------------------------------------------------------------------------------
-- workflow_idempotency_keys (reference §6.2); operation = create_workflow | update_workflow:<id>
-- ---------------------------------------------------------------------------------------------

CREATE TABLE workflow_idempotency_keys (
    user_id         UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    operation       TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash    TEXT NOT NULL,  -- sha256 hex of the canonical request
    workflow_id     UUID NULL,
    response        JSONB NULL,
    status          idempotency_status NOT NULL DEFAULT 'PROCESSING',
    created_at      TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    updated_at      TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    expires_at      TIMESTAMP NOT NULL DEFAULT ((now() AT TIME ZONE 'utc') + INTERVAL '24 hours'),
    PRIMARY KEY (user_id, operation, idempotency_key)
);

CREATE INDEX idx_workflow_idempotency_keys_expires_at ON workflow_idempotency_keys (expires_at);

CREATE TRIGGER workflow_idempotency_keys_set_updated_at BEFORE UPDATE ON workflow_idempotency_keys
    FOR EACH ROW EXECUTE FUNCTION chronoverse_set_updated_at();

-- ---------------------------------------------------------------------------------------------
-- outbox_events (reference §6.1; SPEC §5.3: DEAD rows no longer gate later rows of their key)
-- ---------------------------------------------------------------------------------------------

CREATE TABLE outbox_events (
    id              UUID PRIMARY KEY DEFAULT chronoverse_uuid7(),
    topic           TEXT NOT NULL,
    kafka_key       TEXT NOT NULL,
    event_key       TEXT NOT NULL,
    payload         JSONB NOT NULL,
    status          outbox_status NOT NULL DEFAULT 'PENDING',
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    locked_at       TIMESTAMP NULL,
    locked_by       TEXT NULL,
    last_error      TEXT NULL,  -- ours: why the last publish failed
    created_at      TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    updated_at      TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    published_at    TIMESTAMP NULL,
    CONSTRAINT outbox_events_topic_event_key_key UNIQUE (topic, event_key),
    CONSTRAINT outbox_events_attempts_check CHECK (attempts >= 0)
);

CREATE INDEX idx_outbox_events_pending_due ON outbox_events (next_attempt_at, created_at)
    WHERE status = 'PENDING';
CREATE INDEX idx_outbox_events_failed_due ON outbox_events (next_attempt_at, created_at)
    WHERE status = 'FAILED';
CREATE INDEX idx_outbox_events_processing_locked_at ON outbox_events (locked_at)
    WHERE status = 'PROCESSING';
CREATE INDEX idx_outbox_events_published_at ON outbox_events (published_at)
    WHERE status = 'PUBLISHED';
-- The per-key ordering gate.  The seed indexed `status <> 'PUBLISHED'`; since DEAD rows no longer
-- gate (SPEC §5.3) the predicate is exactly the gate's, so the planner can always use it.
CREATE INDEX idx_outbox_events_key_order ON outbox_events (topic, kafka_key, created_at, id)
    WHERE status IN ('PENDING', 'PROCESSING', 'FAILED');
-- DEAD rows are counted (metric) and re-driven by topic/key.
CREATE INDEX idx_outbox_events_dead ON outbox_events (topic, kafka_key, created_at)
    WHERE status = 'DEAD';

CREATE TRIGGER outbox_events_set_updated_at BEFORE UPDATE ON outbox_events
    FOR EACH ROW EXECUTE FUNCTION chronoverse_set_updated_at();

-- Relay wake-up: channel `chronoverse_outbox`, payload = topic, one NOTIFY per topic per statement.
CREATE FUNCTION chronoverse_notify_outbox_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    t text;
BEGIN
    FOR t IN SELECT DISTINCT topic FROM inserted_events LOOP
        PERFORM pg_notify('chronoverse_outbox', t);
    END LOOP;
    RETURN NULL;
END
$$;

CREATE TRIGGER outbox_events_notify_inserted AFTER INSERT ON outbox_events
    REFERENCING NEW TABLE AS inserted_events
    FOR EACH STATEMENT EXECUTE FUNCTION chronoverse_notify_outbox_inserted();

-- ---------------------------------------------------------------------------------------------
-- processed_events: consumer-side dedupe (reference §6.6)
-- ---------------------------------------------------------------------------------------------

CREATE TABLE processed_events (
    consumer   TEXT NOT NULL,
    event_key  TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    PRIMARY KEY (consumer, event_key)
);

CREATE INDEX idx_processed_events_created_at ON processed_events (created_at);

-- ---------------------------------------------------------------------------------------------
-- workflow_failure_events: dedupes consecutive-failure increments per job
-- ---------------------------------------------------------------------------------------------

CREATE TABLE workflow_failure_events (
    job_id      UUID PRIMARY KEY,
    workflow_id UUID NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    user_id     UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc')
);
