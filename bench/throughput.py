"""End-to-end HEARTBEAT throughput (SPEC §8: ≥ 200 jobs/s sustained, 0 lost, 0 duplicated).

Needs the whole system running (``chronoverse up``: Serve API + backbone with the real execution
workers).  The benchmark:

1. starts a local HTTP target (200 for every GET; it counts hits per workflow);
2. registers a user through the API, creates a personal token and ``--workflows`` HEARTBEAT
   workflows (interval one week, so only manual jobs run) pointing at the target, and waits until
   they are built;
3. offers manual triggers (``POST /workflows/{id}/jobs/schedule``) at ``--rate`` per second for
   ``--duration`` seconds, round-robin over the workflows.  A workflow runs one job at a time
   (reference §5.3), so with fewer workflows than triggers its own queue sets the pace: the
   default gives most workflows a single job, which measures the pipeline itself;
4. waits (up to ``--drain``) until every accepted job is terminal, then reads the jobs' own
   timestamps from PostgreSQL (one clock: the database's).

Prints one JSON line per measure (``name, value, unit, params``):

* ``heartbeat_completed_throughput`` — completed jobs per second between the first due time and
  the last completion;
* ``heartbeat_due_to_{queued,published,running,completed}_p50/p95/p99`` (ms): the scheduler's share
  (due → QUEUED), the outbox relay's (→ the dispatch record is on Kafka), the consumer, pool and
  claim (→ RUNNING), then the run and its settlement (→ COMPLETED);
* ``heartbeat_lost`` — accepted jobs not COMPLETED at the end (must be 0);
* ``heartbeat_duplicated`` — target hits beyond one per completed manual job of the benchmark's
  workflows, plus jobs that needed more than one attempt (must be 0);
* ``heartbeat_trigger_rejected`` — triggers the API refused or that timed out (a timed-out one may
  still have created its job: it is checked by ``heartbeat_duplicated``, not counted as lost).

Usage: ``python bench/throughput.py --rate 200 --duration 10 --workflows 2000`` (settings come from
the environment / the running local stack, as for ``chronoverse status``).

``--local`` runs on its own instead: throwaway PostgreSQL/Redis/tansu (``bench/benchstack.py``) and a
private local Ray cluster with the whole backbone (scheduler, relay, consumer groups, pools with the
real execution workers, processors), no Serve app.  The workflows are then inserted as built
(``COMPLETED``) and each trigger is the manual-schedule statement the API's JobsService runs
(:func:`store.jobs.schedule_manual`), so the numbers are the pipeline's, without the API's CPU.
``--trigger db`` does the same against a running system.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

import asyncpg
import httpx
from benchstack import Target, TreeCpu

from cluster.cli import load_context
from cluster.settings import load_settings
from domain.config import Settings
from domain.enums import StackComponent
from domain.ids import uuid7
from store import jobs as jobs_repo
from store.postgres import create_pool

PASSWORD = "bench-password-123"


def emit(name: str, value: float, unit: str, params: dict[str, Any]) -> None:
    print(json.dumps({"name": name, "value": round(value, 3), "unit": unit, "params": params}), flush=True)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[min(98, max(0, round(q * 100) - 1))]


async def setup_user(client: httpx.AsyncClient) -> str:
    email = f"bench-{secrets.token_hex(6)}@example.com"
    response = await client.post("/auth/register", json={"email": email, "password": PASSWORD})
    response.raise_for_status()
    csrf = response.json()["csrf_token"]
    token = await client.post("/auth/tokens", json={"name": "bench"}, headers={"X-CSRF-Token": csrf})
    token.raise_for_status()
    return str(token.json()["token"])


async def create_workflows(api: httpx.AsyncClient, target: Target, count: int) -> list[str]:
    ids: list[str] = []
    gate = asyncio.Semaphore(8)

    async def create(index: int) -> None:
        body = {
            "name": f"bench-{index}",
            "kind": "HEARTBEAT",
            "payload": json.dumps({"endpoint": f"{target.url}/probe/{index}", "timeout": "10s"}),
            "interval": 10080,
            "max_consecutive_job_failures_allowed": 100,
        }
        key = secrets.token_hex(8)  # retried with the same key: a replay returns the same workflow
        for attempt in range(5):
            async with gate:
                try:
                    response = await api.post("/workflows", json=body, headers={"Idempotency-Key": key})
                except httpx.HTTPError:
                    response = None
            if response is not None and response.status_code == 201:
                ids.append(response.json()["id"])
                return
            await asyncio.sleep(1.0 + attempt)
        raise SystemExit(f"could not create workflow {index}: "
                         f"{response.status_code if response is not None else 'no response'}")

    await asyncio.gather(*(create(i) for i in range(count)))
    return ids


async def wait_built(db: asyncpg.Pool, workflow_ids: list[str], within_s: float) -> None:
    ids = [UUID(w) for w in workflow_ids]
    deadline = time.monotonic() + within_s
    built = 0
    while time.monotonic() < deadline:
        built = await db.fetchval(
            "SELECT count(*) FROM workflows WHERE id = ANY($1::uuid[]) AND build_status = 'COMPLETED'", ids)
        if built == len(ids):
            return
        await asyncio.sleep(0.5)
    raise SystemExit(f"{len(ids) - built} workflows not built after {within_s:.0f}s: "
                     "is the backbone running?")


INSERT_WORKFLOWS = """
INSERT INTO workflows (id, user_id, name, payload, kind, build_status, "interval",
                       max_consecutive_job_failures_allowed)
