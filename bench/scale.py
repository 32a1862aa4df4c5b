"""Scale-up reaction on the fake multi-node cluster (SPEC §8: lag spike → extra execution actors
serving ≤ 15 s), and the time until the pool and the cluster are back to their baseline.

What it does:

1. starts a fake multi-node Ray head (``deploy/cluster.fake.yaml``: ``low``/``high`` worker node
   types, the real Ray autoscaler) on free ports in its own temp dir;
2. starts the backbone (scheduler, outbox relay, pools, consumer groups) and the pool autoscaler
   on it, against already running PostgreSQL/Redis/Kafka — those of ``chronoverse up``
   (default) or of ``--settings-pickle FILE`` (a pickled ``domain.config.Settings``; the elastic
   e2e test passes its fixture's services this way);
3. creates ``--jobs`` HEARTBEAT workflows pointing at a local HTTP endpoint that answers after
   ``--job-seconds`` and counts the calls per workflow, and then schedules one manual job each, all
   at once: the lag spike;
4. watches every 0.5 s the execution pool (target, routable size), the ``high`` worker nodes, the
   group's lag and the autoscaler's decision until every job has finished and the pool and the
   cluster are back where they started (or ``--timeout`` passes).

Prints one JSON line per measure (``name``, ``value``, ``unit``, ``params``); ``--timeline FILE``
also writes every observation, the measures and the job outcomes (used by ``tests/e2e/test_elastic.py``).
Run: ``chronoverse up`` (for the services), then ``python bench/scale.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pickle
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import UUID

from pydantic import BaseModel

from cluster.autoscaler import AUTOSCALER_ACTOR_NAME, RayLags, RayPools, start_pool_autoscaler
from cluster.fake_nodes import FakeCluster
from cluster.localstack import free_port
from domain.config import Settings
from domain.enums import WorkflowBuildStatus
from domain.topology import ClusterSpec

POOL = "execution-worker"
HIGH = "high"


class Observation(BaseModel):
    """One look at the system, ``t`` seconds after the burst was scheduled."""

    t: float
    target: int
    size: int
    starting: int
    draining: int
    high_nodes: int
    lag: int
    finished_jobs: int
    cpu: float
    cpu_measured: bool
    decision: str
    reason: str


class Outcome(BaseModel):
    """What became of the burst's jobs: statuses, and calls to the endpoint per workflow."""

    jobs: int
    statuses: dict[str, int]
    calls_per_workflow: dict[str, int]


class Timeline(BaseModel):
    params: dict[str, Any]
    baseline: Observation
    observations: list[Observation]
    measures: dict[str, float | None]
    outcome: Outcome
    autoscaler_decisions: list[str]


# -- the endpoint the HEARTBEAT jobs call ---------------------------------------------------------


@contextmanager
def counting_endpoint(delay_s: float) -> Iterator[tuple[str, Counter[str]]]:
    """A local HTTP server answering 200 after ``delay_s``; yields its base URL and the calls per path."""
    calls: Counter[str] = Counter()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with lock:
                calls[self.path.strip("/")] += 1
            time.sleep(delay_s)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", calls
    finally:
        server.shutdown()
        server.server_close()


# -- the scenario ----------------------------------------------------------------------------------


def tuned_spec(spec: ClusterSpec, args: argparse.Namespace) -> ClusterSpec:
    """The cluster file with the execution pool's thresholds and delays from the command line."""
    pool = spec.pools[POOL]
    scaling = pool.scaling.model_copy(update={
        key: value for key, value in {
            "lag_high": args.lag_high, "upscale_delay_s": args.upscale_delay,
            "downscale_delay_s": args.downscale_delay, "max_step_down": args.max_step_down,
        }.items() if value is not None
    })
    pools = {**spec.pools, POOL: pool.model_copy(update={"scaling": scaling})}
    serve = spec.serve.model_copy(update={"proxy_location": "HeadOnly"})  # fake nodes share the ports
    return spec.model_copy(update={"pools": pools, "serve": serve})


def with_own_ray(settings: Settings, slots: int) -> Settings:
    """Settings whose Ray head ports are free ones and whose namespace is ours."""
    ray_cfg = settings.ray.model_copy(update={
        "address": "", "gcs_port": free_port(), "dashboard_port": free_port(),
        "client_server_port": free_port(), "metrics_export_port": free_port(),
        "dashboard_agent_listen_port": free_port(), "dashboard_agent_grpc_port": free_port(),
        "runtime_env_agent_port": free_port(), "namespace": f"cv-scale-{os.getpid()}",
    })
    execution = settings.execution.model_copy(update={"concurrency": slots})
    return settings.model_copy(update={"ray": ray_cfg, "execution": execution})


