"""Numbered SQL migrations on a real PostgreSQL: once, in order, concurrency-safe, and the schema
they build (reference §3.1 tables and indexes, triggers, LISTEN/NOTIFY wake-ups)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import asyncpg
import pytest

from domain.config import PostgresConfig
from domain.errors import PreconditionFailed
from domain.ids import uuid7
from store.migrate import applied_migrations, load_migrations, migrate
from store.postgres import connect

ALL_VERSIONS = [m.version for m in load_migrations()]

TABLES = {
    "users",
    "api_tokens",
    "workflows",
    "jobs",
    "notifications",
    "analytics",
    "workflow_idempotency_keys",
    "outbox_events",
    "processed_events",
    "workflow_failure_events",
    "schema_migrations",
}

# index name -> (table, unique, fragments its definition must contain)
INDEXES: dict[str, tuple[str, bool, tuple[str, ...]]] = {
    "users_email_key": ("users", True, ("(email)",)),
    "api_tokens_token_hash_key": ("api_tokens", True, ("(token_hash)",)),
    "idx_api_tokens_user_id": ("api_tokens", False, ("(user_id)",)),
    "idx_workflows_user_id": ("workflows", False, ("(user_id)",)),
    "idx_workflows_created_at_id": ("workflows", False, ("(created_at DESC, id DESC)",)),
    "idx_jobs_workflow_id": ("jobs", False, ("(workflow_id)",)),
    "idx_jobs_user_id": ("jobs", False, ("(user_id)",)),
    "idx_jobs_status": ("jobs", False, ("(status)",)),
    "idx_jobs_trigger": ("jobs", False, ("(trigger)",)),
    "idx_jobs_pending_scheduled_at": ("jobs", False, ("(scheduled_at)", "'PENDING'")),
    "idx_jobs_failed_scheduled_at": ("jobs", False, ("(scheduled_at)", "'FAILED'")),
    "idx_jobs_created_at_id": ("jobs", False, ("(created_at DESC, id DESC)",)),
    "idx_jobs_pending_due": ("jobs", False, ("(scheduled_at, created_at, id)", "'PENDING'")),
    "idx_jobs_workflow_active": (
        "jobs",
        False,
        ("(workflow_id, status, scheduled_at, created_at, id)", "'QUEUED'", "'RUNNING'"),
    ),
    "idx_jobs_running_lease_expires_at": (
        "jobs",
        False,
        ("(lease_expires_at, id)", "'RUNNING'", "lease_expires_at IS NOT NULL"),
    ),
    "idx_jobs_queued_queued_at": ("jobs", False, ("(queued_at, id)", "'QUEUED'")),
    "uq_jobs_manual_idempotency_key": (
        "jobs",
        True,
        ("(user_id, workflow_id, idempotency_key)", "'MANUAL'", "idempotency_key IS NOT NULL"),
    ),
    "uq_jobs_automatic_slot": ("jobs", True, ("(workflow_id, scheduled_at, trigger)", "'AUTOMATIC'")),
    "uq_jobs_automatic_idempotency_key": (
        "jobs",
        True,
        ("(workflow_id, idempotency_key)", "'AUTOMATIC'", "idempotency_key IS NOT NULL"),
    ),
    "idx_notifications_user_id_unread": ("notifications", False, ("(user_id)", "read_at IS NULL")),
    "idx_notifications_user_id_unread_first_created_at": (
        "notifications",
        False,
        ("(user_id, ((read_at IS NULL)) DESC, created_at DESC)",),
    ),
    "uq_notifications_user_id_idempotency_key": (
        "notifications",
        True,
        ("(user_id, idempotency_key)", "idempotency_key IS NOT NULL"),
    ),
    "idx_analytics_user_id": ("analytics", False, ("(user_id)",)),
    "uq_analytics_user_id_workflow_id": ("analytics", True, ("(user_id, workflow_id)",)),
    "workflow_idempotency_keys_pkey": (
        "workflow_idempotency_keys",
        True,
        ("(user_id, operation, idempotency_key)",),
    ),
    "idx_workflow_idempotency_keys_expires_at": ("workflow_idempotency_keys", False, ("(expires_at)",)),
    "outbox_events_topic_event_key_key": ("outbox_events", True, ("(topic, event_key)",)),
    "idx_outbox_events_pending_due": ("outbox_events", False, ("(next_attempt_at, created_at)", "'PENDING'")),
    "idx_outbox_events_failed_due": ("outbox_events", False, ("(next_attempt_at, created_at)", "'FAILED'")),
    "idx_outbox_events_processing_locked_at": ("outbox_events", False, ("(locked_at)", "'PROCESSING'")),
    "idx_outbox_events_published_at": ("outbox_events", False, ("(published_at)", "'PUBLISHED'")),
    "idx_outbox_events_key_order": ("outbox_events", False, ("(topic, kafka_key, created_at, id)", "WHERE")),
    "idx_outbox_events_dead": ("outbox_events", False, ("'DEAD'",)),
    "processed_events_pkey": ("processed_events", True, ("(consumer, event_key)",)),
    "idx_processed_events_created_at": ("processed_events", False, ("(created_at)",)),
    "workflow_failure_events_pkey": ("workflow_failure_events", True, ("(job_id)",)),
}

ENUMS = {
    "notification_preference": ["ALERTS", "ALL", "NONE"],
    "workflow_build_status": ["QUEUED", "STARTED", "COMPLETED", "FAILED", "CANCELED"],
    "job_status": ["PENDING", "QUEUED", "RUNNING", "COMPLETED", "FAILED", "CANCELED"],
    "job_trigger": ["AUTOMATIC", "MANUAL"],
    "idempotency_status": ["PROCESSING", "COMPLETED", "FAILED"],
    "outbox_status": ["PENDING", "PROCESSING", "PUBLISHED", "FAILED", "DEAD"],
}


@pytest.fixture
def fresh_db(stack) -> PostgresConfig:  # type: ignore[no-untyped-def]
    return stack.create_database()


@pytest.fixture(scope="module")
def module_db(stack) -> PostgresConfig:  # type: ignore[no-untyped-def]
    cfg: PostgresConfig = stack.create_database()
    return cfg


@pytest.fixture(scope="module")
async def schema_db(module_db: PostgresConfig) -> PostgresConfig:
    """A migrated database of this module's own, for the schema checks that write rows."""
    await migrate(module_db)
    return module_db


