"""Running the ``chronoverse`` command as a user does, for the stack CLI tests
(``test_stack_cli.py``, ``test_stack_elastic.py``): a temp dir as the working directory, every port a
free one, and helpers to find every process the stack started (by pid and Ray session) and to read
``chronoverse status`` tables."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from listen_ports import listen_port

from cluster.localstack.processes import all_pids, cmdline, descendants, is_alive, session_members
from cluster.localstack.ray_head import temp_dir_for

REPO_ROOT = Path(__file__).resolve().parents[2]
PORT_VARS = (
    "POSTGRES_PORT", "REDIS_PORT", "SERVER_PORT", "GRPC_PORT",
    "CHRONOVERSE_RAY_GCS_PORT", "CHRONOVERSE_RAY_DASHBOARD_PORT", "CHRONOVERSE_RAY_CLIENT_SERVER_PORT",
    "CHRONOVERSE_RAY_METRICS_EXPORT_PORT", "CHRONOVERSE_RAY_DASHBOARD_AGENT_LISTEN_PORT",
    "CHRONOVERSE_RAY_DASHBOARD_AGENT_GRPC_PORT", "CHRONOVERSE_RAY_RUNTIME_ENV_AGENT_PORT",
    "CHRONOVERSE_RAY_NODE_MANAGER_PORT", "CHRONOVERSE_RAY_OBJECT_MANAGER_PORT",
    "CHRONOVERSE_RAY_HAPROXY_STATS_PORT", "CHRONOVERSE_RAY_HAPROXY_METRICS_PORT",
    "CHRONOVERSE_RAY_HAPROXY_FALLBACK_HTTP_PORT", "CHRONOVERSE_RAY_HAPROXY_FALLBACK_GRPC_PORT",
)


def _cli() -> list[str]:
    script = Path(sys.executable).parent / "chronoverse"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cluster.cli"]


@dataclass
class Workspace:
    """A working directory with its own environment; :meth:`run` runs ``chronoverse`` in it."""

    root: Path
    env: dict[str, str]

    @property
    def state_dir(self) -> Path:
        return self.root / ".chronoverse"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "stack.json"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.env['SERVER_PORT']}"

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.env['CHRONOVERSE_RAY_GCS_PORT']}"

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*_cli(), *args], cwd=self.root, env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)

    def recorded_pids(self) -> dict[str, list[int]]:
        """Every live process of every component recorded in stack.json (the Ray head by session,
        which includes the fake worker nodes its autoscaler started)."""
        state = json.loads(self.state_file.read_text())
        out: dict[str, list[int]] = {}
        for name, record in state["components"].items():
            if not record["managed"] or not record.get("pid"):
                continue
            if "sid" in record["data"]:
                out[name] = session_members(int(record["data"]["sid"]))
            else:
                out[name] = [record["pid"], *descendants(record["pid"])]
        return out

    def leftovers(self) -> list[str]:
        """Live processes that mention this workspace or its Ray temp dir."""
        return processes_mentioning(str(self.root), str(temp_dir_for(self.state_dir)))


@contextmanager
def open_workspace(worker_ports: tuple[int, int]) -> Iterator[Workspace]:
    """A fresh workspace on free ports; ``chronoverse down`` runs at the end if a stack is left.

    ``worker_ports`` is the Ray worker port range: away from the default one a developer's own
    ``chronoverse up`` uses, and distinct per test module so two of them can run at once."""
    root = Path(tempfile.mkdtemp(prefix="cv-e2e-"))
    root.chmod(0o755)  # PostgreSQL runs unprivileged and must reach <root>/.chronoverse
    env = dict(os.environ)  # without any configuration of the developer's shell (clean_env)
    # `up` binds these seconds to minutes later: ports below the ephemeral range, which no outgoing
    # connection or port-0 bind of a busy machine takes meanwhile (tests/listen_ports.py).
    env.update({var: str(listen_port()) for var in PORT_VARS})
    env["KAFKA_BROKERS"] = f"127.0.0.1:{listen_port()}"
    env["CHRONOVERSE_RAY_MIN_WORKER_PORT"], env["CHRONOVERSE_RAY_MAX_WORKER_PORT"] = map(str, worker_ports)
    env["CHRONOVERSE_CLUSTER_FILE"] = str(REPO_ROOT / "deploy" / "chronoverse.yaml")
    ws = Workspace(root, env)
    try:
        yield ws
    finally:
        if ws.state_file.exists():  # a failed assertion must not leak a running stack
            ws.run("down")
        shutil.rmtree(root, ignore_errors=True)


def processes_mentioning(*needles: str) -> list[str]:
    found = []
    for pid in all_pids():
        if pid == os.getpid() or not is_alive(pid):
            continue
        line = " ".join(cmdline(pid))
        if any(needle in line for needle in needles):
            found.append(f"{pid}: {line[:160]}")
    return found


def status_rows(output: str) -> dict[str, list[str]]:
    """``chronoverse status`` output as first cell → the row's cells (every table: components,
    Serve deployments, pools, consumers)."""
    rows = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            rows[parts[0]] = parts
    return rows


def wait_for_healthz(base_url: str, timeout: float = 60.0) -> httpx.Response:
    """``GET /healthz`` until it answers 200 (the proxy may lag the app's RUNNING by a moment)."""
    deadline = time.monotonic() + timeout
    last: httpx.Response | Exception | None = None
    with httpx.Client(base_url=base_url, timeout=5) as client:
        while time.monotonic() < deadline:
            try:
                last = client.get("/healthz")
                if last.status_code == 200:
                    return last
            except httpx.TransportError as err:
                last = err
            time.sleep(0.5)
    raise AssertionError(f"{base_url}/healthz did not answer 200 within {timeout:.0f}s: {last!r}")
