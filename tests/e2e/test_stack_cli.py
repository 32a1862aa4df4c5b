"""``chronoverse up`` → ``status`` → ``down`` as a user runs them: a subprocess in a temp dir, every
port a free one, and afterwards not one process left behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cluster.localstack import free_port
from cluster.localstack.processes import all_pids, cmdline, descendants, is_alive, session_members
from cluster.localstack.ray_head import temp_dir_for

REPO_ROOT = Path(__file__).resolve().parents[2]
PORT_VARS = (
    "POSTGRES_PORT", "REDIS_PORT", "SERVER_PORT", "GRPC_PORT",
    "CHRONOVERSE_RAY_GCS_PORT", "CHRONOVERSE_RAY_DASHBOARD_PORT", "CHRONOVERSE_RAY_CLIENT_SERVER_PORT",
    "CHRONOVERSE_RAY_METRICS_EXPORT_PORT", "CHRONOVERSE_RAY_DASHBOARD_AGENT_LISTEN_PORT",
    "CHRONOVERSE_RAY_DASHBOARD_AGENT_GRPC_PORT", "CHRONOVERSE_RAY_RUNTIME_ENV_AGENT_PORT",
    "CHRONOVERSE_RAY_NODE_MANAGER_PORT", "CHRONOVERSE_RAY_OBJECT_MANAGER_PORT",
)

pytestmark = pytest.mark.slow


def _cli() -> list[str]:
    script = Path(sys.executable).parent / "chronoverse"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cluster.cli"]


@dataclass
class Workspace:
    root: Path
    env: dict[str, str]

    @property
    def state_file(self) -> Path:
        return self.root / ".chronoverse" / "stack.json"

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*_cli(), *args], cwd=self.root, env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)


@pytest.fixture
def workspace(clean_env: pytest.MonkeyPatch) -> Iterator[Workspace]:
    root = Path(tempfile.mkdtemp(prefix="cv-e2e-"))
    root.chmod(0o755)  # PostgreSQL runs unprivileged and must reach <root>/.chronoverse
    env = dict(os.environ)  # without any configuration of the developer's shell (clean_env)
    env.update({var: str(free_port()) for var in PORT_VARS})
    env["KAFKA_BROKERS"] = f"127.0.0.1:{free_port()}"
    # A worker port range away from the default one a developer's own `chronoverse up` uses.
    env["CHRONOVERSE_RAY_MIN_WORKER_PORT"], env["CHRONOVERSE_RAY_MAX_WORKER_PORT"] = "29300", "29999"
    env["CHRONOVERSE_CLUSTER_FILE"] = str(REPO_ROOT / "deploy" / "chronoverse.yaml")
    ws = Workspace(root, env)
    try:
        yield ws
    finally:
        if ws.state_file.exists():  # a failed assertion must not leak a running stack
            ws.run("down")
        shutil.rmtree(root, ignore_errors=True)


def _recorded_pids(state_file: Path) -> dict[str, list[int]]:
    """Every live process of every component recorded in stack.json."""
    state = json.loads(state_file.read_text())
    out: dict[str, list[int]] = {}
    for name, record in state["components"].items():
        if not record["managed"] or not record.get("pid"):
            continue
        if "sid" in record["data"]:
            out[name] = session_members(int(record["data"]["sid"]))
        else:
            out[name] = [record["pid"], *descendants(record["pid"])]
    return out


def _processes_mentioning(*needles: str) -> list[str]:
    found = []
    for pid in all_pids():
        if pid == os.getpid() or not is_alive(pid):
            continue
        line = " ".join(cmdline(pid))
        if any(needle in line for needle in needles):
            found.append(f"{pid}: {line[:160]}")
    return found


def _status_rows(output: str) -> dict[str, str]:
    rows = {}
    for line in output.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2:
            rows[parts[0]] = parts[1]
    return rows


def test_up_status_down_leaves_no_process_behind(workspace: Workspace) -> None:
    up = workspace.run("up")
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"API:        http://127.0.0.1:{workspace.env['SERVER_PORT']}" in up.stdout
    assert f"http://127.0.0.1:{workspace.env['CHRONOVERSE_RAY_DASHBOARD_PORT']}" in up.stdout

    status = workspace.run("status")
    assert status.returncode == 0, status.stdout + status.stderr
    rows = _status_rows(status.stdout)
    assert {rows[name] for name in ("postgres", "redis", "kafka", "ray")} == {"running"}
    assert rows["clickhouse"] == "embedded"
    assert rows["docker"] in ("running", "external", "unavailable")

    pids = _recorded_pids(workspace.state_file)
    assert set(pids) >= {"postgres", "redis", "kafka", "ray"}
    assert len(pids["ray"]) > 3  # gcs_server, raylet, dashboard, agents …
    everything = [pid for group in pids.values() for pid in group]

    down = workspace.run("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert [pid for pid in everything if is_alive(pid)] == []
    ray_temp = temp_dir_for(workspace.root / ".chronoverse")
    assert _processes_mentioning(str(workspace.root), str(ray_temp)) == []
    assert not workspace.state_file.exists()

    after = workspace.run("status")
    assert after.returncode != 0
    assert _status_rows(after.stdout)["postgres"] == "down"


def test_second_up_reports_running_parts_and_restarts_a_dead_one(workspace: Workspace) -> None:
    first = workspace.run("up")
    assert first.returncode == 0, first.stdout + first.stderr
    redis_pid = json.loads(workspace.state_file.read_text())["components"]["redis"]["pid"]
    os.kill(redis_pid, signal.SIGKILL)

    broken = workspace.run("status")
    assert broken.returncode != 0
    assert _status_rows(broken.stdout)["redis"] == "down"

    second = workspace.run("up")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "postgres: already running" in second.stdout
    assert "ray: already running" in second.stdout
    assert "redis: recorded but not healthy" in second.stdout
    assert workspace.run("status").returncode == 0
    assert workspace.run("down").returncode == 0


def test_unusable_port_names_the_part_and_its_variable(workspace: Workspace) -> None:
    import socket

    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", int(workspace.env["REDIS_PORT"])))
        blocker.listen()
        up = workspace.run("up")
    assert up.returncode == 1
    assert "Traceback" not in up.stderr
    assert "redis:" in up.stderr and "REDIS_PORT" in up.stderr
    # What had started (PostgreSQL) is recorded, so down stops it.
    assert workspace.run("down").returncode == 0
    assert _processes_mentioning(str(workspace.root)) == []