@pytest.fixture
async def conn(schema_db: PostgresConfig) -> AsyncIterator[asyncpg.Connection]:
    connection = await connect(schema_db)
    try:
        yield connection
    finally:
        await connection.close()


async def test_fresh_database_gets_every_migration_and_the_second_run_is_a_no_op(
    fresh_db: PostgresConfig,
) -> None:
    assert await applied_migrations(fresh_db) == []
    assert await migrate(fresh_db) == ALL_VERSIONS
    assert await migrate(fresh_db) == []
    assert await applied_migrations(fresh_db) == ALL_VERSIONS


async def test_concurrent_runs_both_succeed_and_apply_each_version_once(fresh_db: PostgresConfig) -> None:
    first, second = await asyncio.gather(migrate(fresh_db), migrate(fresh_db))
    assert sorted(first + second) == ALL_VERSIONS
    assert await applied_migrations(fresh_db) == ALL_VERSIONS


async def test_an_applied_migration_whose_checksum_changed_is_refused(fresh_db: PostgresConfig) -> None:
    await migrate(fresh_db)
    c = await connect(fresh_db)
    try:
        await c.execute(
            "UPDATE schema_migrations SET checksum = 'edited' WHERE version = $1", ALL_VERSIONS[0]
        )
    finally:
        await c.close()
    with pytest.raises(PreconditionFailed) as info:
        await migrate(fresh_db)
    assert info.value.code == "migration_checksum_mismatch"


