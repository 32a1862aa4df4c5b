"""Dispatch latency benchmark: due → QUEUED, → the dispatch record on Kafka and → RUNNING for N
interval workflows whose jobs come due spread over a window (SPEC §8: due → RUNNING p50 ≤ 250 ms,
p99 ≤ 1 s with 1,000 active interval workflows).

What runs (``--execution``):

* ``inprocess`` (default): embedded PostgreSQL, Redis and tansu in a temp dir (``bench/benchstack.py``,
  unless ``--use-env`` points at running ones); ``--replicas`` event-driven schedulers
  (:class:`actors.scheduler.Scheduler`), one outbox relay (:class:`actors.outbox_relay.OutboxRelay`),
  and the execution side — a ``jobs`` consumer (:class:`ingest.consumer.PartitionedConsumer`, shaped
  as the backbone shapes it) feeding a real :class:`actors.execution_worker.ExecutionWorker` that runs
  the HEARTBEAT jobs against a local HTTP target — all in this process: every hop of the path but
  Ray's two actor calls (consumer actor → pool manager → worker);
* ``ray``: the same services plus a private local Ray cluster running the whole backbone as
  ``chronoverse up`` deploys it (scheduler and relay actors, consumer actors, pools with the real
  execution workers, processors): the production path, Ray hops included;
* ``none``: schedulers and relay only (due → QUEUED / published; jobs stay QUEUED).

A plain Kafka reader of the ``jobs`` topic notes when each dispatch record arrives.  The workflows
are COMPLETED HEARTBEAT workflows with one PENDING AUTOMATIC job each, inserted in one statement
*after* the pipeline went to sleep, with ``scheduled_at`` uniformly spread over
``[lead, lead + window]`` seconds from now.

Measures (one JSON line each: ``name``, ``value``, ``unit``, ``params``):

* ``due_to_queued_{p50,p95,p99,max}`` — ``queued_at - scheduled_at`` (database clock);
* ``due_to_published_{p50,p95,p99,max}`` — dispatch record read from Kafka minus ``scheduled_at``;
* ``due_to_running_{p50,p95,p99,max}`` — ``started_at - scheduled_at`` (database clock; not with
  ``none``);
* ``lost_dispatches`` — jobs never QUEUED (``none``) or never started (else), or without a record on
  Kafka, after the grace time;
* ``duplicated_dispatches`` — extra dispatch attempts, outbox rows, Kafka records, run attempts or
  target hits.

Usage: ``python bench/dispatch.py [--workflows 1000] [--window 30] [--execution inprocess|ray|none]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from benchstack import CLUSTER_FILE, Target, local_ray, pipeline_settings, start_pipeline, throwaway_services

from actors.execution_worker import ExecutionWorker
from actors.log_publisher import LogPublisher
from actors.outbox_relay import OutboxRelay
from actors.runners.heartbeat import HeartbeatRunner
from actors.scheduler import Scheduler
from cluster.backbone import EXECUTION_POOL, consumer_spec_for
from cluster.clusterfile import load_cluster_spec
from cluster.settings import load_settings
from domain.commit_policy import RetryBackoff
from domain.config import KafkaConfig, OutboxRelayConfig, SchedulingWorkerConfig, Settings
from domain.enums import StackComponent
from domain.ids import uuid7
from ingest.consumer import ConsumedRecord, PartitionedConsumer
from ingest.producer import EventProducer
from ingest.topics import JOBS, ensure_topics
from store.migrate import migrate
from store.postgres import create_pool

SERVICES = (StackComponent.POSTGRES, StackComponent.REDIS, StackComponent.KAFKA)

INSERT_WORKFLOWS = """
INSERT INTO workflows (id, user_id, name, payload, kind, build_status, "interval")
SELECT w.id, $2, 'bench', jsonb_build_object('endpoint', $3 || '/probe/' || w.n, 'timeout', '10s'),
       'HEARTBEAT', 'COMPLETED', 60
  FROM unnest($1::uuid[]) WITH ORDINALITY AS w(id, n)
"""

# One statement, so the scheduler gets one wake-up for the whole burst (as a bulk import would).
INSERT_JOBS = """
INSERT INTO jobs (id, workflow_id, user_id, status, "trigger", scheduled_at, idempotency_key)
SELECT j.id, j.workflow_id, $3, 'PENDING', 'AUTOMATIC', j.scheduled_at, 'bench:' || j.id::text
  FROM unnest($1::uuid[], $2::uuid[], $4::timestamp[]) AS j(id, workflow_id, scheduled_at)
"""

SELECT_JOBS = """
SELECT id, status::text AS status, scheduled_at, queued_at, started_at, dispatch_attempts, attempts
  FROM jobs WHERE id = ANY($1::uuid[])
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