async def create_workflows(db: Any, base_url: str, count: int) -> list[UUID]:
    """``count`` built HEARTBEAT workflows of one new user, each calling ``<base_url>/<index>``."""
    from domain.ids import uuid7
    from domain.workflow_spec import prepare_create
    from store import users, workflows

    user = await users.create(db, email=f"scale-{uuid7()}@example.com", password_hash="$2b$04$unused")
    ids = []
    for index in range(count):
        # The longest interval: the first AUTOMATIC job is a week away and never runs here.
        draft = prepare_create(name=f"scale-{index}", payload={"endpoint": f"{base_url}/{index}"},
                               kind="HEARTBEAT", interval=10080, max_consecutive_job_failures_allowed=3)
        workflow_id = await workflows.create(db, user_id=user.id, draft=draft,
                                             idempotency_key=f"scale-{index}", cache=None)
        await workflows.update_build_status(db, workflow_id, WorkflowBuildStatus.COMPLETED, 1, cache=None)
        ids.append(workflow_id)
    return ids


async def schedule_burst(db: Any, user_id: UUID, workflow_ids: list[UUID]) -> list[UUID]:
    from store import jobs

    return [await jobs.schedule_manual(db, user_id=user_id, workflow_id=w, idempotency_key=f"burst-{w}")
            for w in workflow_ids]


async def job_statuses(db: Any, job_ids: list[UUID]) -> dict[str, int]:
    rows = await db.fetch("SELECT status, count(*) AS n FROM jobs WHERE id = ANY($1::uuid[]) GROUP BY status",
                          job_ids)
    return {str(row["status"]): int(row["n"]) for row in rows}


def high_nodes() -> int:
    import ray

    return sum(1 for node in ray.nodes() if node["Alive"] and node["Resources"].get(HIGH, 0) > 0)


async def observe(spec: ClusterSpec, namespace: str, db: Any, job_ids: list[UUID], t0: float) -> Observation:
    import ray

    status = await RayPools(namespace).stats(POOL)
    assert status is not None, f"{POOL} pool manager is gone"
    lag = await RayLags(namespace).lag(POOL, spec.pools[POOL]) or {}
    decision, reason, cpu, cpu_measured = "", "", 0.0, False
    rows = await ray.get_actor(AUTOSCALER_ACTOR_NAME, namespace=namespace).explain.remote()
    for row in rows:
        if row["pool"] == POOL and row.get("decision"):
            decision, reason = row["decision"]["direction"], row["decision"]["reason"]
            cpu, cpu_measured = row["signals"]["cpu"], row["cpu_measured"]
    statuses = await job_statuses(db, job_ids) if job_ids else {}
    finished = sum(n for s, n in statuses.items() if s in ("COMPLETED", "FAILED", "CANCELED"))
    return Observation(t=round(time.monotonic() - t0, 2), target=status.target, size=status.size,
                       starting=status.starting, draining=status.draining, high_nodes=high_nodes(),
                       lag=sum(lag.values()), finished_jobs=finished, cpu=cpu, cpu_measured=cpu_measured,
                       decision=decision, reason=reason)


def first(observations: list[Observation], check: Any, after: float = 0.0) -> float | None:
    return next((o.t for o in observations if o.t >= after and check(o)), None)


def measures(base: Observation, seen: list[Observation], lag_high: int, jobs: int) -> dict[str, float | None]:
    up = first(seen, lambda o: o.target > base.target)
    serving = first(seen, lambda o: o.size > base.size)
    lag_over = first(seen, lambda o: o.lag > lag_high)
    node_up = first(seen, lambda o: o.high_nodes > base.high_nodes)
    drained = first(seen, lambda o: o.finished_jobs >= jobs)
    back = first(seen, lambda o: o.target == base.target and o.size == base.size and o.draining == 0,
                 after=serving or 0.0) if serving is not None else None
    node_gone = first(seen, lambda o: o.high_nodes == base.high_nodes, after=node_up) if node_up else None
    return {
        "scale_up_decision_s": up,
        "scale_up_serving_s": serving,
        "scale_up_serving_after_lag_threshold_s": (serving - lag_over) if serving is not None
        and lag_over is not None else None,
        "high_node_launched_s": node_up,
        "burst_drained_s": drained,
        "scale_back_s": back,
        "high_node_removed_s": node_gone,
    }


