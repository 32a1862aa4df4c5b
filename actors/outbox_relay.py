"""The outbox relay: publishes ``outbox_events`` rows to Kafka (reference §6.1, SPEC §5.3).

Per enabled topic (``OUTBOX_RELAY_{WORKFLOW,JOBS,ANALYTICS}_ENABLED``) a loop locks a batch of due
rows (:func:`store.outbox.claim`: at most one row per ``(topic, key)`` in flight, strict per-key
order), publishes the whole batch at once (key = ``kafka_key``, value = the stored payload JSON;
one row per key, so the order within a key cannot change) and, in the same transaction, marks
every delivered row PUBLISHED and each failed one FAILED with ``retry_backoff``, or DEAD at
``max_attempts``, in one statement.  ``processing_lease`` bounds how long a hung relay can hold
its rows (ADR 0007).  DEAD rows do not block later rows of their key, are exported as a metric and are
re-queued by ``chronoverse outbox redrive``.

A loop claims again at once after a full batch or one with a later row of one of its keys waiting
(that row is due once the batch committed), and otherwise sleeps until a ``chronoverse_outbox``
notification names its topic (then waits ``NOTIFY_COALESCE_S`` for the rest of its burst), with
``poll_interval`` as the safety net (FAILED rows come due by time, not by notification).  A cleanup
loop deletes PUBLISHED rows older than ``published_retention``.  Several replicas are safe: claims
use ``FOR UPDATE SKIP LOCKED`` and a locked row still gates the later rows of its key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Protocol
from uuid import UUID

import asyncpg
import ray
from pydantic import BaseModel, ConfigDict

from actors.lifecycle import Startup
from actors.metrics import METRICS, BackboneMetrics, report_db_pool
from domain.config import OutboxRelayConfig, PostgresConfig, Settings
from domain.enums import OutboxStatus
from ingest.producer import EventProducer, OutgoingRecord
from ingest.topics import ANALYTICS, JOBS, WORKFLOWS
from store import outbox
from store.listener import ChannelListener
from store.postgres import create_pool

log = logging.getLogger(__name__)

#: After a notification, how long to let its burst arrive before claiming: under load one claim,
#: one Kafka batch and one PUBLISHED update then cover several rows instead of one each.
NOTIFY_COALESCE_S = 0.01

OUTBOX_CHANNEL = "chronoverse_outbox"
#: ``component`` of the relay's database pool metrics.
RELAY_COMPONENT = "outbox-relay"
#: How often the backlog / DEAD gauges are refreshed.
BACKLOG_REFRESH_S = 5.0
#: Sleep cap while notifications cannot be relied on.
DEGRADED_POLL_S = 1.0


class Publisher(Protocol):
    """What the relay needs from a Kafka producer (:class:`ingest.producer.EventProducer`): publish
    a batch and report each record's outcome (an exception for the records that failed)."""

    async def send_each(self, records: Sequence[OutgoingRecord]) -> Sequence[object]: ...


def relay_worker_id(cfg: OutboxRelayConfig, name: str) -> str:
    """The relay replica's id (``OUTBOX_RELAY_WORKER_ID`` plus the replica name): the
    ``application_name`` of its connections, so ``pg_stat_activity`` / ``pg_locks`` show which
    relay holds which outbox rows."""
    return f"{cfg.worker_id}:{name}" if cfg.worker_id != name else name


def relayed_topics(cfg: OutboxRelayConfig) -> list[str]:
    """The topics whose relaying is enabled."""
    enabled = {WORKFLOWS: cfg.workflow_enabled, JOBS: cfg.jobs_enabled, ANALYTICS: cfg.analytics_enabled}
    return [topic for topic, on in enabled.items() if on]


class BatchResult(BaseModel):
    """How one claimed batch ended."""

    model_config = ConfigDict(frozen=True)

    topic: str
    claimed: int
    published: int
    failed: int
    dead: int
    more: bool  # rows of its keys (or beyond a full batch) may be due now: claim again at once


class RelayStats(BaseModel):
    name: str
    running: bool
    listening: bool
    topics: list[str]
    published: int
    failed: int
    dead: int
    cleaned: int
    backlog: dict[str, dict[str, int]]