SELECT w.id, $2, 'bench-' || w.n, jsonb_build_object('endpoint', $3 || '/probe/' || w.n, 'timeout', '10s'),
       'HEARTBEAT', 'COMPLETED', 10080, 100
  FROM unnest($1::uuid[]) WITH ORDINALITY AS w(id, n)
"""


async def insert_workflows(db: asyncpg.Pool, target: Target, count: int) -> list[str]:
    """``count`` built HEARTBEAT workflows of a new user, straight into the database (``--trigger db``)."""
    user_id = uuid7()
    await db.execute("INSERT INTO users (id, email, password) VALUES ($1, $2, 'x')", user_id,
                     f"bench-{user_id}@example.com")
    ids = [uuid7() for _ in range(count)]
    await db.execute(INSERT_WORKFLOWS, ids, user_id, target.url)
    return [str(i) for i in ids]


async def offer(trigger: Callable[[str], Awaitable[UUID | None]], workflow_ids: list[str], rate: float,
                duration: float) -> tuple[list[UUID], int]:
    """Call ``trigger`` (returns the job id, or None when refused) ``rate`` times a second, round-robin
    over the workflows, without waiting for earlier calls (an open loop)."""
    accepted: list[UUID] = []
    rejected = 0
    total = int(rate * duration)
    start = time.monotonic()
    inflight: set[asyncio.Task[None]] = set()

    async def one(workflow_id: str) -> None:
        nonlocal rejected
        job_id = await trigger(workflow_id)
        if job_id is None:
            rejected += 1
        else:
            accepted.append(job_id)

    for i in range(total):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(workflow_ids[i % len(workflow_ids)]))
        inflight.add(task)
        task.add_done_callback(inflight.discard)
    await asyncio.gather(*inflight)
    return accepted, rejected


def api_trigger(api: httpx.AsyncClient) -> Callable[[str], Awaitable[UUID | None]]:
    """A manual trigger over HTTP (``POST /workflows/{id}/jobs/schedule``)."""

    async def trigger(workflow_id: str) -> UUID | None:
        try:
            response = await api.post(f"/workflows/{workflow_id}/jobs/schedule",
                                      headers={"Idempotency-Key": secrets.token_hex(12)})
        except httpx.HTTPError:
            return None
        return UUID(response.json()["id"]) if response.status_code == 201 else None

    return trigger


def db_trigger(db: asyncpg.Pool, user_id: UUID) -> Callable[[str], Awaitable[UUID | None]]:
    """A manual trigger as the JobsService runs it (:func:`store.jobs.schedule_manual`)."""

    async def trigger(workflow_id: str) -> UUID | None:
        try:
            return await jobs_repo.schedule_manual(db, user_id=user_id, workflow_id=UUID(workflow_id),
                                                   idempotency_key=secrets.token_hex(12))
        except (asyncpg.PostgresError, OSError):
            return None

    return trigger


async def wait_terminal(db: asyncpg.Pool, job_ids: list[UUID], within_s: float) -> list[asyncpg.Record]:
    deadline = time.monotonic() + within_s
    while True:
        rows = await db.fetch(
            "SELECT j.id, j.workflow_id, j.status::text AS status, j.attempts, j.scheduled_at, j.queued_at, "
            "       o.published_at, j.started_at, j.completed_at "
            "  FROM jobs j "
            "  LEFT JOIN outbox_events o ON o.topic = 'jobs' "
            "       AND o.event_key = 'job:' || j.id || ':dispatch:' || j.dispatch_attempts "
            " WHERE j.id = ANY($1::uuid[])", job_ids)
        open_jobs = [r for r in rows if r["status"] not in ("COMPLETED", "FAILED", "CANCELED")]
        if (not open_jobs and len(rows) == len(job_ids)) or time.monotonic() >= deadline:
            return list(rows)
        await asyncio.sleep(1.0)


async def main(args: argparse.Namespace) -> None:
    settings, _ = load_context()
    await run(settings, args.api or f"http://127.0.0.1:{settings.server.port}", args)


async def run(settings: Settings, base_url: str, args: argparse.Namespace) -> None:
    """The benchmark against the system whose API is ``base_url`` and database ``settings.postgres``
    (``base_url`` is unused with ``--trigger db``)."""
    params: dict[str, Any] = {"rate": args.rate, "duration_s": args.duration, "workflows": args.workflows,
                              "trigger": args.trigger, "local": args.local}
    if args.local:
        params["worker_niceness"] = args.worker_niceness
        params["execution_actors"] = args.execution_actors or "cluster file"
    if args.trigger == "api":
        params["api"] = base_url
    target = Target()
    await target.start()
    db = await create_pool(settings.postgres, min_size=1, max_size=8, application_name="bench-throughput")
    cpu = TreeCpu() if args.local else None
    try:
        if args.trigger == "db":
            workflow_ids = await insert_workflows(db, target, args.workflows)
            user_id = await db.fetchval("SELECT user_id FROM workflows WHERE id = $1", UUID(workflow_ids[0]))
            load_before = os.getloadavg()
            if cpu is not None:
                cpu.start()
            pg_before = await pg_activity(db)
            accepted, rejected = await offer(db_trigger(db, user_id), workflow_ids, args.rate, args.duration)
        else:
            n = args.connections
            limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
            async with httpx.AsyncClient(base_url=base_url, timeout=30) as session:
                token = await setup_user(session)
            async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits,
                                         headers={"Authorization": f"Bearer {token}"}) as api:
                workflow_ids = await create_workflows(api, target, args.workflows)
                await wait_built(db, workflow_ids, args.build_timeout)
                load_before = os.getloadavg()
                pg_before = await pg_activity(db)
                accepted, rejected = await offer(api_trigger(api), workflow_ids, args.rate, args.duration)
        rows = await wait_terminal(db, accepted, args.drain)
        params["loadavg_1m"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
        spent = cpu.used() if cpu is not None else {}
        await asyncio.sleep(1.0)  # PostgreSQL publishes backend statistics about once a second
        pg_spent = {k: v - pg_before[k] for k, v in (await pg_activity(db)).items()}
        # A trigger that timed out on the client may still have created its job: count every
        # manual job of the benchmark's workflows when comparing with the target's hits.
        every_job = [r["id"] for r in await db.fetch(
            "SELECT id FROM jobs WHERE workflow_id = ANY($1::uuid[]) AND \"trigger\" = 'MANUAL'",
            [UUID(w) for w in workflow_ids])]
        all_rows = await wait_terminal(db, every_job, args.drain)
    finally:
        await db.close()
        await target.stop()
    report(rows, all_rows, len(accepted), rejected, sum(target.hits.values()), params)
    if spent and accepted:
        # Everything from the first trigger to the last job's end, load generator and target included
        # (the bench process itself: "python").  Comparable across runs whatever the machine's load.
        top = dict(sorted(((k, round(v * 1000 / len(accepted), 2)) for k, v in spent.items()),
                          key=lambda kv: -kv[1])[:12])
        emit("heartbeat_cpu_per_job", sum(spent.values()) * 1000 / len(accepted), "ms",
             {**params, "by_process_ms": top})
    if accepted:
        # Where the database's share goes: transactions and row writes per job, whole system.
        emit("heartbeat_pg_commits_per_job", pg_spent["xact_commit"] / len(accepted), "commits",
             {**params, **{f"{k}_per_job": round(v / len(accepted), 2) for k, v in pg_spent.items()}})


async def pg_activity(db: asyncpg.Pool) -> dict[str, int]:
    """Cumulative commits and row writes of the benchmark's database (``pg_stat_database``)."""
    row = await db.fetchrow(
        "SELECT xact_commit, tup_inserted, tup_updated, tup_deleted FROM pg_stat_database "
        "WHERE datname = current_database()")
    return {k: int(v) for k, v in dict(row).items()}


