"""The local *fake multi-node* Ray cluster (``chronoverse up --elastic``, the elastic e2e test and
``bench/scale.py``).

Ray's ``fake_multinode`` provider starts every "node" as an extra raylet on this machine, which is
what lets the real Ray autoscaler launch and remove nodes of our ``low``/``high`` types on one box
(ray-notes §4).  Three things here:

* :class:`FakeNodeProvider` — the stock provider plus node types that declare ``memory``.  Our pool
  actors reserve memory (the seed's resource classes), so a node type must declare ``memory`` or
  the autoscaler finds no type that fits and launches nothing; the stock provider, though, hands
  every declared resource to ``RayParams(resources=...)``, which refuses ``memory`` as a custom
  resource, and the launch crashes.  We keep the declared memory for the autoscaler's bin-packing
  and drop it when starting the raylet, which then detects its own (logical memory is bookkeeping,
  ray-notes §8.14).  ``deploy/cluster.fake.yaml`` selects it with
  ``provider: {type: external, module: cluster.fake_nodes.FakeNodeProvider}``; the autoscaler
  monitor imports it from the installed package, so this module's top level stays light.
* :func:`write_fake_cluster_config` — a copy of ``deploy/cluster.fake.yaml`` whose
  ``provider.gcs_address`` names the head's real GCS port (the provider's default is
  ``<ip>:6379``: Redis here).
* :class:`FakeCluster` — starts and stops such a head on explicit ports in its own session and a
  short temp dir, so it never touches another Ray cluster on the machine (no ``ray stop``).
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider

from domain.config import RayConfig

#: The fake cluster file shipped with the project.
FAKE_CLUSTER_FILE = Path(__file__).resolve().parents[1] / "deploy" / "cluster.fake.yaml"
#: Resources the autoscaler must see on a node type but a raylet must not get as custom ones.
_PLANNING_ONLY = ("memory",)
LOOPBACK = "127.0.0.1"
#: Tries of ``ray start --head`` before giving up.
START_ATTEMPTS = 2


class FakeNodeProvider(FakeMultiNodeProvider):  # type: ignore[misc]
    """``fake_multinode`` with node types that may declare ``memory`` (needs ``RAY_FAKE_CLUSTER=1``)."""

    def _create_node_with_resources_and_labels(
        self,
        node_config: dict[str, Any],
        tags: dict[str, str],
        count: int,
        resources: dict[str, float],
        labels: dict[str, str],
    ) -> None:
        started_with = {key: value for key, value in resources.items() if key not in _PLANNING_ONLY}
        super()._create_node_with_resources_and_labels(node_config, tags, count, started_with, labels)


def render_fake_cluster_config(gcs_port: int, template: Path = FAKE_CLUSTER_FILE,
                               **overrides: Any) -> dict[str, Any]:
    """The fake cluster config with ``provider.gcs_address`` = ``127.0.0.1:<gcs_port>``; top-level
    ``overrides`` (e.g. ``idle_timeout_minutes``) replace keys of the file."""
    config: dict[str, Any] = yaml.safe_load(template.read_text())
    config["provider"]["gcs_address"] = f"{LOOPBACK}:{gcs_port}"
    config.update(overrides)
    return config


def write_fake_cluster_config(gcs_port: int, out: Path, template: Path = FAKE_CLUSTER_FILE,
                              **overrides: Any) -> Path:
    """Write :func:`render_fake_cluster_config` to ``out`` (for ``ray start --autoscaling-config``)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(render_fake_cluster_config(gcs_port, template, **overrides),
                                  sort_keys=False))
    return out


def fake_head_env(ray: RayConfig, *, autoscaler_metric_port: int,
                  dashboard_metric_port: int) -> dict[str, str]:
    """Environment of the head's ``ray start`` on a fake cluster (on top of the caller's)."""
    return {
        "RAY_FAKE_CLUSTER": "1",  # required by the fake provider
        "AUTOSCALER_UPDATE_INTERVAL_S": "1",  # the autoscaler loop period (default 5 s)
        # Both default to fixed ports (44217 / 44227) that a second cluster on the box would share.
        "AUTOSCALER_METRIC_PORT": str(autoscaler_metric_port),
        "DASHBOARD_METRIC_PORT": str(dashboard_metric_port),
        "RAY_AUTH_MODE": ray.auth_mode,
        "RAY_USAGE_STATS_ENABLED": "0",
    }


