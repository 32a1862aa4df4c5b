"""Backbone metrics as ``ray.util.metrics`` (SPEC §7): pool size / busy / queue depth / in flight,
outbox backlog and DEAD rows, dispatch latency (due → QUEUED, due → RUNNING), consumer lag, job
outcomes and database pool saturation (the names the Grafana dashboard in ``deploy/grafana`` reads).

Ray exports them on the metrics agent (names get a ``ray_`` prefix, counters a ``_total`` suffix;
ray-notes §5).  The plain classes (scheduler, relay, pool router) record through
:data:`METRICS`; outside a Ray worker — integration tests, the CLI — recording is a no-op, so the
same code runs with and without a cluster.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg

from store.postgres import pool_saturation

log = logging.getLogger(__name__)

#: How often :func:`report_db_pool` samples a connection pool.
DB_POOL_REPORT_S = 5.0

#: Histogram boundaries for dispatch latency in seconds (SPEC §8: p50 ≤ 0.25 s, p99 ≤ 1 s).
LATENCY_BOUNDARIES = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]


class BackboneMetrics:
    """Lazily created Ray metrics; every method is a no-op when Ray is not initialised."""

    def __init__(self) -> None:
        self._made: dict[str, Any] = {}
        self._disabled = False

    def _metric(self, name: str) -> Any | None:
        if self._disabled:
            return None
        metric = self._made.get(name)
        if metric is not None:
            return metric
        try:
            import ray
            from ray.util.metrics import Counter, Gauge, Histogram

            if not ray.is_initialized():
                return None
            factories = {
                "pool_size": lambda: Gauge("chronoverse_pool_size", "Actors in a pool", tag_keys=("pool",)),
                "pool_busy": lambda: Gauge(
                    "chronoverse_pool_busy_actors", "Pool actors with work in flight", tag_keys=("pool",)
                ),
                "pool_queue": lambda: Gauge(
                    "chronoverse_pool_queue_depth", "Records waiting for a pool actor", tag_keys=("pool",)
                ),
                "pool_in_flight": lambda: Gauge(
                    "chronoverse_pool_in_flight", "Records being handled by a pool", tag_keys=("pool",)
                ),
                "outbox_backlog": lambda: Gauge(
                    "chronoverse_outbox_backlog", "Unpublished outbox rows", tag_keys=("topic", "status")
                ),
                "outbox_dead": lambda: Gauge(
                    "chronoverse_outbox_dead_rows", "DEAD outbox rows (redrive them)", tag_keys=("topic",)
                ),
                "outbox_published": lambda: Counter(
                    "chronoverse_outbox_published", "Outbox rows published", tag_keys=("topic",)
                ),
                "outbox_failed": lambda: Counter(
                    "chronoverse_outbox_publish_failures", "Failed outbox publishes", tag_keys=("topic",)
                ),
                "dispatch_latency": lambda: Histogram(
                    "chronoverse_dispatch_latency_seconds",
                    "Due time to QUEUED",
                    boundaries=LATENCY_BOUNDARIES,
                    tag_keys=("stage",),
                ),
                "dispatched": lambda: Counter(
                    "chronoverse_jobs_dispatched", "Dispatch attempts written", tag_keys=("kind",)
                ),
                "consumer_lag": lambda: Gauge(
                    "chronoverse_consumer_lag",
                    "Records behind the high watermark",
                    tag_keys=("group", "topic", "partition"),
                ),
                "job_outcomes": lambda: Counter(
                    "chronoverse_job_outcomes",
                    "Job runs settled by the execution workers (COMPLETED, FAILED, CANCELED, RETRY)",
                    tag_keys=("kind", "status"),
                ),
                "db_pool_in_use": lambda: Gauge(
                    "chronoverse_db_pool_in_use", "PostgreSQL connections checked out",
                    tag_keys=("component",),
                ),
                "db_pool_size": lambda: Gauge(
                    "chronoverse_db_pool_size", "PostgreSQL pool maximum size", tag_keys=("component",)
                ),
            }
            metric = factories[name]()
        except Exception:  # metrics must never break the work they observe
            log.warning("metrics disabled: cannot create %s", name, exc_info=True)
            self._disabled = True
            return None
        self._made[name] = metric
        return metric

    def _gauge(self, name: str, value: float, tags: dict[str, str]) -> None:
        metric = self._metric(name)
        if metric is not None:
            metric.set(value, tags=tags)

    def pool(self, pool: str, *, size: int, busy: int, queue_depth: int, in_flight: int) -> None:
        tags = {"pool": pool}
        self._gauge("pool_size", size, tags)
        self._gauge("pool_busy", busy, tags)
        self._gauge("pool_queue", queue_depth, tags)
        self._gauge("pool_in_flight", in_flight, tags)

    def outbox_backlog(self, counts: dict[str, dict[str, int]], topics: list[str]) -> None:
        """Per topic and status; topics without rows are reported as zeros."""
        for topic in topics:
            by_status = counts.get(topic, {})
            for status in ("PENDING", "PROCESSING", "FAILED", "DEAD"):
                self._gauge("outbox_backlog", by_status.get(status, 0), {"topic": topic, "status": status})
            self._gauge("outbox_dead", by_status.get("DEAD", 0), {"topic": topic})

    def outbox_published(self, topic: str, n: int) -> None:
        metric = self._metric("outbox_published")
        if metric is not None and n:
            metric.inc(n, tags={"topic": topic})

    def outbox_failed(self, topic: str, n: int) -> None:
        metric = self._metric("outbox_failed")
        if metric is not None and n:
            metric.inc(n, tags={"topic": topic})

    def dispatch_latency(self, seconds: float, *, stage: str = "queued") -> None:
        metric = self._metric("dispatch_latency")
        if metric is not None:
            metric.observe(max(0.0, seconds), tags={"stage": stage})

    def dispatched(self, n: int, *, kind: str) -> None:
        """``kind`` is ``first`` (PENDING → QUEUED) or ``redispatch`` (stale QUEUED)."""
        metric = self._metric("dispatched")
        if metric is not None and n:
            metric.inc(n, tags={"kind": kind})

    def consumer_lag(self, group: str, topic: str, partition: int, lag: int) -> None:
        self._gauge("consumer_lag", lag, {"group": group, "topic": topic, "partition": str(partition)})

    def job_outcome(self, kind: str, status: str) -> None:
        """One settled run: ``status`` is the job's new state (``COMPLETED``, ``FAILED``,
        ``CANCELED``) or ``RETRY`` (released for a system retry); ``kind`` the workflow kind."""
        metric = self._metric("job_outcomes")
        if metric is not None:
            metric.inc(1, tags={"kind": str(kind), "status": str(status)})

    def db_pool(self, component: str, pool: asyncpg.Pool) -> None:
        """Connections in use and the maximum size of ``component``'s pool (saturation = ratio)."""
        size = pool.get_max_size()
        self._gauge("db_pool_in_use", round(pool_saturation(pool) * size), {"component": component})
        self._gauge("db_pool_size", size, {"component": component})


async def report_db_pool(component: str, pool: asyncpg.Pool, *, every_s: float = DB_POOL_REPORT_S,
                         metrics: BackboneMetrics | None = None) -> None:
    """Sample ``pool`` into the DB pool gauges until cancelled (run it as a task beside the pool)."""
    while True:
        try:
            (metrics or METRICS).db_pool(component, pool)
        except Exception:  # a closed pool or a metrics hiccup must not kill the owner
            log.debug("db pool sample of %s failed", component, exc_info=True)
        await asyncio.sleep(every_s)


#: The process-wide instance.
METRICS = BackboneMetrics()