@contextlib.asynccontextmanager
async def in_process_pipeline(settings: Settings, pool: asyncpg.Pool, args: argparse.Namespace
                              ) -> AsyncIterator[list[Scheduler]]:
    """Schedulers and a relay in this process and, unless ``--execution none``, the ``jobs`` consumer
    feeding a real execution worker (no Ray).  Yields the schedulers (for their counters)."""
    producer = EventProducer(settings.kafka, client_id="bench-relay")
    await producer.start()
    schedulers = [
        Scheduler(SchedulingWorkerConfig(batch_size=args.batch_size), pool, listen=settings.postgres,
                  name=f"bench-scheduler-{i}")
        for i in range(args.replicas)
    ]
    relay = OutboxRelay(OutboxRelayConfig(workflow_enabled=False, analytics_enabled=False), pool, producer,
                        listen=settings.postgres, name="bench-relay")
    worker: ExecutionWorker | None = None
    consumer: PartitionedConsumer | None = None
    try:
        if args.execution == "inprocess":
            heartbeat = HeartbeatRunner()
            logs = LogPublisher(producer, None, settings.execution)
            worker = ExecutionWorker(cfg=settings.execution, worker_id="bench-execution", db=pool, logs=logs,
                                     heartbeat=heartbeat, containers=None)
            worker.start(recovery=False)
            shape = consumer_spec_for(settings, EXECUTION_POOL, JOBS, "bench-execution")
            execution = worker

            async def forward(records: list[ConsumedRecord]) -> None:
                await execution.handle(records)

            consumer = PartitionedConsumer(
                settings.kafka, JOBS, f"bench-execution-{uuid7().hex[:8]}", forward,
                batch_size=shape.batch_size, batch_wait=shape.batch_wait_s,
                max_in_flight_per_lane=shape.max_in_flight_per_lane,
                backoff=RetryBackoff(initial_s=shape.retry_initial_s, max_s=shape.retry_max_s),
            )
            await consumer.start()
        for scheduler in schedulers:
            scheduler.start()
        relay.start()
        for _ in range(200):
            if all(s.stats().listening for s in schedulers) and relay.stats().listening:
                break
            await asyncio.sleep(0.05)
        yield schedulers
    finally:
        for scheduler in schedulers:
            await scheduler.stop()
        await relay.stop()
        if consumer is not None:
            await consumer.stop()
        if worker is not None:
            await worker.wait_idle()
            await worker.close()
            await worker.runners.heartbeat.aclose()
        await producer.stop()


async def run(settings: Settings, args: argparse.Namespace) -> None:
    params: dict[str, Any] = {"workflows": args.workflows, "window_s": args.window,
                              "execution": args.execution}
    if args.execution != "ray":
        params["replicas"] = args.replicas
    spec = load_cluster_spec(CLUSTER_FILE)
    await migrate(settings.postgres)
    await ensure_topics(settings.kafka, spec.topics)
    pool = await create_pool(settings.postgres, min_size=2, max_size=8 + 2 * args.replicas)
    target = Target()
    await target.start()
    reader = DispatchReader(settings.kafka)
    await reader.start()
    try:
        async with contextlib.AsyncExitStack() as stack:
            schedulers: list[Scheduler] = []
            if args.execution == "ray":
                await start_pipeline(settings, spec)
                await asyncio.sleep(args.settle)  # consumer groups finish joining (tansu joins are slow)
            else:
                schedulers = await stack.enter_async_context(in_process_pipeline(settings, pool, args))
            params["loadavg_1m"] = round(os.getloadavg()[0], 2)
            job_ids = await offer(pool, target, args)
            await wait_done(pool, reader, job_ids, args)
            await asyncio.sleep(1.0)  # let stragglers (duplicates) show up
            rows = await pool.fetch(SELECT_JOBS, job_ids)
            outbox_rows = Counter(r["job_id"] for r in await pool.fetch(
                "SELECT payload->>'job_id' AS job_id FROM outbox_events WHERE topic = 'jobs'"))
            report(rows, outbox_rows, reader.arrivals, target, args, params)
            if schedulers:
                stats = [s.stats() for s in schedulers]
                emit("scheduler_passes", sum(s.passes for s in stats), "count", params)
                emit("scheduler_wakeups", sum(s.wakeups for s in stats), "count", params)
    finally:
        await reader.stop()
        await target.stop()
        await pool.close()


