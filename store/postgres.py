"""asyncpg connections and pools built from :class:`~domain.config.PostgresConfig`.

Every connection made here:

* encodes/decodes ``json`` and ``jsonb`` as Python objects (so a ``jsonb`` column comes back as a
  dict/list, and a dict, list or pydantic model can be passed for a ``jsonb`` parameter; a ``str``
  parameter is stored as a JSON *string*, never re-parsed);
* runs with ``TimeZone=UTC``, matching the ``TIMESTAMP WITHOUT TIME ZONE``-holds-UTC convention;
* carries an ``application_name`` so ``pg_stat_activity`` shows who is connected.

Timestamps come back as naive :class:`datetime.datetime` values in UTC.
"""

from __future__ import annotations

import json
import ssl
import time
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from pydantic_core import to_json

from domain.config import PostgresConfig

#: Anything that can run a query: a pool (acquires per call), a connection, or a pooled proxy.
Queryable = asyncpg.Pool | asyncpg.Connection | PoolConnectionProxy


class _AgedConnection(asyncpg.Connection):  # type: ignore[misc]
    """A pooled connection: remembers when it was opened (to enforce ``max_conn_life``) and is
    released without asyncpg's reset query."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.opened_at = time.monotonic()

    def get_reset_query(self) -> str:
        """Nothing to reset, so no round trip on every release (≈ 1.4 ms of CPU per job in
        ``bench/throughput.py``).  asyncpg's default unlocks session advisory locks, closes
        cursors, ``UNLISTEN *`` and ``RESET ALL``; pooled connections never leave any of those
        behind: advisory locks are ``pg_advisory_xact_lock`` (released at commit), cursors live
        in transactions, ``LISTEN`` uses dedicated connections (:mod:`store.listener`) and
        settings are ``SET LOCAL``.  asyncpg still rolls back a transaction left open."""
        return ""


def encode_json(value: Any) -> str:
    """Serialise a Python value (dicts, lists, pydantic models, UUIDs, datetimes…) to JSON text."""
    return to_json(value).decode()


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, encoder=encode_json, decoder=json.loads, schema="pg_catalog", format="text"
        )


def _ssl_context(cfg: PostgresConfig) -> ssl.SSLContext | None:
    if not cfg.tls_enabled:
        return None
    context = ssl.create_default_context(cafile=cfg.tls_ca_file or None)
    if cfg.tls_cert_file:
        context.load_cert_chain(cfg.tls_cert_file, cfg.tls_key_file or None)
    return context


def _connect_kwargs(cfg: PostgresConfig, application_name: str) -> dict[str, Any]:
    # Keyword arguments rather than a DSN: no escaping problems with passwords, and a host that
    # starts with "/" is a unix-socket directory (the embedded PostgreSQL listens on one).
    return {
        "host": cfg.host,
        "port": cfg.port,
        "user": cfg.user,
        "password": cfg.password.get_secret_value() or None,
        "database": cfg.db,
        "timeout": cfg.dial_timeout.total_seconds(),
        "ssl": _ssl_context(cfg),
        "server_settings": {"application_name": application_name, "TimeZone": "UTC"},
    }


async def connect(cfg: PostgresConfig, *, application_name: str = "chronoverse") -> asyncpg.Connection:
    """Open one connection (migrations, LISTEN, CLI) with the same codecs as the pool's.

    The caller closes it.  ``dial_timeout`` bounds the connect.
    """
    conn = await asyncpg.connect(**_connect_kwargs(cfg, application_name))
    await _init_connection(conn)
    return conn


async def create_pool(
    cfg: PostgresConfig,
    *,
    min_size: int | None = None,
    max_size: int | None = None,
    application_name: str = "chronoverse",
    command_timeout: float | None = None,
) -> asyncpg.Pool:
    """Create an asyncpg pool from the seed's ``POSTGRES_*`` settings.

    * ``max_conns``/``min_conns`` size the pool (``min_size``/``max_size`` override them, e.g. for
      a small actor); the minimum is clipped to the maximum.
    * ``max_conn_idle`` closes connections idle that long (never below the minimum size).
    * ``max_conn_life``: asyncpg has no lifetime limit, so we approximate pgx's: when a connection
      older than the limit is acquired, the pool's connections are expired, i.e. each one is
      closed and replaced on its next release/acquire.  So no connection is *used* after it has
      lived ``max_conn_life`` plus one checkout.
    * ``dial_timeout`` bounds each connect; ``command_timeout`` (default: none) is the default
      statement timeout, since the seed bounds statements per call, not per connection.
    * TLS when ``tls_enabled`` (CA, client certificate and key files from the config).
    """
    maximum = max_size if max_size is not None else cfg.max_conns
    minimum = min(min_size if min_size is not None else cfg.min_conns, maximum)
    max_life = cfg.max_conn_life.total_seconds()
    pool: asyncpg.Pool | None = None

    async def _setup(proxy: PoolConnectionProxy) -> None:
        opened_at = getattr(proxy, "opened_at", None)
        aged = opened_at is not None and time.monotonic() - opened_at > max_life
        if aged and max_life > 0 and pool is not None:
            await pool.expire_connections()

    pool = await asyncpg.create_pool(
        min_size=minimum,
        max_size=maximum,
        max_inactive_connection_lifetime=cfg.max_conn_idle.total_seconds(),
        connection_class=_AgedConnection,
        init=_init_connection,
        setup=_setup,
        command_timeout=command_timeout,
        **_connect_kwargs(cfg, application_name),
    )
    return pool


def rows_affected(command_tag: str) -> int:
    """Row count of an ``execute()`` result such as ``"UPDATE 3"`` or ``"INSERT 0 1"``."""
    return int(command_tag.rsplit(" ", 1)[-1])


def pool_saturation(pool: asyncpg.Pool) -> float:
    """Fraction of the pool's maximum size that is checked out right now (0.0-1.0), for metrics."""
    maximum = pool.get_max_size()
    if maximum <= 0:
        return 0.0
    in_use = pool.get_size() - pool.get_idle_size()
    return max(0, in_use) / maximum
