"""What the benchmarks share: throwaway services for the ones that run on their own
(``bench/dispatch.py``, ``bench/throughput.py --local``) — embedded PostgreSQL, Redis and the tansu
broker started by :mod:`cluster.localstack` (the code behind ``chronoverse up``, not in test mode:
PostgreSQL keeps ``fsync`` on) on free ports in a temp dir, migrated, topics created; a private local
Ray cluster running the backbone; the HTTP target HEARTBEAT jobs probe; and a CPU meter for the
whole process tree.  Everything is stopped on exit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from cluster.clusterfile import load_cluster_spec
from cluster.localstack import LocalStack, free_port
from domain.config import ClickHouseConfig, PostgresConfig, RayConfig, RedisConfig, Settings
from domain.enums import StackComponent
from domain.topology import ClusterSpec
from ingest.topics import ensure_topics
from store.migrate import migrate

REPO_ROOT = Path(__file__).resolve().parents[1]
CLUSTER_FILE = REPO_ROOT / "deploy" / "chronoverse.yaml"


def _progress(line: str) -> None:
    print(f"# {line}", file=sys.stderr, flush=True)


@contextmanager
def throwaway_services(
    components: Iterable[StackComponent], *, base: Settings | None = None
) -> Iterator[tuple[Settings, ClusterSpec]]:
    """Start ``components`` on free ports in a temp dir; yield settings pointing at them (``base``
    for everything else) and the cluster file.  The broker gets the short group-join timeouts of
    the test fixture (tansu makes every join wait ``session_timeout / 2``)."""
    state_dir = Path(tempfile.mkdtemp(prefix="cv-bench-"))
    state_dir.chmod(0o755)  # PostgreSQL runs as an unprivileged user when we are root
    settings = (base or Settings()).model_copy(update={
        "postgres": PostgresConfig(host="127.0.0.1", port=free_port()),
        "redis": RedisConfig(host="127.0.0.1", port=free_port()),
        "kafka": (base or Settings()).kafka.model_copy(update={
            "brokers": f"127.0.0.1:{free_port()}",
            "session_timeout": timedelta(seconds=2),
            "heartbeat_interval": timedelta(milliseconds=300),
        }),
        "clickhouse": ClickHouseConfig(backend="chdb", chdb_path=str(state_dir / "clickhouse")),
    })
    spec = load_cluster_spec(CLUSTER_FILE)
    local = LocalStack(settings, spec, state_dir=state_dir, progress=_progress)
    try:
        local.up(components)
        asyncio.run(_prepare(settings, spec))
        yield settings, spec
    finally:
        local.down()
        shutil.rmtree(state_dir, ignore_errors=True)


async def _prepare(settings: Settings, spec: ClusterSpec) -> None:
    await migrate(settings.postgres)
    await ensure_topics(settings.kafka, spec.topics)


@contextmanager
def local_ray(
    namespace: str, *, num_cpus: int = 8, worker_niceness: int | None = None
) -> Iterator[RayConfig]:
    """A private local Ray cluster (auth disabled, no dashboard, ``low``/``high`` resources as the
    local head advertises them); yields the :class:`RayConfig` to put into the settings.

    ``worker_niceness`` replaces Ray's nice 15 for worker processes: on a machine shared with other
    work, nice-15 actors get a few percent of a core next to any nice-0 process, which measures the
    neighbours, not the pipeline (PostgreSQL, the broker and the driver run at nice 0)."""
    if worker_niceness is not None:
        os.environ["RAY_worker_niceness"] = str(worker_niceness)  # noqa: SIM112 (Ray's own spelling)
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    for var in ("RAY_ADDRESS", "RAY_GCS_SERVER_PORT"):
        os.environ.pop(var, None)
    import ray

    temp_dir = tempfile.mkdtemp(prefix="cvb-", dir="/tmp")  # short: unix socket paths live below it
    ray.init(address="local", num_cpus=num_cpus, resources={"low": 16, "high": 4}, include_dashboard=False,
             namespace=namespace, logging_level=logging.ERROR, _temp_dir=temp_dir)
    try:
        yield RayConfig(namespace=namespace)
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


async def start_pipeline(settings: Settings, spec: ClusterSpec) -> None:
    """The log-store actor and the whole backbone (real execution workers) on the connected cluster."""
    from actors.log_store import start_log_store_actor
    from cluster.backbone import start_backbone

    start_log_store_actor(settings.clickhouse, settings.ray.namespace)
    await start_backbone(settings, spec, execution_stub=False)


def pipeline_settings(settings: Settings, ray_cfg: RayConfig, **sections: Any) -> Settings:
    """``settings`` with the Ray namespace and any replaced sections (e.g. ``execution=...``)."""
    return settings.model_copy(update={"ray": ray_cfg, **sections})


class TreeCpu:
    """CPU time (user + system) of this process and all its descendants — the services, the Ray
    cluster and its workers of a ``--local`` run — grouped by process name (Linux ``/proc``).

    CPU seconds per job do not depend on how busy the rest of a shared machine is, unlike wall-clock
    throughput, so they compare runs fairly; on a quiet machine ``cores / cpu-per-job`` bounds the
    throughput."""

    def __init__(self) -> None:
        self._tick = os.sysconf("SC_CLK_TCK")
        self._start: dict[int, tuple[str, float]] = {}

    @staticmethod
    def _name(pid: int) -> str:
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            return "?"
        if raw.startswith("ray::"):
            return raw.split(".")[0]  # ray::PoolManager.handle → ray::PoolManager
        if raw.startswith("postgres"):
            return "postgres"
        return Path(raw.split()[0]).name if raw else "?"

    def _tree(self) -> dict[int, tuple[str, float]]:
        children: dict[int, list[int]] = {}
        times: dict[int, float] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            pid = int(entry.name)
            children.setdefault(int(fields[1]), []).append(pid)
            times[pid] = (int(fields[11]) + int(fields[12])) / self._tick
        out: dict[int, tuple[str, float]] = {}
        stack = [os.getpid()]
        while stack:
            pid = stack.pop()
            if pid in times:
                out[pid] = (self._name(pid), times[pid])
            stack.extend(children.get(pid, []))
        return out

    def start(self) -> None:
        self._start = self._tree()

    def used(self) -> dict[str, float]:
        """CPU seconds per process name since :meth:`start` (processes started since count whole)."""
        totals: dict[str, float] = {}
        for pid, (name, seconds) in self._tree().items():
            before = self._start.get(pid)
            spent = seconds - (before[1] if before is not None and before[0] == name else 0.0)
            totals[name] = totals.get(name, 0.0) + max(0.0, spent)
        return totals


@dataclass
class Target:
    """The probed endpoint: ``GET /probe/<n>`` answers 200 and counts the hits per ``n``."""

    hits: Counter[str] = field(default_factory=Counter)
    url: str = ""
    runner: web.AppRunner | None = None

    async def start(self, host: str = "127.0.0.1") -> None:
        async def probe(request: web.Request) -> web.Response:
            self.hits[request.match_info["workflow"]] += 1
            return web.Response(status=200)

        app = web.Application()
        app.router.add_get("/probe/{workflow}", probe)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://{host}:{port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
