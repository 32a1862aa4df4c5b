"""The local Ray head: ``ray start --head`` with every port explicit (several Ray defaults collide
with Redis 6379 and ClickHouse 9000), explicit ``RAY_AUTH_MODE`` and a short ``--temp-dir`` (unix
socket paths below it must stay under 107 bytes).

``ray stop`` kills every Ray process on the machine, other clusters included, so we never call it:
``ray start`` runs in its own session and every process of the head inherits that session id, which
is how ``down`` finds and stops exactly this head (raylet first, GCS last, as ``ray stop`` does).

``chronoverse up --elastic`` starts the head on Ray's fake multi-node provider instead (ray-notes §4):
the autoscaler (v1) monitor launches ``low``/``high`` "nodes" — extra raylets on this machine — as
pool workers need them.  The head then advertises no ``low``/``high``, so every pool worker is demand
for a node of its class.  The autoscaler starts those nodes from inside the head's session, so
stopping the session stops them too.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from cluster.localstack.base import Component, ComponentRecord, Health, StackContext, StackError
from cluster.localstack.processes import (
    LOOPBACK,
    cmdline,
    environ,
    free_port,
    is_alive,
    port_free,
    port_open,
    session_members,
    signal_pids,
    spawn,
    tail,
    wait_gone,
)
from domain.config import Settings
from domain.enums import StackComponent

START_TIMEOUT_S = 180.0
STOP_GRACE_S = 10.0
#: ``record.data`` key marking a head started on the fake multi-node provider.
ELASTIC_KEY = "elastic"
#: The effective fake-cluster config written for ``--autoscaling-config``, in the state dir.
FAKE_CLUSTER_CONFIG = "cluster.fake.yaml"


def find_ray_cli() -> Path:
    beside = Path(sys.executable).parent / "ray"
    if beside.is_file():
        return beside
    found = shutil.which("ray")
    if found is None:
        raise StackError(StackComponent.RAY, "the `ray` command is missing: pip install 'ray[serve,default]'")
    return Path(found)


def temp_dir_for(state_dir: Path) -> Path:
    """``/tmp/cv-ray-<hash of the state dir>``: short, and distinct per stack."""
    digest = hashlib.sha1(str(state_dir.resolve()).encode()).hexdigest()[:10]
    return Path(f"/tmp/cv-ray-{digest}")


def uses_haproxy(settings: Settings, *, elastic: bool) -> bool:
    """Whether the head starts Serve's HAProxy ingress (``CHRONOVERSE_RAY_SERVE_INGRESS``).  Never
    on the fake multi-node provider: its nodes share this host, and the HAProxy of every node would
    bind the same stats/metrics/fallback ports (one environment for all of them)."""
    return settings.ray.serve_ingress == "haproxy" and not elastic


def _ports(settings: Settings, *, elastic: bool = False) -> dict[str, int]:
    """Every port the head (and the Serve proxy deployed on it) binds, by its variable name."""
    ray = settings.ray
    haproxy = {
        "CHRONOVERSE_RAY_HAPROXY_STATS_PORT": ray.haproxy_stats_port,
        "CHRONOVERSE_RAY_HAPROXY_METRICS_PORT": ray.haproxy_metrics_port,
        "CHRONOVERSE_RAY_HAPROXY_FALLBACK_HTTP_PORT": ray.haproxy_fallback_http_port,
        "CHRONOVERSE_RAY_HAPROXY_FALLBACK_GRPC_PORT": ray.haproxy_fallback_grpc_port,
    } if uses_haproxy(settings, elastic=elastic) else {}
    return {
        "CHRONOVERSE_RAY_GCS_PORT": ray.gcs_port,
        "CHRONOVERSE_RAY_DASHBOARD_PORT": ray.dashboard_port,
        "CHRONOVERSE_RAY_CLIENT_SERVER_PORT": ray.client_server_port,
        "CHRONOVERSE_RAY_METRICS_EXPORT_PORT": ray.metrics_export_port,
        "CHRONOVERSE_RAY_DASHBOARD_AGENT_LISTEN_PORT": ray.dashboard_agent_listen_port,
        "CHRONOVERSE_RAY_DASHBOARD_AGENT_GRPC_PORT": ray.dashboard_agent_grpc_port,
        "CHRONOVERSE_RAY_RUNTIME_ENV_AGENT_PORT": ray.runtime_env_agent_port,
        "CHRONOVERSE_RAY_NODE_MANAGER_PORT": ray.node_manager_port,
        "CHRONOVERSE_RAY_OBJECT_MANAGER_PORT": ray.object_manager_port,
        "SERVER_PORT": settings.server.port,
        "GRPC_PORT": settings.grpc.port,
        **haproxy,
    }


def serve_ingress_env(settings: Settings, temp_dir: Path, *, elastic: bool) -> dict[str, str]:
    """The Serve ingress part of the head's environment: the HAProxy ingress's variables (files
    under ``temp_dir``, so they go with the head) when :func:`uses_haproxy`, else nothing."""
    if not uses_haproxy(settings, elastic=elastic):
        return {}
    from serve_apps.app import haproxy_ingress_env  # Ray Serve and FastAPI: only when needed

    ray = settings.ray
    return haproxy_ingress_env(
        work_dir=str(temp_dir / "hap"),  # short: HAProxy's socket path limit (haproxy_ingress_env)
        stats_port=ray.haproxy_stats_port,
        metrics_port=ray.haproxy_metrics_port,
        fallback_http_port=ray.haproxy_fallback_http_port,
        fallback_grpc_port=ray.haproxy_fallback_grpc_port,
        throughput_optimized=ray.serve_throughput_optimized,
    )


def _without_serve_ingress(env: dict[str, str]) -> dict[str, str]:
    # A parent's ingress settings (a test process running its own HAProxy cluster) must not leak
    # into this head: the settings alone decide.
    inherited = ("RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_THROUGHPUT_OPTIMIZED", "RAY_SERVE_HAPROXY_",
                 "RAY_SERVE_FALLBACK_PROXY_")
    return {var: value for var, value in env.items() if not var.startswith(inherited)}


def _is_ray_process(pid: int) -> bool:
    # Guards against a recycled session id: every process of a head mentions ray in its command line.
    return any("ray" in part for part in cmdline(pid)[:3])


def head_processes(sid: int) -> list[int]:
    return [pid for pid in session_members(sid) if _is_ray_process(pid)]


def _named(pids: list[int], suffix: str) -> list[int]:
    return [pid for pid in pids if (cmdline(pid) or [""])[0].endswith(suffix)]


def is_elastic(record: ComponentRecord) -> bool:
    """Whether the recorded head runs the fake multi-node autoscaler (``up --elastic``)."""
    return record.data.get(ELASTIC_KEY) == "true"


def worker_nodes(sid: int) -> dict[str, int]:
    """Fake worker nodes of the head in session ``sid`` by node type (the autoscaler starts each
    node's raylet with ``RAY_NODE_TYPE_NAME`` in its environment; the head's raylet has none)."""
    counts: dict[str, int] = {}
    for pid in _named(head_processes(sid), "/raylet"):
        node_type = environ(pid).get("RAY_NODE_TYPE_NAME")
        if node_type:
            counts[node_type] = counts.get(node_type, 0) + 1
    return dict(sorted(counts.items()))


def _elastic_detail(sid: int) -> str:
    nodes = worker_nodes(sid)
    shown = ", ".join(f"{node_type}={count}" for node_type, count in nodes.items()) or "none yet"
    return f"elastic (fake multi-node); worker nodes: {shown}"


def stop_head(sid: int) -> list[int]:
    """Stop every process of the head started in session ``sid``; return any that survived."""
    pids = head_processes(sid)
    if not pids:
        return []
    raylets, gcs = _named(pids, "/raylet"), _named(pids, "/gcs_server")
    others = [p for p in pids if p not in raylets and p not in gcs]
    # The order of `ray stop`: raylet first (agents fate-share with it), GCS last — the autoscaler
    # monitor reports its own termination to the GCS and hangs if the GCS is already gone.
    for bucket in (raylets, others, gcs):
        signal_pids(bucket, signal.SIGTERM)
        wait_gone(bucket, STOP_GRACE_S / 2)
    survivors = [p for p in pids if is_alive(p)]
    # Dashboard/runtime-env agents can ignore SIGTERM once the raylet is gone (ray-notes §8.16).
    signal_pids(survivors + head_processes(sid), signal.SIGKILL)
    return wait_gone(survivors + head_processes(sid), 5.0)


class RayHead(Component):
    """A single-node Ray head advertising the cluster file's ``local`` resources."""

    name = StackComponent.RAY

    @classmethod
    def external(cls, ctx: StackContext) -> ComponentRecord | None:
        address = ctx.settings.ray.address
        if not address:
            return None
        return ComponentRecord(name=cls.name, managed=False, endpoint=address)

    @classmethod
    def start(cls, ctx: StackContext) -> ComponentRecord:
        settings, local = ctx.settings, ctx.spec.local
        ray = settings.ray
        log = ctx.log_path(cls.name)
        ports = _ports(settings, elastic=ctx.elastic)
        busy = [f"{port} ({var})" for var, port in ports.items() if not port_free(port, "0.0.0.0")]
        if busy:
            raise StackError(cls.name, f"port(s) already in use: {', '.join(busy)}; set those variables to "
                             "free ports")
        temp_dir = temp_dir_for(ctx.state_dir)
        # Sessions of a previous head of this stack (kept after a failed start, for its logs).
        shutil.rmtree(temp_dir, ignore_errors=True)
        argv = [
            str(find_ray_cli()), "start", "--head",
            f"--port={ray.gcs_port}",
            "--include-dashboard=true",
            f"--dashboard-host={ray.dashboard_host}",
            f"--dashboard-port={ray.dashboard_port}",
            f"--ray-client-server-port={ray.client_server_port}",
            f"--metrics-export-port={ray.metrics_export_port}",
            f"--dashboard-agent-listen-port={ray.dashboard_agent_listen_port}",
            f"--dashboard-agent-grpc-port={ray.dashboard_agent_grpc_port}",
            f"--runtime-env-agent-port={ray.runtime_env_agent_port}",
            f"--node-manager-port={ray.node_manager_port}",
            f"--object-manager-port={ray.object_manager_port}",
            f"--min-worker-port={ray.min_worker_port}",
            f"--max-worker-port={ray.max_worker_port}",
            f"--temp-dir={temp_dir}",
            # ray start takes whole CPUs; logical CPUs are bookkeeping, so round up.
            f"--num-cpus={math.ceil(local.num_cpus)}",
            "--disable-usage-stats",
            "--log-style=record", "--log-color=false",
        ]
        env = {**_without_serve_ingress(ctx.child_env), "RAY_AUTH_MODE": ray.auth_mode,
               "RAY_USAGE_STATS_ENABLED": "0", **serve_ingress_env(settings, temp_dir, elastic=ctx.elastic)}
        env.pop("RAY_ADDRESS", None)
        data: dict[str, str] = {}
        if ctx.elastic:
            argv, elastic_env, data = cls._elastic(ctx, argv)
            env.update(elastic_env)
        else:
            argv.append(f"--resources={json.dumps(local.resources)}")
        proc = spawn(argv, log=log, env=env)
        sid = proc.pid
        code: int | None = None
        waited = 0.0
        while waited < START_TIMEOUT_S:
            try:
                code = proc.wait(timeout=5.0)
                break
            except subprocess.TimeoutExpired:
                waited += 5.0
                ctx.progress(f"ray: waiting for the head ({waited:.0f}s; GCS, raylet, dashboard)")
        if code != 0:
            leftovers = stop_head(sid)
            why = (f"`ray start` exited with {code}: {tail(log, 3)}" if code is not None
                   else f"`ray start` did not finish within {START_TIMEOUT_S:.0f}s")
            if leftovers:
                why += f"; processes left running: {leftovers}"
            raise StackError(cls.name, why, log)
        members = head_processes(sid)
        gcs = _named(members, "/gcs_server")
        logs_link = ctx.logs_dir / "ray"
        if logs_link.is_symlink() or logs_link.exists():
            logs_link.unlink()
        logs_link.symlink_to(temp_dir / "session_latest" / "logs")
        address = f"{LOOPBACK}:{ray.gcs_port}"
        return ComponentRecord(
            name=cls.name, managed=True, pid=gcs[0] if gcs else None, port=ray.gcs_port, log=str(log),
            endpoint=address,
            data={"sid": str(sid), "temp_dir": str(temp_dir), "session_logs": str(logs_link),
                  "dashboard_url": f"http://{ray.dashboard_host}:{ray.dashboard_port}", **data},
            env={"CHRONOVERSE_RAY_ADDRESS": address, "CHRONOVERSE_RAY_AUTH_MODE": ray.auth_mode,
                 **{var: str(port) for var, port in ports.items()}},
        )

    @classmethod
    def _elastic(cls, ctx: StackContext, argv: list[str]) -> tuple[list[str], dict[str, str], dict[str, str]]:
        """``argv``, extra environment and record data of a head on the fake multi-node provider."""
        from cluster.fake_nodes import fake_head_env, write_fake_cluster_config

        ray = ctx.settings.ray
        config = write_fake_cluster_config(ray.gcs_port, ctx.state_dir / FAKE_CLUSTER_CONFIG)
        # The autoscaler's and dashboard's metrics default to fixed ports (44217/44227) that a second
        # cluster on the machine (a test run beside a developer's stack) would share.
        metric_ports = {"autoscaler_metric_port": free_port(), "dashboard_metric_port": free_port()}
        env = fake_head_env(ray, **metric_ports)
        # Autoscaler v1: v2 needs fake_multi_node/example.yaml, which the 2.60 wheel lacks (ray-notes §4.4).
        env["RAY_enable_autoscaler_v2"] = "0"
        # No low/high on the head: every pool worker becomes demand for a node of its class.
        argv = [*argv, f"--autoscaling-config={config}", f"--resources={json.dumps({})}"]
        data = {ELASTIC_KEY: "true", "autoscaling_config": str(config),
                **{key: str(port) for key, port in metric_ports.items()}}
        return argv, env, data

    @classmethod
    def check(cls, record: ComponentRecord, settings: Settings) -> Health:
        if not record.managed:
            host, _, port = record.endpoint.removeprefix("ray://").rpartition(":")
            if not port.isdigit():
                return Health(True, "address not checked")
            ok = port_open(host or LOOPBACK, int(port), timeout=2)
            return Health(ok, "" if ok else f"nothing answers at {record.endpoint}")
        pids = head_processes(int(record.data["sid"]))
        missing = [name for name in ("/gcs_server", "/raylet") if not _named(pids, name)]
        if missing:
            return Health(False, f"{', '.join(m.lstrip('/') for m in missing)} not running")
        if not port_open(LOOPBACK, record.port or settings.ray.gcs_port, timeout=2):
            return Health(False, f"GCS port {record.port} does not answer")
        return Health(True, _elastic_detail(int(record.data["sid"])) if is_elastic(record) else "")

    @classmethod
    def stop(cls, record: ComponentRecord) -> None:
        if not record.managed:
            return
        survivors = stop_head(int(record.data["sid"]))
        if survivors:
            raise StackError(cls.name, f"processes did not exit: {survivors}", record.log)
        temp_dir = Path(record.data.get("temp_dir", ""))
        if temp_dir.is_absolute() and temp_dir.name.startswith("cv-ray-"):
            shutil.rmtree(temp_dir, ignore_errors=True)
        link = Path(record.data.get("session_logs", ""))
        if link.is_symlink():
            link.unlink()

    @classmethod
    def recorded_pids(cls, record: ComponentRecord) -> list[int]:
        return head_processes(int(record.data["sid"])) if record.managed else []