def report(rows: list[asyncpg.Record], all_rows: list[asyncpg.Record], accepted: int, rejected: int,
           hits: int, params: dict[str, Any]) -> None:
    """Print the measures (see the module docstring) as JSON lines."""
    completed = [r for r in rows if r["status"] == "COMPLETED"]
    lost = accepted - len(completed)
    completed_all = sum(1 for r in all_rows if r["status"] == "COMPLETED")
    duplicated = max(0, hits - completed_all) + sum(1 for r in all_rows if r["attempts"] > 1)
    if completed:
        first_due = min(r["scheduled_at"] for r in completed)
        last_done = max(r["completed_at"] for r in completed)
        window = max((last_done - first_due).total_seconds(), 1e-6)
        emit("heartbeat_completed_throughput", len(completed) / window, "jobs/s",
             {**params, "completed": len(completed), "window_s": round(window, 3)})
        to_queued = [(r["queued_at"] - r["scheduled_at"]).total_seconds() * 1000 for r in completed
                     if r["queued_at"] is not None]
        to_published = [(r["published_at"] - r["scheduled_at"]).total_seconds() * 1000 for r in completed
                        if r["published_at"] is not None]
        to_running = [(r["started_at"] - r["scheduled_at"]).total_seconds() * 1000 for r in completed]
        to_done = [(r["completed_at"] - r["scheduled_at"]).total_seconds() * 1000 for r in completed]
        stages = (("due_to_queued", to_queued), ("due_to_published", to_published),
                  ("due_to_running", to_running), ("due_to_completed", to_done))
        for name, values in stages:
            for q in (0.5, 0.95, 0.99):
                emit(f"heartbeat_{name}_p{round(q * 100)}", percentile(values, q), "ms", params)
    emit("heartbeat_lost", lost, "jobs", {**params, "accepted": accepted})
    emit("heartbeat_duplicated", duplicated, "jobs",
         {**params, "target_hits": hits, "completed_manual_jobs": completed_all})
    emit("heartbeat_trigger_rejected", rejected, "requests", params)


