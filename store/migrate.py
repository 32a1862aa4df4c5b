"""Numbered SQL migrations (``store/migrations/NNNN_name.sql``), applied once and in order.

Each migration runs in its own transaction together with its ``schema_migrations`` row, so a
failed migration leaves nothing behind.  A session-level advisory lock serialises concurrent
runners (several ``chronoverse migrate``/``up`` at once): the second waits, then finds nothing to do.
An applied migration whose file has changed since is refused rather than silently skipped.
"""

from __future__ import annotations

import hashlib
import re
from importlib import resources

import asyncpg
from pydantic import BaseModel, ConfigDict

from domain.config import PostgresConfig
from domain.errors import PreconditionFailed
from store.postgres import connect

#: Arbitrary constant key of the session-level advisory lock held while migrating.
MIGRATION_LOCK_KEY = 0x0C4_0A0E_75E0
_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")

CREATE_SCHEMA_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    TEXT PRIMARY KEY,
    checksum   TEXT NOT NULL,
    applied_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc')
)
"""
SELECT_APPLIED = "SELECT version, checksum FROM schema_migrations ORDER BY version"
INSERT_APPLIED = "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)"
SCHEMA_MIGRATIONS_EXISTS = "SELECT to_regclass('schema_migrations') IS NOT NULL"


class Migration(BaseModel):
    """One migration file: ``version`` is its four-digit prefix, ``checksum`` the sha256 of its text."""

    model_config = ConfigDict(frozen=True)

    version: str
    name: str
    sql: str
    checksum: str


def load_migrations() -> list[Migration]:
    """Read the migration files shipped as package data, ordered by version."""
    found: list[Migration] = []
    for entry in resources.files("store").joinpath("migrations").iterdir():
        match = _FILE_NAME.match(entry.name)
        if match is None:
            continue
        text = entry.read_text(encoding="utf-8")
        found.append(
            Migration(
                version=match["version"],
                name=match["name"],
                sql=text,
                checksum=hashlib.sha256(text.encode()).hexdigest(),
            )
        )
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise PreconditionFailed(f"duplicate migration versions in store/migrations: {versions}")
    return found


async def apply_migrations(conn: asyncpg.Connection) -> list[str]:
    """Apply the pending migrations on ``conn``; return the versions applied (``[]`` if none).

    Raises :class:`~domain.errors.PreconditionFailed` if an applied migration's file changed.
    """
    migrations = load_migrations()
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(CREATE_SCHEMA_MIGRATIONS)
        applied = {r["version"]: r["checksum"] for r in await conn.fetch(SELECT_APPLIED)}
        for migration in migrations:
            recorded = applied.get(migration.version)
            if recorded is not None and recorded != migration.checksum:
                raise PreconditionFailed(
                    f"migration {migration.version}_{migration.name}.sql was changed after it was "
                    f"applied (checksum {recorded[:12]}… in the database, {migration.checksum[:12]}… "
                    "on disk); add a new migration instead of editing an applied one",
                    code="migration_checksum_mismatch",
                )
        done: list[str] = []
        for migration in migrations:
            if migration.version in applied:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(INSERT_APPLIED, migration.version, migration.checksum)
            done.append(migration.version)
        return done
    finally:
        # A broken connection has already dropped the session lock with the session.
        if not conn.is_closed():
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)


async def migrate(cfg: PostgresConfig) -> list[str]:
    """Connect, apply the pending migrations, and return the versions applied (``[]`` the 2nd time)."""
    conn = await connect(cfg, application_name="chronoverse-migrate")
    try:
        return await apply_migrations(conn)
    finally:
        await conn.close()


async def applied_migrations(cfg: PostgresConfig) -> list[str]:
    """Versions recorded in ``schema_migrations`` (``[]`` on a database never migrated)."""
    conn = await connect(cfg, application_name="chronoverse-migrate")
    try:
        if not await conn.fetchval(SCHEMA_MIGRATIONS_EXISTS):
            return []
        return [r["version"] for r in await conn.fetch(SELECT_APPLIED)]
    finally:
        await conn.close()
