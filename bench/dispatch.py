"""Dispatch latency benchmark: due → QUEUED (and → the dispatch record on Kafka) for N interval
workflows whose jobs come due spread over a window (SPEC §8: p50 ≤ 250 ms, p99 ≤ 1 s).

What runs: an embedded PostgreSQL and tansu broker started in a temp dir (unless ``--use-env``
points at running ones), ``--replicas`` event-driven schedulers (:class:`actors.scheduler.Scheduler`)
and one outbox relay (:class:`actors.outbox_relay.OutboxRelay`) in this process, plus a plain
Kafka reader of the ``jobs`` topic.  The workflows are COMPLETED HEARTBEAT workflows with one PENDING
AUTOMATIC job each, inserted in one statement *after* the schedulers went to sleep, with
``scheduled_at`` uniformly spread over ``[lead, lead + window]`` seconds from now.

Measures (one JSON line each: ``name``, ``value``, ``unit``, ``params``):

* ``due_to_queued_{p50,p95,p99,max}`` — ``queued_at - scheduled_at`` (database clock);
* ``due_to_published_{p50,p95,p99,max}`` — dispatch record read from Kafka minus ``scheduled_at``;
* ``lost_dispatches`` — jobs not QUEUED, or QUEUED without a record on Kafka, after the grace time;
* ``duplicated_dispatches`` — extra dispatch attempts, extra outbox rows or extra Kafka records.

Usage: ``python bench/dispatch.py [--workflows 1000] [--window 30] [--replicas 2]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from actors.outbox_relay import OutboxRelay
from actors.scheduler import Scheduler
from cluster.clusterfile import load_cluster_spec
from cluster.localstack import LocalStack, free_port
from cluster.settings import load_settings
from domain.config import KafkaConfig, OutboxRelayConfig, PostgresConfig, SchedulingWorkerConfig, Settings
from domain.enums import StackComponent
from domain.ids import uuid7
from ingest.producer import EventProducer
from ingest.topics import JOBS, ensure_topics
from store.migrate import migrate
from store.postgres import create_pool

REPO_ROOT = Path(__file__).resolve().parents[1]

INSERT_WORKFLOWS = """
INSERT INTO workflows (id, user_id, name, payload, kind, build_status, "interval")
SELECT id, $2, 'bench', '{"endpoint": "http://127.0.0.1:9/"}'::jsonb, 'HEARTBEAT', 'COMPLETED', 60
  FROM unnest($1::uuid[]) AS id
"""

# One statement, so the scheduler gets one wake-up for the whole burst (as a bulk import would).
INSERT_JOBS = """
INSERT INTO jobs (id, workflow_id, user_id, status, "trigger", scheduled_at, idempotency_key)
SELECT j.id, j.workflow_id, $3, 'PENDING', 'AUTOMATIC', j.scheduled_at, 'bench:' || j.id::text
  FROM unnest($1::uuid[], $2::uuid[], $4::timestamp[]) AS j(id, workflow_id, scheduled_at)