async def offer(pool: asyncpg.Pool, target: Target, args: argparse.Namespace) -> list[UUID]:
    """Insert the workflows and their jobs (due over the window); returns the job ids."""
    user_id = uuid7()
    await pool.execute("INSERT INTO users (id, email, password) VALUES ($1, $2, 'x')", user_id,
                       f"bench-{user_id}@example.com")
    workflow_ids = [uuid7() for _ in range(args.workflows)]
    job_ids = [uuid7() for _ in range(args.workflows)]
    await pool.execute(INSERT_WORKFLOWS, workflow_ids, user_id, target.url)
    now = datetime.now(UTC).replace(tzinfo=None)
    rng = random.Random(args.seed)
    due = [now + timedelta(seconds=args.lead + rng.uniform(0, args.window)) for _ in job_ids]
    await pool.execute(INSERT_JOBS, job_ids, workflow_ids, user_id, due)
    return job_ids


async def wait_done(pool: asyncpg.Pool, reader: DispatchReader, job_ids: list[UUID],
                    args: argparse.Namespace) -> list[asyncpg.Record]:
    """Wait until every job is QUEUED (``none``) or started (else) and its record was read."""
    deadline = time.monotonic() + args.lead + args.window + args.grace
    expected = {str(j) for j in job_ids}
    while True:
        rows = await pool.fetch(SELECT_JOBS, job_ids)
        done = sum(1 for r in rows if (r["status"] == "QUEUED" if args.execution == "none"
                                       else r["started_at"] is not None))
        if (done == len(job_ids) and expected <= set(reader.arrivals)) or time.monotonic() > deadline:
            return list(rows)
        await asyncio.sleep(0.25)


def report(rows: list[asyncpg.Record], outbox_rows: Counter[str], arrivals: dict[str, list[float]],
           target: Target, args: argparse.Namespace, params: dict[str, Any]) -> None:
    queued_lat: list[float] = []
    published_lat: list[float] = []
    running_lat: list[float] = []
    lost = duplicated = 0
    executing = args.execution != "none"
    for row in rows:
        job = str(row["id"])
        scheduled = row["scheduled_at"].replace(tzinfo=UTC).timestamp()
        seen = arrivals.get(job, [])
        started = row["started_at"] is not None
        if not seen or (row["queued_at"] is None and not started) or (executing and not started):
            lost += 1
            continue
        if row["queued_at"] is not None:
            queued_lat.append((row["queued_at"] - row["scheduled_at"]).total_seconds())
        published_lat.append(min(seen) - scheduled)
        if started:
            running_lat.append((row["started_at"] - row["scheduled_at"]).total_seconds())
        duplicated += (row["dispatch_attempts"] - 1) + (outbox_rows[job] - 1) + (len(seen) - 1)
        duplicated += max(0, row["attempts"] - 1)
    # Each workflow's one job probes /probe/<n> once; more hits are runs done twice.
    duplicated += sum(max(0, hits - 1) for hits in target.hits.values())
    # A run-at-COMPLETED job is no longer QUEUED: its queued_at stays, so the stage is still measured.
    emit_latencies("due_to_queued", queued_lat, params)
    emit_latencies("due_to_published", published_lat, params)
    if executing:
        emit_latencies("due_to_running", running_lat, params)
    emit("lost_dispatches", lost, "count", params)
    emit("duplicated_dispatches", duplicated, "count", params)
    emit("too_early_dispatches", sum(1 for v in queued_lat if v < 0), "count", params)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workflows", type=int, default=1000)
    parser.add_argument("--window", type=float, default=30.0, help="seconds over which jobs come due")
    parser.add_argument("--lead", type=float, default=3.0, help="seconds before the first job is due")
    parser.add_argument("--grace", type=float, default=15.0, help="seconds to wait after the window")
    parser.add_argument("--execution", choices=("inprocess", "ray", "none"), default="inprocess",
                        help="what runs the dispatched jobs (see the module docstring)")
    parser.add_argument("--replicas", type=int, default=2, help="in-process scheduler replicas")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--settle", type=float, default=5.0, help="--execution ray: seconds after start-up")
    parser.add_argument("--worker-niceness", type=int, default=0,
                        help="--execution ray: nice value of the Ray workers (Ray's default is 15)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--use-env", action="store_true",
                        help="use the PostgreSQL/Kafka of the environment (a fresh database is NOT created)")
    args = parser.parse_args()
    if args.use_env and args.execution == "ray":
        parser.error("--use-env runs the pipeline in this process: use --execution inprocess or none")

    if args.use_env:
        asyncio.run(run(load_settings(), args))
        return 0
    with throwaway_services(SERVICES, base=load_settings()) as (settings, _spec):
        if args.execution == "ray":
            with local_ray(f"bench-dispatch-{os.getpid()}", worker_niceness=args.worker_niceness) as ray_cfg:
                asyncio.run(run(pipeline_settings(settings, ray_cfg), args))
        else:
            asyncio.run(run(settings, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
