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
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import asyncpg
import httpx
from aiohttp import web

from cluster.cli import load_context
from domain.config import Settings
from store.postgres import create_pool

PASSWORD = "bench-password-123"


@dataclass
class Target:
    """The probed endpoint: counts hits per workflow (the path carries the workflow number)."""

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


async def offer(api: httpx.AsyncClient, workflow_ids: list[str], rate: float, duration: float
                ) -> tuple[list[UUID], int]:
    accepted: list[UUID] = []
    rejected = 0
    total = int(rate * duration)
    start = time.monotonic()
    inflight: set[asyncio.Task[None]] = set()

    async def trigger(workflow_id: str) -> None:
        nonlocal rejected
        try:
            response = await api.post(f"/workflows/{workflow_id}/jobs/schedule",
                                      headers={"Idempotency-Key": secrets.token_hex(12)})
            if response.status_code == 201:
                accepted.append(UUID(response.json()["id"]))
            else:
                rejected += 1
        except httpx.HTTPError:
            rejected += 1

    for i in range(total):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(trigger(workflow_ids[i % len(workflow_ids)]))
        inflight.add(task)
        task.add_done_callback(inflight.discard)
    await asyncio.gather(*inflight)
    return accepted, rejected


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
    """The benchmark against the system whose API is ``base_url`` and database ``settings.postgres``."""
    params = {"rate": args.rate, "duration_s": args.duration, "workflows": args.workflows, "api": base_url}
    target = Target()
    await target.start()
    db = await create_pool(settings.postgres, min_size=1, max_size=2, application_name="bench-throughput")
    limits = httpx.Limits(max_connections=args.connections, max_keepalive_connections=args.connections)
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as session:
            token = await setup_user(session)
        async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits,
                                     headers={"Authorization": f"Bearer {token}"}) as api:
            workflow_ids = await create_workflows(api, target, args.workflows)
            await wait_built(db, workflow_ids, args.build_timeout)
            accepted, rejected = await offer(api, workflow_ids, args.rate, args.duration)
        rows = await wait_terminal(db, accepted, args.drain)
        # A trigger that timed out on the client may still have created its job: count every
        # manual job of the benchmark's workflows when comparing with the target's hits.
        every_job = [r["id"] for r in await db.fetch(
            "SELECT id FROM jobs WHERE workflow_id = ANY($1::uuid[]) AND \"trigger\" = 'MANUAL'",
            [UUID(w) for w in workflow_ids])]
        all_rows = await wait_terminal(db, every_job, args.drain)
    finally:
        await db.close()
        await target.stop()

    completed = [r for r in rows if r["status"] == "COMPLETED"]
    lost = len(accepted) - len(completed)
    hits = sum(target.hits.values())
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
    emit("heartbeat_lost", lost, "jobs", {**params, "accepted": len(accepted)})
    emit("heartbeat_duplicated", duplicated, "jobs",
         {**params, "target_hits": hits, "completed_manual_jobs": completed_all})
    emit("heartbeat_trigger_rejected", rejected, "requests", params)


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
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
