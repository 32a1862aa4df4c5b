"""``chronoverse up --elastic`` as a user runs it: the Ray head on the fake multi-node provider, the
Ray autoscaler launching a ``low`` and a ``high`` worker node for the pools, and ``down`` stopping
every process — the fake nodes included — by pid and session."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cli_workspace import Workspace, open_workspace, status_rows, wait_for_healthz

from cluster.localstack.processes import cmdline, is_alive

pytestmark = [pytest.mark.slow, pytest.mark.elastic]

#: Prints the alive nodes of the cluster at argv[1] as JSON (a separate driver: this process may
#: already be connected to the suite's own Ray cluster).
NODES_SCRIPT = """
import json, logging, sys, ray
ray.init(address=sys.argv[1], logging_level=logging.ERROR, log_to_driver=False)
print(json.dumps([n["Resources"] for n in ray.nodes() if n["Alive"]]))
"""


@pytest.fixture
def workspace(clean_env: pytest.MonkeyPatch) -> Iterator[Workspace]:
    with open_workspace(worker_ports=(30000, 30599)) as ws:
        ws.env["RAY_AUTH_MODE"] = "disabled"  # for the node-listing driver; the CLI sets its own
        yield ws


def _alive_nodes(ws: Workspace) -> list[dict[str, Any]]:
    run = subprocess.run([sys.executable, "-c", NODES_SCRIPT, ws.gcs_address], env=ws.env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    nodes: list[dict[str, Any]] = json.loads(run.stdout.strip().splitlines()[-1])
    return nodes


def _wait_for_worker_nodes(ws: Workspace, timeout: float = 360.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    nodes = _alive_nodes(ws)
    while not (any("low" in n for n in nodes) and any("high" in n for n in nodes)):
        assert time.monotonic() < deadline, f"no low and high node joined within {timeout:.0f}s: {nodes}"
        time.sleep(2)
        nodes = _alive_nodes(ws)
    return nodes


def test_up_elastic_launches_low_and_high_nodes_and_down_stops_them(workspace: Workspace) -> None:
    up = workspace.run("up", "--elastic")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "Ray:        elastic" in up.stdout
    assert "proxy HeadOnly" in up.stdout
    assert wait_for_healthz(workspace.api_url).json()["status"] == "ok"

    # The head advertises neither class, so the pool workers' demand launched one node of each type.
    nodes = _wait_for_worker_nodes(workspace)
    head = [n for n in nodes if "low" not in n and "high" not in n]
    assert len(head) == 1, nodes

    status = workspace.run("status")
    assert status.returncode == 0, status.stdout + status.stderr
    ray_row = " ".join(status_rows(status.stdout)["ray"])
    assert "running" in ray_row and "elastic" in ray_row
    assert "low=" in ray_row and "high=" in ray_row
    assert int(status_rows(status.stdout)["execution-worker"][1]) >= 1

    # A second `up` without the flag keeps (and reports) the elastic head.
    again = workspace.run("up")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "ray: already running" in again.stdout and "elastic" in again.stdout

    pids = workspace.recorded_pids()
    raylets = [pid for pid in pids["ray"] if (cmdline(pid) or [""])[0].endswith("/raylet")]
    assert len(raylets) >= 3  # the head's and one per worker node, all in the head's session
    everything = [pid for group in pids.values() for pid in group]

    down = workspace.run("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert [pid for pid in everything if is_alive(pid)] == []
    assert workspace.leftovers() == []
    assert not workspace.state_file.exists()