async def test_every_reference_table_exists(conn: asyncpg.Connection) -> None:
    rows = await conn.fetch("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
    assert {r["table_name"] for r in rows} >= TABLES


async def test_every_reference_index_exists_with_its_columns_and_predicate(conn: asyncpg.Connection) -> None:
    rows = await conn.fetch(
        "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
    )
    found = {r["indexname"]: (r["tablename"], r["indexdef"]) for r in rows}
    missing = sorted(set(INDEXES) - set(found))
    assert missing == []
    for name, (table, unique, fragments) in INDEXES.items():
        got_table, definition = found[name]
        assert got_table == table, name
        assert definition.startswith("CREATE UNIQUE INDEX") == unique, definition
        for fragment in fragments:
            assert fragment in definition, f"{name}: {fragment!r} not in {definition}"


async def test_enum_types_have_the_reference_labels_in_order(conn: asyncpg.Connection) -> None:
    for type_name, labels in ENUMS.items():
        got = await conn.fetch(
            "SELECT e.enumlabel FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid "
            "WHERE t.typname = $1 ORDER BY e.enumsortorder",
            type_name,
        )
        assert [r["enumlabel"] for r in got] == labels


async def _user_and_workflow(conn: asyncpg.Connection, kind: str = "HEARTBEAT") -> tuple[object, object]:
    user_id = await conn.fetchval(
        "INSERT INTO users (id, email, password) VALUES ($1, $2, 'x') RETURNING id", uuid7(), f"{uuid7()}@t"
    )
    workflow_id = await conn.fetchval(
        "INSERT INTO workflows (id, user_id, name, payload, kind, interval) "
        "VALUES ($1, $2, 'w', $3, $4, 1) RETURNING id",
        uuid7(),
        user_id,
        {"endpoint": "http://x"},
        kind,
    )
    return user_id, workflow_id


async def test_every_workflow_kind_is_accepted_and_others_rejected(conn: asyncpg.Connection) -> None:
    for kind in ("HEARTBEAT", "CONTAINER", "RAY"):
        await _user_and_workflow(conn, kind)
    with pytest.raises(asyncpg.CheckViolationError):
        await _user_and_workflow(conn, "CRON")


async def test_jsonb_round_trips_and_defaults_match_the_reference(conn: asyncpg.Connection) -> None:
    _, workflow_id = await _user_and_workflow(conn)
    row = await conn.fetchrow("SELECT * FROM workflows WHERE id = $1", workflow_id)
    assert row["payload"] == {"endpoint": "http://x"}
    assert row["build_status"] == "QUEUED"
    assert row["generation"] == 1
    assert row["log_retention"] is True
    assert row["log_retention_ttl_seconds"] is None
    assert row["consecutive_job_failures_count"] == 0
    assert row["max_consecutive_job_failures_allowed"] == 3


async def test_updated_at_is_set_by_the_trigger_on_update(conn: asyncpg.Connection) -> None:
    _, workflow_id = await _user_and_workflow(conn)
    old = datetime(2000, 1, 1)
    await conn.execute(
        "UPDATE workflows SET created_at = $2, updated_at = $2 WHERE id = $1", workflow_id, old
    )
    updated_at = await conn.fetchval("SELECT updated_at FROM workflows WHERE id = $1", workflow_id)
    assert updated_at > old  # the trigger overrode the value we wrote


async def test_default_ids_are_time_ordered_uuid_v7(conn: asyncpg.Connection) -> None:
    ids = [await conn.fetchval("SELECT chronoverse_uuid7()") for _ in range(5)]
    assert all(u.version == 7 for u in ids)
    user_id = await conn.fetchval("INSERT INTO users (email, password) VALUES ($1, 'x') RETURNING id", "d@t")
    assert user_id.version == 7


async def test_one_automatic_job_per_workflow_slot(conn: asyncpg.Connection) -> None:
    user_id, workflow_id = await _user_and_workflow(conn)
    slot = datetime(2030, 1, 1)
    insert = "INSERT INTO jobs (id, workflow_id, user_id, scheduled_at, trigger) VALUES ($1, $2, $3, $4, $5)"
    await conn.execute(insert, uuid7(), workflow_id, user_id, slot, "AUTOMATIC")
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute(insert, uuid7(), workflow_id, user_id, slot, "AUTOMATIC")
    await conn.execute(insert, uuid7(), workflow_id, user_id, slot, "MANUAL")  # manual runs may share it


async def _running_job(
    conn: asyncpg.Connection, user_id: object, workflow_id: object, at: datetime
) -> object:
    return await conn.fetchval(
        "INSERT INTO jobs (id, workflow_id, user_id, scheduled_at, status) "
        "VALUES ($1, $2, $3, $4, 'RUNNING') RETURNING id",
        uuid7(),
        workflow_id,
        user_id,
        at,
    )


_END = "end-of-test-marker"


async def _notifications(cfg: PostgresConfig, channel: str, action: str, *args: object) -> list[str]:
    """Run ``action`` (autocommit) while another connection LISTENs; return the payloads it caused.

    A marker notification sent after the action's commit ends the wait: PostgreSQL delivers the
    notifications of committed transactions in commit order.
    """
    received: asyncio.Queue[str] = asyncio.Queue()
    listener = await connect(cfg)
    writer = await connect(cfg)
    try:
        await listener.add_listener(channel, lambda *a: received.put_nowait(a[3]))
        await writer.execute(action, *args)
        await writer.execute("SELECT pg_notify($1, $2)", channel, _END)
        out = []
        while (payload := await asyncio.wait_for(received.get(), timeout=10)) != _END:
            out.append(payload)
        return out
    finally:
        await listener.close()
        await writer.close()


def _epoch_ms(ts: datetime) -> str:
    return str((ts - datetime(1970, 1, 1)) // timedelta(milliseconds=1))


async def test_inserting_pending_jobs_notifies_the_scheduler_with_the_earliest_due_time(
    schema_db: PostgresConfig, conn: asyncpg.Connection
) -> None:
    user_id, workflow_id = await _user_and_workflow(conn)
    early, late = datetime(2031, 5, 1, 12, 0, 0, 250_000), datetime(2031, 5, 1, 13)
    got = await _notifications(
        schema_db,
        "chronoverse_jobs",
        "INSERT INTO jobs (id, workflow_id, user_id, scheduled_at, trigger) "
        "VALUES ($1, $3, $4, $5, 'AUTOMATIC'), ($2, $3, $4, $6, 'AUTOMATIC')",
        uuid7(),
        uuid7(),
        workflow_id,
        user_id,
        late,
        early,
    )
    assert got == [_epoch_ms(early)]


async def test_a_job_becoming_pending_again_notifies_with_its_retry_time(
    schema_db: PostgresConfig, conn: asyncpg.Connection
) -> None:
    user_id, workflow_id = await _user_and_workflow(conn)
    job_id = await _running_job(conn, user_id, workflow_id, datetime(2031, 1, 1))
    retry_at = datetime(2031, 1, 1, 0, 1)
    got = await _notifications(
        schema_db,
        "chronoverse_jobs",
        "UPDATE jobs SET status = 'PENDING', next_attempt_at = $2 WHERE id = $1",
        job_id,
        retry_at,
    )
    assert got == [_epoch_ms(retry_at)]


async def test_lease_renewals_do_not_notify_the_scheduler(
    schema_db: PostgresConfig, conn: asyncpg.Connection
) -> None:
    user_id, workflow_id = await _user_and_workflow(conn)
    job_id = await _running_job(conn, user_id, workflow_id, datetime(2031, 1, 1))
    got = await _notifications(
        schema_db, "chronoverse_jobs", "UPDATE jobs SET lease_expires_at = now() WHERE id = $1", job_id
    )
    assert got == []


async def test_a_finished_job_notifies_the_scheduler_to_look_now(
    schema_db: PostgresConfig, conn: asyncpg.Connection
) -> None:
    user_id, workflow_id = await _user_and_workflow(conn)
    job_id = await _running_job(conn, user_id, workflow_id, datetime(2000, 1, 1))
    before = await conn.fetchval("SELECT now() AT TIME ZONE 'utc'")
    got = await _notifications(
        schema_db, "chronoverse_jobs", "UPDATE jobs SET status = 'COMPLETED' WHERE id = $1", job_id
    )
    assert len(got) == 1
    assert int(got[0]) >= int(_epoch_ms(before))


async def test_outbox_inserts_notify_the_relay_once_per_topic(schema_db: PostgresConfig) -> None:
    got = await _notifications(
        schema_db,
        "chronoverse_outbox",
        "INSERT INTO outbox_events (id, topic, kafka_key, event_key, payload) VALUES "
        "($1, 'jobs', 'k', $4, '{}'), ($2, 'jobs', 'k', $5, '{}'), ($3, 'analytics', 'k', $4, '{}')",
        uuid7(),
        uuid7(),
        uuid7(),
        str(uuid7()),
        str(uuid7()),
    )
    assert sorted(got) == ["analytics", "jobs"]
