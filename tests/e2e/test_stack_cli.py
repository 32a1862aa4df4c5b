"""``chronoverse up`` → ``status`` → ``down`` as a user runs them: a subprocess in a temp dir, every
port a free one, and afterwards not one process left behind."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator

import pytest
from cli_workspace import REPO_ROOT, Workspace, open_workspace, status_rows, wait_for_healthz

from cluster.clusterfile import load_cluster_spec
from cluster.localstack.processes import is_alive

pytestmark = pytest.mark.slow


@pytest.fixture
def workspace(clean_env: pytest.MonkeyPatch) -> Iterator[Workspace]:
    with open_workspace(worker_ports=(29300, 29999)) as ws:
        yield ws


def _serve_app_import_error() -> str:
    """Why the Serve application cannot be imported ("" when it can)."""
    try:
        import serve_apps.app  # noqa: F401
    except ImportError as err:
        return f"{err.__class__.__name__}: {err}"
    return ""


def test_up_status_down_leaves_no_process_behind(workspace: Workspace) -> None:
    if reason := _serve_app_import_error():
        pytest.skip(f"`up` deploys the Serve app, which is not importable: {reason}")
    up = workspace.run("up")
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"API:        {workspace.api_url}" in up.stdout
    assert f"http://127.0.0.1:{workspace.env['CHRONOVERSE_RAY_DASHBOARD_PORT']}" in up.stdout

    # The deployed API answers on SERVER_PORT.
    assert wait_for_healthz(workspace.api_url).json()["status"] == "ok"

    status = workspace.run("status")
    assert status.returncode == 0, status.stdout + status.stderr
    rows = status_rows(status.stdout)
    assert {rows[name][1] for name in ("postgres", "redis", "kafka", "ray")} == {"running"}
    assert rows["clickhouse"][1] == "embedded"
    assert rows["docker"][1] in ("running", "external", "unavailable")
    # The Serve deployments, every pool of the cluster file with its actors, and the consumer groups.
    spec = load_cluster_spec(REPO_ROOT / "deploy" / "chronoverse.yaml")
    assert {name: rows[name][1] for name in spec.serve.deployments} == dict.fromkeys(spec.serve.deployments,
                                                                                     "HEALTHY")
    assert {pool: int(rows[pool][1]) >= 1 for pool in spec.pools} == dict.fromkeys(spec.pools, True)
    groups = {p.consumer_group for p in spec.pools.values() if p.consumer_group}
    assert {row[1] for name, row in rows.items() if name.startswith("consumer-")} == groups

    pids = workspace.recorded_pids()
    assert set(pids) >= {"postgres", "redis", "kafka", "ray"}
    assert len(pids["ray"]) > 3  # gcs_server, raylet, dashboard, agents, actors …
    everything = [pid for group in pids.values() for pid in group]

    down = workspace.run("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert [pid for pid in everything if is_alive(pid)] == []
    assert workspace.leftovers() == []
    assert not workspace.state_file.exists()

    after = workspace.run("status")
    assert after.returncode != 0
    assert status_rows(after.stdout)["postgres"][1] == "down"


def test_second_up_and_deploy_keep_what_runs_and_restart_a_dead_part(workspace: Workspace) -> None:
    first = workspace.run("up")
    assert first.returncode == 0, first.stdout + first.stderr

    # A single-node head is not silently swapped for an elastic one.
    elastic = workspace.run("up", "--elastic")
    assert elastic.returncode == 1
    assert "chronoverse down" in elastic.stderr and "Traceback" not in elastic.stderr

    # KubeRay's deploy Job: backbone and autoscaler only; the running app is left alone.
    deploy = workspace.run("deploy", "--skip-serve")
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    assert "serve: skipped" in deploy.stdout
    assert wait_for_healthz(workspace.api_url).status_code == 200

    redis_pid = json.loads(workspace.state_file.read_text())["components"]["redis"]["pid"]
    os.kill(redis_pid, signal.SIGKILL)
    # kill() only queues the signal: `status` must find Redis gone, not still dying.
    deadline = time.monotonic() + 60
    while is_alive(redis_pid):
        assert time.monotonic() < deadline, f"redis {redis_pid} survived SIGKILL for 60 s"
        time.sleep(0.1)

    broken = workspace.run("status")
    assert broken.returncode != 0
    assert status_rows(broken.stdout)["redis"][1] == "down"

    second = workspace.run("up")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "postgres: already running" in second.stdout
    assert "ray: already running" in second.stdout
    assert "serve: application 'chronoverse' already running" in second.stdout
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
    assert workspace.leftovers() == []