class OutboxRelay:
    """Relay loops for every enabled topic.  ``pool`` and ``producer`` are owned by the caller."""

    def __init__(
        self,
        cfg: OutboxRelayConfig,
        pool: asyncpg.Pool,
        producer: Publisher,
        *,
        listen: PostgresConfig | None = None,
        name: str = "outbox-relay",
        metrics: BackboneMetrics = METRICS,
    ) -> None:
        self.cfg = cfg
        self.pool = pool
        self.producer = producer
        self.name = name
        self.metrics = metrics
        self.topics = relayed_topics(cfg)
        self._wake = {topic: asyncio.Event() for topic in self.topics}
        self._listener = (
            ChannelListener(listen, [OUTBOX_CHANNEL], self._on_notify, application_name=f"{name}-listen")
            if listen is not None
            else None
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._published = self._failed = self._dead = self._cleaned = 0
        self._backlog: dict[str, dict[str, int]] = {}

    def _on_notify(self, _channel: str, payload: str | None) -> None:
        if payload is None:  # (re)connected: anything may have been missed
            for event in self._wake.values():
                event.set()
            return
        topic_wake = self._wake.get(payload)
        if topic_wake is not None:
            topic_wake.set()

    def wake(self, topic: str | None = None) -> None:
        """Claim now (one topic, or all)."""
        self._on_notify(OUTBOX_CHANNEL, topic)

    async def relay_once(self, topic: str) -> BatchResult:
        """Claim one batch of ``topic``, publish it and settle every row, in one transaction."""
        async with outbox.claim(self.pool, topic=topic, batch_size=self.cfg.batch_size,
                                hold_limit=self.cfg.processing_lease) as held:
            rows = held.rows
            if not rows:
                return BatchResult(topic=topic, claimed=0, published=0, failed=0, dead=0, more=False)
            failures = await self._publish(rows)
            settled = await held.settle(failures, max_attempts=self.cfg.max_attempts,
                                        retry_backoff=self.cfg.retry_backoff)
        # Counted and logged once committed: only then did the rows change.
        published = sum(1 for status in settled.values() if status is OutboxStatus.PUBLISHED)
        dead = sum(1 for status in settled.values() if status is OutboxStatus.DEAD)
        failed = len(settled) - published - dead
        for row in rows:
            if row.id in failures:
                self._log_failure(row, settled.get(row.id), failures[row.id])
        self._published += published
        self._failed += failed
        self._dead += dead
        self.metrics.outbox_published(topic, published)
        self.metrics.outbox_failed(topic, failed + dead)
        return BatchResult(topic=topic, claimed=len(rows), published=published, failed=failed, dead=dead,
                           more=held.more)

    async def _publish(self, rows: Sequence[outbox.OutboxRow]) -> dict[UUID, str]:
        """Publish a batch at once (it holds at most one row per key, so per-key order is kept);
        returns the error of each row that was not delivered."""
        records = [OutgoingRecord(topic=r.topic, key=r.kafka_key, value=r.kafka_value()) for r in rows]
        outcomes: Sequence[object]
        try:
            async with asyncio.timeout(self.cfg.context_timeout.total_seconds()):
                outcomes = await self.producer.send_each(records)
        except Exception as err:  # timed out (or the producer broke): every row of the batch failed
            outcomes = [err] * len(rows)
        return {row.id: f"{type(out).__name__}: {out}"
                for row, out in zip(rows, outcomes, strict=True) if isinstance(out, BaseException)}

    def _log_failure(self, row: outbox.OutboxRow, status: OutboxStatus | None, error: str) -> None:
        attempt = row.attempts + 1
        if status is OutboxStatus.DEAD:
            log.error("%s: outbox row %s (%s, key %s) is DEAD after %d attempts: %s",
                      self.name, row.id, row.event_key, row.kafka_key, attempt, error)
        else:
            log.warning("%s: publishing %s failed (attempt %d): %s", self.name, row.event_key, attempt, error)

    async def cleanup_once(self) -> int:
        """Delete PUBLISHED rows past the retention, batch by batch; return how many."""
        total = 0
        while True:
            n = await outbox.cleanup_published(
                self.pool, retention=self.cfg.published_retention, batch_size=self.cfg.cleanup_batch_size
            )
            total += n
            if n < self.cfg.cleanup_batch_size:
                break
        self._cleaned += total
        return total

    async def refresh_backlog(self) -> dict[str, dict[str, int]]:
        self._backlog = await outbox.backlog(self.pool)
        self.metrics.outbox_backlog(self._backlog, self.topics)
        return self._backlog

    def _cap(self) -> float:
        poll = self.cfg.poll_interval.total_seconds()
        if self._listener is None or self._listener.connected:
            return poll
        return min(poll, DEGRADED_POLL_S)

    async def _topic_loop(self, topic: str) -> None:
        wake = self._wake[topic]
        while True:
            wake.clear()
            try:
                if (await self.relay_once(topic)).more:
                    continue
            except Exception:
                log.exception("%s: relaying %s failed", self.name, topic)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self._cap())
                await asyncio.sleep(NOTIFY_COALESCE_S)  # woken, not timed out

    async def _cleanup_loop(self) -> None:
        while True:
            try:
                removed = await self.cleanup_once()
                if removed:
                    log.info("%s: deleted %d published outbox rows", self.name, removed)
            except Exception:
                log.exception("%s: outbox cleanup failed", self.name)
            await asyncio.sleep(self.cfg.cleanup_interval.total_seconds())

    async def _backlog_loop(self) -> None:
        while True:
            try:
                await self.refresh_backlog()
            except Exception:
                log.warning("%s: reading the outbox backlog failed", self.name, exc_info=True)
            await asyncio.sleep(BACKLOG_REFRESH_S)

    def start(self) -> None:
        """Start every loop on the running event loop."""
        if self._tasks:
            return
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._topic_loop(t), name=f"{self.name}:{t}") for t in self.topics]
        self._tasks.append(loop.create_task(self._backlog_loop()))
        if self.cfg.cleanup_enabled:
            self._tasks.append(loop.create_task(self._cleanup_loop()))
        if self._listener is not None:
            self._tasks.append(loop.create_task(self._listener.run()))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stats(self) -> RelayStats:
        return RelayStats(
            name=self.name,
            running=bool(self._tasks) and not all(t.done() for t in self._tasks),
            listening=self._listener is not None and self._listener.connected,
            topics=self.topics,
            published=self._published,
            failed=self._failed,
            dead=self._dead,
            cleaned=self._cleaned,
            backlog=self._backlog,
        )


