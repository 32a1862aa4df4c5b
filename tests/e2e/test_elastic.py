"""Elasticity end to end on the fake multi-node cluster: a burst of jobs raises the execution group's
lag past its threshold → the pool autoscaler grows the execution pool → the new actors do not fit, so
the Ray autoscaler launches a ``high`` node → the lag drains → the pool shrinks (draining its actors)
→ the idle node is removed; and every job ran exactly once.

The scenario is ``bench/scale.py`` (one implementation for the benchmark and this test), run in its
own interpreter: a process can be a driver of one Ray cluster only, and this one starts its own
fake multi-node head on free ports.  The services (PostgreSQL, Redis, Kafka) are the ``stack``
fixture's, handed over as a pickled ``Settings``.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.elastic, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
JOBS = 80
LAG_HIGH = 15
#: The scenario's own bound on the burst → scale-up → drain → scale-back loop (it stops as soon as
#: everything is back), and the subprocess's (plus the fake cluster's start and stop).  Generous: on
#: a loaded machine a fake node takes minutes to launch and its idle timeout only starts after.
LOOP_TIMEOUT_S = 600
SCENARIO_TIMEOUT_S = 900


@pytest.fixture(scope="module")
def timeline(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("elastic")
    settings_file = work / "settings.pickle"
    settings_file.write_bytes(pickle.dumps(stack.settings))
    out = work / "timeline.json"
    argv = [sys.executable, str(ROOT / "bench" / "scale.py"), "--settings-pickle", str(settings_file),
            "--cluster-file", str(ROOT / "deploy" / "chronoverse.yaml"), "--jobs", str(JOBS),
            "--job-seconds", "1.0", "--slots", "2", "--lag-high", str(LAG_HIGH), "--upscale-delay", "2",
            "--downscale-delay", "8", "--max-step-down", "2", "--timeout", str(LOOP_TIMEOUT_S),
            "--timeline", str(out)]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    run = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=SCENARIO_TIMEOUT_S)
    assert run.returncode == 0, f"scenario failed:\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}"
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def test_the_burst_grows_the_execution_pool_past_its_minimum(timeline: dict[str, Any]) -> None:
    assert timeline["measures"]["scale_up_decision_s"] is not None
    assert max(o["target"] for o in timeline["observations"]) > timeline["baseline"]["target"]
    assert max(o["size"] for o in timeline["observations"]) > timeline["baseline"]["size"]
    assert any("consumer lag" in reason for reason in timeline["autoscaler_decisions"])


def test_the_grown_pool_makes_the_ray_autoscaler_launch_a_high_node(timeline: dict[str, Any]) -> None:
    assert max(o["high_nodes"] for o in timeline["observations"]) > timeline["baseline"]["high_nodes"]
    launched = timeline["measures"]["high_node_launched_s"]
    serving = timeline["measures"]["scale_up_serving_s"]
    assert launched is not None and serving is not None


def test_after_the_lag_drains_the_pool_shrinks_and_the_node_is_removed(timeline: dict[str, Any]) -> None:
    assert timeline["measures"]["burst_drained_s"] is not None
    assert timeline["measures"]["scale_back_s"] is not None
    assert timeline["measures"]["high_node_removed_s"] is not None
    last = timeline["observations"][-1]
    assert last["target"] == timeline["baseline"]["target"] and last["size"] == timeline["baseline"]["size"]
    assert last["high_nodes"] == timeline["baseline"]["high_nodes"]


def test_every_job_ran_exactly_once(timeline: dict[str, Any]) -> None:
    assert timeline["outcome"]["statuses"] == {"COMPLETED": JOBS}
    calls = timeline["outcome"]["calls_per_workflow"]
    assert len(calls) == JOBS
    assert sorted(set(calls.values())) == [1], {w: n for w, n in calls.items() if n != 1}