async def report_backbone(namespace: str) -> None:
    """``--local``: what the scheduler and relay replicas did (passes, wake-ups, published rows)."""
    import ray

    for name in ("scheduler-0", "outbox-relay-0"):
        stats = await ray.get_actor(name, namespace=namespace).stats.remote()
        fields = stats.model_dump(include={"passes", "wakeups", "dispatched", "published", "failed"})
        emit(f"backbone_{name.replace('-', '_')}", 0, "stats", fields)


def run_local(args: argparse.Namespace) -> None:
    """``--local``: throwaway services and a private Ray cluster with the whole backbone."""
    from benchstack import local_ray, pipeline_settings, start_pipeline, throwaway_services

    components = (StackComponent.POSTGRES, StackComponent.REDIS, StackComponent.KAFKA)
    with throwaway_services(components, base=load_settings()) as (settings, spec), \
            local_ray(f"bench-throughput-{os.getpid()}", worker_niceness=args.worker_niceness) as ray_cfg:
        settings = pipeline_settings(settings, ray_cfg)
        if args.execution_actors:
            pools = dict(spec.pools)
            pools["execution-worker"] = pools["execution-worker"].model_copy(
                update={"min_actors": args.execution_actors})
            spec = spec.model_copy(update={"pools": pools})

        async def go() -> None:
            await start_pipeline(settings, spec)
            await asyncio.sleep(args.settle)  # consumer groups finish joining (tansu joins are slow)
            await run(settings, "", args)
            await report_backbone(settings.ray.namespace)

        asyncio.run(go())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="manual triggers offered per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of offered load")
    parser.add_argument("--workflows", type=int, default=2000,
                        help="HEARTBEAT workflows; each runs one job at a time, so with fewer than "
                             "rate x duration the per-workflow queue, not the pipeline, sets the pace")
    parser.add_argument("--connections", type=int, default=64, help="HTTP connections to the API")
    parser.add_argument("--drain", type=float, default=120.0, help="seconds to wait for the last jobs")
    parser.add_argument("--build-timeout", type=float, default=300.0, help="seconds to wait for builds")
    parser.add_argument("--api", default="", help="API base URL (default: the running local stack's)")
    parser.add_argument("--trigger", choices=("api", "db"), default=None,
                        help="how jobs are triggered: over the API (default) or with the JobsService's "
                             "statement straight on the database (default with --local)")
    parser.add_argument("--local", action="store_true",
                        help="start throwaway services and a private Ray cluster with the backbone")
    parser.add_argument("--settle", type=float, default=5.0,
                        help="--local: seconds to wait after start-up before offering load")
    parser.add_argument("--execution-actors", type=int, default=0,
                        help="--local: execution workers to start with (default: the cluster file's min)")
    parser.add_argument("--worker-niceness", type=int, default=0,
                        help="--local: nice value of the Ray workers (Ray's own default is 15, which "
                             "starves the pipeline next to any other load on a shared machine)")
    args = parser.parse_args(argv)
    if args.trigger is None:
        args.trigger = "db" if args.local else "api"
    if args.local and args.trigger != "db":
        parser.error("--local has no API: use --trigger db")
    return args


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.local:
        run_local(arguments)
    else:
        asyncio.run(main(arguments))