"""


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def emit(name: str, value: float, unit: str, params: dict[str, Any]) -> None:
    print(json.dumps({"name": name, "value": round(value, 3), "unit": unit, "params": params}), flush=True)


def emit_latencies(prefix: str, seconds: list[float], params: dict[str, Any]) -> None:
    for label, q in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99), ("max", 1.0)):
        emit(f"{prefix}_{label}", percentile(seconds, q) * 1000, "ms", {**params, "samples": len(seconds)})


class DispatchReader:
    """Reads the ``jobs`` topic and remembers when each dispatch record arrived."""

    def __init__(self, kafka: KafkaConfig) -> None:
        self.kafka = kafka
        self.arrivals: dict[str, list[float]] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # A short fetch wait, so the reader adds little to the measured latency.
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.kafka.bootstrap_servers, enable_auto_commit=False, fetch_max_wait_ms=10
        )
        await consumer.start()
        partitions = [TopicPartition(JOBS, p) for p in consumer.partitions_for_topic(JOBS) or {0}]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        self._task = asyncio.create_task(self._run(consumer))

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=50)
                now = time.time()
                for records in batches.values():
                    for record in records:
                        job_id = json.loads(record.value)["job_id"]
                        self.arrivals.setdefault(job_id, []).append(now)
        finally:
            await consumer.stop()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def run(settings: Settings, args: argparse.Namespace) -> None:
    params = {"workflows": args.workflows, "window_s": args.window, "replicas": args.replicas}
    spec = load_cluster_spec(REPO_ROOT / "deploy" / "chronoverse.yaml")
    await migrate(settings.postgres)
    await ensure_topics(settings.kafka, spec.topics)
    pool = await create_pool(settings.postgres, min_size=2, max_size=4 + 2 * args.replicas)
    producer = EventProducer(settings.kafka, client_id="bench-relay")
    await producer.start()
    reader = DispatchReader(settings.kafka)
    await reader.start()
    sched_cfg = SchedulingWorkerConfig(batch_size=args.batch_size)
    schedulers = [
        Scheduler(sched_cfg, pool, listen=settings.postgres, name=f"bench-scheduler-{i}")
        for i in range(args.replicas)
    ]
    relay = OutboxRelay(
        OutboxRelayConfig(workflow_enabled=False, analytics_enabled=False), pool, producer,
        listen=settings.postgres, name="bench-relay",
    )
    try:
        for scheduler in schedulers:
            scheduler.start()
        relay.start()
        for _ in range(200):
            if all(s.stats().listening for s in schedulers) and relay.stats().listening:
                break
            await asyncio.sleep(0.05)

        user_id = uuid7()
        await pool.execute("INSERT INTO users (id, email, password) VALUES ($1, $2, 'x')", user_id,
                           f"bench-{user_id}@example.com")
        workflow_ids = [uuid7() for _ in range(args.workflows)]
        job_ids = [uuid7() for _ in range(args.workflows)]
        await pool.execute(INSERT_WORKFLOWS, workflow_ids, user_id)
        now = datetime.now(UTC).replace(tzinfo=None)
        rng = random.Random(args.seed)
        due = [now + timedelta(seconds=args.lead + rng.uniform(0, args.window)) for _ in job_ids]
        await pool.execute(INSERT_JOBS, job_ids, workflow_ids, user_id, due)

        deadline = time.monotonic() + args.lead + args.window + args.grace
        expected = {str(j) for j in job_ids}
        while time.monotonic() < deadline:
            queued = await pool.fetchval("SELECT count(*) FROM jobs WHERE status = 'QUEUED'")
            if queued == args.workflows and expected <= set(reader.arrivals):
                break
            await asyncio.sleep(0.25)
        await asyncio.sleep(1.0)  # let stragglers (duplicates) show up

        rows = await pool.fetch(
            "SELECT id, status::text AS status, scheduled_at, queued_at, dispatch_attempts FROM jobs"
        )
        outbox_rows = Counter(
            r["job_id"] for r in await pool.fetch(
                "SELECT payload->>'job_id' AS job_id FROM outbox_events WHERE topic = 'jobs'"
            )
        )
        queued_lat: list[float] = []
        published_lat: list[float] = []
        lost = duplicated = 0
        for row in rows:
            job = str(row["id"])
            scheduled = row["scheduled_at"].replace(tzinfo=UTC).timestamp()
            arrivals = reader.arrivals.get(job, [])
            if row["status"] != "QUEUED" or not arrivals:
                lost += 1
                continue
            queued_lat.append((row["queued_at"] - row["scheduled_at"]).total_seconds())
            published_lat.append(min(arrivals) - scheduled)
            duplicated += (row["dispatch_attempts"] - 1) + (outbox_rows[job] - 1) + (len(arrivals) - 1)

        emit_latencies("due_to_queued", queued_lat, params)
        emit_latencies("due_to_published", published_lat, params)
        emit("lost_dispatches", lost, "count", params)
        emit("duplicated_dispatches", duplicated, "count", params)
        stats = [s.stats() for s in schedulers]
        emit("scheduler_passes", sum(s.passes for s in stats), "count", params)
        emit("scheduler_wakeups", sum(s.wakeups for s in stats), "count", params)
        emit("too_early_dispatches", sum(1 for v in queued_lat if v < 0), "count", params)
    finally:
        for scheduler in schedulers:
            await scheduler.stop()
        await relay.stop()
        await reader.stop()
        await producer.stop()
        await pool.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workflows", type=int, default=1000)
    parser.add_argument("--window", type=float, default=30.0, help="seconds over which jobs come due")
    parser.add_argument("--lead", type=float, default=3.0, help="seconds before the first job is due")
    parser.add_argument("--grace", type=float, default=15.0, help="seconds to wait after the window")
    parser.add_argument("--replicas", type=int, default=2, help="scheduler replicas")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--use-env", action="store_true",
                        help="use the PostgreSQL/Kafka of the environment (a fresh database is NOT created)")
    args = parser.parse_args()

    if args.use_env:
        asyncio.run(run(load_settings(), args))
        return 0
    state_dir = Path(tempfile.mkdtemp(prefix="cv-bench-dispatch-"))
    state_dir.chmod(0o755)  # PostgreSQL runs as an unprivileged user when we are root
    settings = Settings().model_copy(update={
        "postgres": PostgresConfig(host="127.0.0.1", port=free_port()),
        "kafka": KafkaConfig(brokers=f"127.0.0.1:{free_port()}"),
    })
    spec = load_cluster_spec(REPO_ROOT / "deploy" / "chronoverse.yaml")
    local = LocalStack(
        settings, spec, state_dir=state_dir, progress=lambda line: print(f"# {line}", file=sys.stderr)
    )
    try:
        local.up([StackComponent.POSTGRES, StackComponent.KAFKA])
        asyncio.run(run(settings, args))
    finally:
        local.down()
        shutil.rmtree(state_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
