"""ClickHouse for the local stack.  ``chdb`` is embedded in the one process that owns the log store,
so there is nothing to start: the stack prepares the data directory and exports its path.  With
``CLICKHOUSE_BACKEND=http`` a real server is used instead and only checked."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

from cluster.localstack.base import Component, ComponentRecord, Health, StackContext
from domain.config import ClickHouseConfig, Settings
from domain.enums import StackComponent

_DEFAULT_PATH = ClickHouseConfig.model_fields["chdb_path"].default


def ping_http(cfg: ClickHouseConfig) -> str:
    """``""`` when the first configured server answers ``/ping``, else why not."""
    hosts = cfg.host_list
    if not hosts:
        return "CLICKHOUSE_HOSTS is empty"
    host, port = hosts[0]
    scheme = "https" if cfg.tls_enabled else "http"
    try:
        with urllib.request.urlopen(f"{scheme}://{host}:{port}/ping", timeout=3) as resp:
            return "" if resp.status == 200 else f"HTTP {resp.status}"
    except OSError as err:
        return f"{err.__class__.__name__}: {err}"


class ChdbStore(Component):
    """The chdb data directory (``<state_dir>/clickhouse`` unless CLICKHOUSE_CHDB_PATH says otherwise)."""

    name = StackComponent.CLICKHOUSE

    @classmethod
    def external(cls, ctx: StackContext) -> ComponentRecord | None:
        cfg = ctx.settings.clickhouse
        if cfg.backend != "http":
            return None
        return ComponentRecord(name=cls.name, managed=False, endpoint=f"http://{cfg.hosts}")

    @classmethod
    def start(cls, ctx: StackContext) -> ComponentRecord:
        configured = ctx.settings.clickhouse.chdb_path
        # The default path is relative to the working directory; follow the state dir instead, and make
        # it absolute because Ray workers run elsewhere.
        path = (ctx.state_dir / "clickhouse") if configured == _DEFAULT_PATH else Path(configured)
        path = path.resolve()
        path.mkdir(parents=True, exist_ok=True)
        return ComponentRecord(name=cls.name, managed=True, endpoint=f"chdb:{path}", data={"path": str(path)},
                               env={"CLICKHOUSE_BACKEND": "chdb", "CLICKHOUSE_CHDB_PATH": str(path)})

    @classmethod
    def check(cls, record: ComponentRecord, settings: Settings) -> Health:
        if not record.managed:
            reason = ping_http(settings.clickhouse)
            return Health(not reason, reason)
        path = Path(record.data["path"])
        if not path.is_dir():
            return Health(False, f"{path} is missing")
        if not os.access(path, os.W_OK):
            return Health(False, f"{path} is not writable")
        return Health(True)

    @classmethod
    def stop(cls, record: ComponentRecord) -> None:
        """Nothing runs: the data directory stays for the next ``up``."""