@dataclass
class FakeCluster:
    """A running fake multi-node head (and the worker nodes its autoscaler started), all in one
    process session ``sid``; :meth:`stop` ends exactly those processes."""

    address: str
    sid: int
    temp_dir: Path
    config: Path
    log: Path

    @classmethod
    def start(
        cls,
        ray: RayConfig,
        *,
        work_dir: Path,
        head_cpus: float = 8,
        autoscaler_metric_port: int,
        dashboard_metric_port: int,
        template: Path = FAKE_CLUSTER_FILE,
        timeout_s: float = 120.0,
        **overrides: Any,
    ) -> FakeCluster:
        """``ray start --head`` with ``--autoscaling-config`` on the ports of ``ray``; the head
        advertises ``head_cpus`` logical CPUs and no ``low``/``high``.  Raises ``RuntimeError``."""
        import os
        import shutil
        import subprocess

        from cluster.localstack.processes import spawn, tail
        from cluster.localstack.ray_head import find_ray_cli, stop_head

        config = write_fake_cluster_config(ray.gcs_port, work_dir / "cluster.fake.yaml", template,
                                           **overrides)
        env = {**os.environ, **fake_head_env(ray, autoscaler_metric_port=autoscaler_metric_port,
                                             dashboard_metric_port=dashboard_metric_port)}
        env.pop("RAY_ADDRESS", None)
        log = work_dir / "fake-head.log"
        why = ""
        # On a crowded machine the head can miss Ray's own start-up deadline ("The current node
        # timed out during startup"); a second attempt on a fresh temp dir usually makes it.
        for _attempt in range(START_ATTEMPTS):
            # Unix socket paths below the temp dir must stay under 107 bytes: keep it short.
            temp_dir = Path(tempfile.mkdtemp(prefix="cvf-", dir="/tmp"))
            argv = [
                str(find_ray_cli()), "start", "--head",
                f"--port={ray.gcs_port}",
                f"--autoscaling-config={config}",
                "--include-dashboard=false",
                f"--ray-client-server-port={ray.client_server_port}",
                f"--metrics-export-port={ray.metrics_export_port}",
                f"--dashboard-agent-listen-port={ray.dashboard_agent_listen_port}",
                f"--dashboard-agent-grpc-port={ray.dashboard_agent_grpc_port}",
                f"--runtime-env-agent-port={ray.runtime_env_agent_port}",
                f"--temp-dir={temp_dir}",
                f"--num-cpus={math.ceil(head_cpus)}",
                f"--resources={json.dumps({})}",
                "--disable-usage-stats",
                "--log-style=record", "--log-color=false",
            ]
            proc = spawn(argv, log=log, env=env)
            try:
                code: int | None = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                code = None
            if code == 0:
                return cls(address=f"{LOOPBACK}:{ray.gcs_port}", sid=proc.pid, temp_dir=temp_dir,
                           config=config, log=log)
            stop_head(proc.pid)
            shutil.rmtree(temp_dir, ignore_errors=True)
            why = f"exit {code}: {tail(log, 3)}"
        raise RuntimeError(f"fake cluster head did not start ({why}) (log: {log})")

    @property
    def monitor_log(self) -> Path:
        """The autoscaler's log (launches, terminations, infeasible demand)."""
        return self.temp_dir / "session_latest" / "logs" / "monitor.log"

    def stop(self, keep_logs_in: Path | None = None) -> list[int]:
        """Stop the head and every fake node it launched; return the pids that survived.  The
        session's logs (autoscaler, raylets, workers) are copied to ``keep_logs_in`` first if given."""
        import shutil

        from cluster.localstack.ray_head import stop_head

        survivors = stop_head(self.sid)
        logs = self.temp_dir / "session_latest" / "logs"
        if keep_logs_in is not None and logs.is_dir():
            shutil.copytree(logs, keep_logs_in, dirs_exist_ok=True, ignore_dangling_symlinks=True)
        if not survivors:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
        return survivors