@ray.remote
class OutboxRelayActor:
    """Ray shell: one relay replica (``outbox-relay-<i>``) with its own pool and producer."""

    def __init__(self, settings: Settings, name: str) -> None:
        self.settings = settings
        self.name = name
        self.relay: OutboxRelay | None = None
        self._pool: asyncpg.Pool | None = None
        self._producer: EventProducer | None = None
        self._reporter: asyncio.Task[None] | None = None
        self._startup = Startup(self._start)

    async def _start(self) -> None:
        self._pool = await create_pool(
            self.settings.postgres, min_size=1, max_size=4,
            application_name=relay_worker_id(self.settings.outbox, self.name),
        )
        self._producer = EventProducer(self.settings.kafka, client_id=self.name)
        await self._producer.start()
        self.relay = OutboxRelay(
            self.settings.outbox, self._pool, self._producer, listen=self.settings.postgres, name=self.name
        )
        self.relay.start()
        self._reporter = asyncio.create_task(report_db_pool(RELAY_COMPONENT, self._pool))

    async def ready(self) -> bool:
        await self._startup.wait()
        return True

    async def stats(self) -> RelayStats:
        await self._startup.wait()
        assert self.relay is not None
        return self.relay.stats()

    async def shutdown(self) -> None:
        if self._reporter is not None:
            self._reporter.cancel()
        if self.relay is not None:
            await self.relay.stop()
        if self._producer is not None:
            await self._producer.stop()
        if self._pool is not None:
            await self._pool.close()
