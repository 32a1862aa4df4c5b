"""Job log delivery from an execution worker (reference §8 "Log production", SPEC §5.6).

One :class:`LogPublisher` per worker process; one :class:`JobLogWriter` per job run (the runner's
:class:`~actors.runners.context.LogSink`).

* **Durable path**: every line (retained or not) becomes a ``job_logs`` record keyed by job id, with
  the deterministic event id ``log:<job>[:attempt:<n>]:<stream>:<seq>``.  Records of all running
  jobs share one buffer, flushed when it holds ``JOB_LOG_BATCH_SIZE`` records or every
  ``JOB_LOG_BATCH_INTERVAL``; a flush is retried ``JOB_LOG_PUBLISH_RETRIES`` times with
  ``JOB_LOG_PUBLISH_BACKOFF`` between tries, each bounded by ``JOB_LOG_PUBLISH_TIMEOUT``, and
  dropped after that (logged and counted, as in the seed: a broker outage must not fail jobs).
  Flushes run one at a time, so a job's lines reach its partition in order.
* **Live path** (retained workflows only): the line is offered to a bounded queue
  (``JOB_LOG_LIVE_BUFFER_SIZE``; dropped when full) drained by one task that publishes to the
  Redis channel ``job_logs:<job_id>`` with ``JOB_LOG_LIVE_TIMEOUT``.  The Kafka record says whether
  it was live-published, so the joblogs processor live-publishes only the others (replays).
  When the job ends, :meth:`JobLogWriter.close` flushes its lines and queues an ``end`` marker
  behind them (never dropped), which SSE turns into ``event: end``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from uuid import UUID

from redis.asyncio import Redis

from domain.config import ExecutionWorkerConfig
from domain.enums import JobStatus
from domain.event_keys import log_event_key
from domain.log_lines import LiveLogMessage, LogLine, live_channel
from ingest.events import JobLogEvent
from ingest.producer import EventProducer, OutgoingRecord

log = logging.getLogger(__name__)


@dataclass
class PublisherStats:
    """Counters for metrics and tests."""

    published: int = 0
    dropped: int = 0
    live_published: int = 0
    live_dropped: int = 0


class LogPublisher:
    """Batches job log lines to Kafka and live-publishes retained ones to Redis (see module doc)."""

    def __init__(self, producer: EventProducer, redis: Redis | None,
                 cfg: ExecutionWorkerConfig) -> None:
        self._producer = producer
        self._redis = redis
        self._cfg = cfg
        self._buffer: list[OutgoingRecord] = []
        self._flush_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._live: asyncio.Queue[LiveLogMessage] = asyncio.Queue(cfg.job_log_live_buffer_size)
        self.stats = PublisherStats()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start the periodic flusher and the live publisher (call from the event loop)."""
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._flush_loop()), asyncio.create_task(self._live_loop())]

    async def stop(self) -> None:
        """Flush what is buffered, deliver queued live messages (bounded), and stop."""
        await self.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._live.join(), self._cfg.job_log_publish_timeout.total_seconds())
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []

    def writer(self, *, job_id: UUID, workflow_id: UUID, user_id: UUID, attempt: int,
               retention: bool) -> JobLogWriter:
        """A sink for one job run's lines."""
        return JobLogWriter(self, job_id=job_id, workflow_id=workflow_id, user_id=user_id, attempt=attempt,
                            retention=retention)

    # ------------------------------------------------------------------ durable path

    async def enqueue(self, record: OutgoingRecord) -> None:
        """Buffer one record; wait for a flush when the buffer is far behind (backpressure)."""
        self._buffer.append(record)
        if len(self._buffer) >= self._cfg.job_log_batch_size:
            self._wake.set()
        if len(self._buffer) >= 10 * self._cfg.job_log_batch_size:
            await self.flush()

    async def flush(self) -> None:
        """Publish everything buffered so far; returns once it was sent (or dropped)."""
        async with self._flush_lock:
            while self._buffer:
                batch = self._buffer[: self._cfg.job_log_batch_size]
                del self._buffer[: len(batch)]
                await self._send(batch)

    async def _send(self, batch: list[OutgoingRecord]) -> None:
        cfg = self._cfg
        for attempt in range(1, cfg.job_log_publish_retries + 1):
            try:
                await asyncio.wait_for(self._producer.send_batch(batch),
                                       cfg.job_log_publish_timeout.total_seconds())
                self.stats.published += len(batch)
                return
            except Exception as err:
                if attempt == cfg.job_log_publish_retries:
                    self.stats.dropped += len(batch)
                    log.error("dropping %d job log records after %d publish attempts: %s",
                              len(batch), attempt, err)
                    return
                await asyncio.sleep(cfg.job_log_publish_backoff.total_seconds())

    async def _flush_loop(self) -> None:
        interval = self._cfg.job_log_batch_interval.total_seconds()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:  # never let the flusher die; the next tick retries
                log.exception("job log flush failed")

    # ------------------------------------------------------------------ live path

    def offer_live(self, message: LiveLogMessage) -> bool:
        """Queue a line for live viewers; ``False`` (dropped) when the queue is full."""
        if self._redis is None:
            return False
        try:
            self._live.put_nowait(message)
            return True
        except asyncio.QueueFull:
            self.stats.live_dropped += 1
            return False

    async def end_live(self, message: LiveLogMessage) -> None:
        """Queue the ``end`` marker behind the job's lines (waits for room: never dropped)."""
        if self._redis is not None:
            await self._live.put(message)

    async def _live_loop(self) -> None:
        timeout = self._cfg.job_log_live_timeout.total_seconds()
        while True:
            message = await self._live.get()
            try:
                if self._redis is not None:
                    await asyncio.wait_for(
                        self._redis.publish(live_channel(message.job_id), message.model_dump_json()), timeout)
                    self.stats.live_published += 1
            except Exception as err:
                self.stats.live_dropped += 1
                log.debug("live log publish failed for job %s: %s", message.job_id, err)
            finally:
                self._live.task_done()