async def scenario(settings: Settings, spec: ClusterSpec, args: argparse.Namespace) -> Timeline:
    import ray

    from cluster.backbone import start_backbone
    from cluster.bootstrap import connect
    from store.postgres import create_pool

    settings = with_own_ray(settings, args.slots)
    namespace = settings.ray.namespace
    work = Path(tempfile.mkdtemp(prefix="cv-scale-"))
    print(f"work dir (config, head log; Ray logs if the run fails): {work}", file=sys.stderr, flush=True)
    cluster = FakeCluster.start(settings.ray, work_dir=work, autoscaler_metric_port=free_port(),
                                dashboard_metric_port=free_port())
    db = await create_pool(settings.postgres, min_size=1, max_size=4, application_name="bench-scale")
    decisions: list[str] = []
    failed = True
    try:
        connect(settings, cluster.address)
        await start_backbone(settings, spec, execution_stub=False)
        autoscaler = start_pool_autoscaler(spec, namespace, interval_s=args.interval)
        await autoscaler.ready.remote()
        with counting_endpoint(args.job_seconds) as (url, calls):
            workflow_ids = await create_workflows(db, url, args.jobs)
            user_id = (await db.fetchval("SELECT user_id FROM workflows WHERE id = $1", workflow_ids[0]))
            base = await observe(spec, namespace, db, [], time.monotonic())
            t0 = time.monotonic()
            job_ids = await schedule_burst(db, user_id, workflow_ids)
            seen: list[Observation] = []
            while time.monotonic() - t0 < args.timeout:
                obs = await observe(spec, namespace, db, job_ids, t0)
                seen.append(obs)
                if obs.decision in ("up", "down") and (not decisions or decisions[-1] != obs.reason):
                    decisions.append(obs.reason)
                settled = (obs.finished_jobs >= len(job_ids) and obs.target == base.target
                           and obs.size == base.size and obs.draining == 0
                           and obs.high_nodes == base.high_nodes)
                if settled and any(o.high_nodes > base.high_nodes for o in seen):
                    break
                await asyncio.sleep(0.5)
            outcome = Outcome(jobs=len(job_ids), statuses=await job_statuses(db, job_ids),
                              calls_per_workflow={w: calls.get(str(i), 0) for i, w in
                                                  enumerate(map(str, workflow_ids))})
        failed = False
    finally:
        await db.close()
        if ray.is_initialized():
            ray.shutdown()
        # Keep the Ray logs (autoscaler, raylets, actors) of a failed run for its diagnosis.
        survivors = cluster.stop(keep_logs_in=work / "ray-logs" if failed else None)
        if survivors:
            print(f"warning: fake cluster processes survived: {survivors}", file=sys.stderr)
        elif not failed:
            shutil.rmtree(work, ignore_errors=True)
    params = {"jobs": args.jobs, "job_seconds": args.job_seconds, "slots_per_actor": args.slots,
              **spec.pools[POOL].scaling.model_dump(), "min_actors": spec.pools[POOL].min_actors,
              "max_actors": spec.pools[POOL].max_actors}
    return Timeline(params=params, baseline=base, observations=seen,
                    measures=measures(base, seen, spec.pools[POOL].scaling.lag_high, len(job_ids)),
                    outcome=outcome, autoscaler_decisions=decisions)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings-pickle", type=Path, help="pickled domain.config.Settings of the services")
    parser.add_argument("--cluster-file", type=Path, default=Path("deploy/chronoverse.yaml"))
    parser.add_argument("--jobs", type=int, default=120, help="jobs in the burst (one workflow each)")
    parser.add_argument("--job-seconds", type=float, default=1.0, help="how long each HEARTBEAT call takes")
    parser.add_argument("--slots", type=int, default=2, help="EXECUTION_WORKER_CONCURRENCY per actor")
    parser.add_argument("--lag-high", type=int, default=20, help="lag threshold of the execution pool")
    parser.add_argument("--upscale-delay", type=float, default=None, help="default: the cluster file's")
    parser.add_argument("--downscale-delay", type=float, default=10.0)
    parser.add_argument("--max-step-down", type=int, default=None)
    parser.add_argument("--interval", type=float, default=1.0, help="pool autoscaler period (s)")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--timeline", type=Path, help="write every observation and the outcome here (JSON)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from cluster.clusterfile import load_cluster_spec

    args = parse_args(argv)
    os.environ["RAY_AUTH_MODE"] = "disabled"
    if args.settings_pickle is not None:
        settings = pickle.loads(args.settings_pickle.read_bytes())  # our own hand-off file: trusted
    else:
        from cluster.cli import load_context

        settings, _ = load_context()
    spec = tuned_spec(load_cluster_spec(args.cluster_file), args)
    timeline = asyncio.run(scenario(settings, spec, args))
    for name, value in timeline.measures.items():
        print(json.dumps({"name": name, "value": value, "unit": "s", "params": timeline.params}), flush=True)
    if args.timeline is not None:
        args.timeline.write_text(timeline.model_dump_json(indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