class JobLogWriter:
    """The :class:`~actors.runners.context.LogSink` of one job run."""

    def __init__(self, publisher: LogPublisher, *, job_id: UUID, workflow_id: UUID, user_id: UUID,
                 attempt: int, retention: bool) -> None:
        self._publisher = publisher
        self.job_id = job_id
        self.workflow_id = workflow_id
        self.user_id = user_id
        self.attempt = attempt
        self.retention = retention
        self.lines = 0

    async def write(self, line: LogLine) -> None:
        event_id = log_event_key(self.job_id, self.attempt, line.stream, line.sequence_num)
        live = self.retention and self._publisher.offer_live(LiveLogMessage.log(
            job_id=self.job_id, workflow_id=self.workflow_id, event_id=event_id, line=line))
        event = JobLogEvent(
            event_key=event_id,
            job_id=str(self.job_id),
            workflow_id=str(self.workflow_id),
            user_id=str(self.user_id),
            message=line.message,
            timestamp=line.timestamp,
            sequence_num=line.sequence_num,
            stream=line.stream,
            retention=self.retention,
            live_published=live,
            attempt=self.attempt,
        )
        self.lines += 1
        await self._publisher.enqueue(
            OutgoingRecord(topic=JobLogEvent.topic, key=event.record_key(), value=event))

    async def flush(self) -> None:
        """Make sure this run's lines were sent (before the job is settled)."""
        if self.lines:
            await self._publisher.flush()

    async def end(self, status: JobStatus) -> None:
        """Tell live viewers the job finished (after its terminal state was committed)."""
        if self.retention:
            await self._publisher.end_live(
                LiveLogMessage.end(job_id=self.job_id, workflow_id=self.workflow_id, status=status))
