"""The partition runner (reference §6.5): a consumer-group member that feeds each assigned
partition through its own *lane* and commits only finished work.

A lane is an asyncio task with a queue.  Records of a partition are handled in offset order (up to
``max_in_flight_per_lane`` units at once, started in order; the default 1 is strictly sequential), and
the lane commits the offset after the contiguous prefix of finished records.  With more than one
unit in flight, per-key order still holds: a unit does not start while an earlier unit holding a
record with one of its keys is in flight, and the lane never starts a record ``lane_capacity``
or more past its finished prefix (so a record stuck in retries bounds what a restart redelivers).
The outcome of each handler call follows :mod:`domain.commit_policy`:

* success, a ``retryable=False`` error or an undecodable payload → the record counts as finished;
* a retryable error or any unexpected exception → the same record is retried in place with
  backoff (1 s doubling to 30 s).  Its lane's commits stop advancing (with one unit in flight the
  lane stops; with more, later records run until the capacity window is reached), its queue fills
  up to ``lane_capacity`` and fetching of that partition pauses; other partitions keep flowing.

Fetching of a partition is paused while its queue holds ≥ ``lane_capacity`` records and resumed
at ≤ ``resume_at``.  Commits that fail are retried with the same backoff, never by re-running the
handler.  Commits of a partition are at least ``KAFKA_COMMIT_INTERVAL`` apart (work finished
meanwhile is covered by the next one; handlers are idempotent, so a crash replays at most that
window).  On revoke (or loss) the partition's lane is cancelled; finished work is committed once
while the partition is still ours, and the lane itself can never commit again (epoch check).

Offsets are committed manually (auto-commit off) and a new group starts at the *earliest* offset:
tansu answers "latest" with a wrong offset (infra-notes §1a.2).  For the same reason :meth:`lag`
uses the fetch high-watermark, never ``end_offsets``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import ConsumerStoppedError, KafkaError
from aiokafka.structs import ConsumerRecord
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import AttributeValue
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from domain.commit_policy import OffsetTracker, RetryBackoff, is_retryable, may_commit, retry_delay
from domain.config import KafkaConfig
from domain.errors import Invalid, Unavailable
from ingest.connection import connection_options

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


class ConsumedRecord(BaseModel):
    """A record as handed to handlers (and across Ray): where it came from and its raw bytes."""

    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    offset: int
    key: str | None = None
    value: bytes = b""
    headers: list[tuple[str, bytes]] = Field(default_factory=list)
    timestamp_ms: int = 0

    @classmethod
    def from_kafka(cls, record: ConsumerRecord[bytes, bytes]) -> ConsumedRecord:
        """Copy an aiokafka record (keys are UTF-8 text by our producers' convention)."""
        # Trusted client data on the hot path: construct without re-validating.
        return cls.model_construct(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key.decode(errors="replace") if record.key is not None else None,
            value=record.value or b"",
            headers=[(name, bytes(value)) for name, value in (record.headers or ())],
            timestamp_ms=record.timestamp,
        )

    def decode(self, model: type[M]) -> M:
        """Parse the value as ``model``.  Undecodable payloads raise :class:`~domain.errors.Invalid`,
        which the commit policy skips (replaying them could never succeed)."""
        try:
            return model.model_validate_json(self.value)
        except ValidationError as err:
            raise Invalid(
                f"undecodable {self.topic} record {self.partition}:{self.offset} as {model.__name__}: "
                f"{err.errors()[0]['msg'] if err.errors() else err}"
            ) from err

    def header(self, name: str) -> str | None:
        """The last value of header ``name`` as text, or None."""
        found = None
        for key, value in self.headers:
            if key == name:
                found = value.decode(errors="replace")
        return found

    def trace_carrier(self) -> dict[str, str]:
        """Headers as a text carrier for OpenTelemetry propagation."""
        return {key: value.decode(errors="replace") for key, value in self.headers}


Handler = Callable[[list[ConsumedRecord]], Awaitable[None]]
"""``async def handler(records)``: one record, or up to ``batch_size`` records in batch mode."""


class LaneStats(BaseModel):
    """One assigned partition."""

    partition: int
    epoch: int
    depth: int  # records fetched and waiting in the lane
    in_flight: int  # handler calls running or backing off
    paused: bool  # fetching paused because the lane is full
    processed: int
    retries: int
    skipped: int  # records committed after a permanent error
    committed: int | None  # last committed offset (the next record to read)


class ConsumerStats(BaseModel):
    """A snapshot for ``chronoverse status``, the pool autoscaler and tests."""

    topic: str
    group_id: str
    running: bool
    assigned: list[int]
    lanes: list[LaneStats]
    processed: int
    retries: int
    skipped: int
    in_flight: int
    depth: int


@dataclass(eq=False)
class _Lane:
    tp: TopicPartition
    epoch: int
    slots: asyncio.Semaphore
    queue: asyncio.Queue[ConsumedRecord] = field(default_factory=asyncio.Queue)
    tracker: OffsetTracker = field(default_factory=OffsetTracker)
    commit_wanted: asyncio.Event = field(default_factory=asyncio.Event)
    handlers: set[asyncio.Task[None]] = field(default_factory=set)
    backing_off: set[asyncio.Task[None]] = field(default_factory=set)
    runner: asyncio.Task[None] | None = None
    committer: asyncio.Task[None] | None = None
    keys_in_flight: Counter[str] = field(default_factory=Counter)
    settled: asyncio.Event = field(default_factory=asyncio.Event)  # a unit finished: re-check the gates
    paused: bool = False
    start_offset: int | None = None  # first offset fetched for this lane
    committed: int | None = None
    processed: int = 0
    retries: int = 0
    skipped: int = 0

    def tasks(self) -> list[asyncio.Task[None]]:
        own = [t for t in (self.runner, self.committer) if t is not None]
        return own + list(self.handlers)


class _Listener(ConsumerRebalanceListener):
    def __init__(self, owner: PartitionedConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._owner._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._owner._on_assigned(assigned)


class PartitionedConsumer:
    """A consumer-group member for one topic with one lane per assigned partition.

    ``handler`` gets a list of records: exactly one unless ``batch_size`` > 1, in which case a lane
    gathers up to ``batch_size`` records, waiting at most ``batch_wait`` seconds after the first.
    A batch is retried and committed as a whole.

    ``drain_timeout`` bounds how long :meth:`stop` waits for in-flight handler calls;
    ``revoke_timeout`` how long a rebalance waits for cancelled ones (a handler that ignores
    cancellation is abandoned, and its lane can no longer commit).  ``backoff`` is the retry and
    commit-retry schedule (reference: 1 s doubling to 30 s).
    """

    def __init__(
        self,
        cfg: KafkaConfig,
        topic: str,
        group_id: str,
        handler: Handler,
        *,
        lane_capacity: int = 1024,
        resume_at: int = 512,
        batch_size: int = 1,
        batch_wait: float = 0.0,
        max_in_flight_per_lane: int = 1,
        backoff: RetryBackoff | None = None,
        drain_timeout: float = 30.0,
        revoke_timeout: float = 5.0,
        client_id: str | None = None,
        tracer: trace.Tracer | None = None,
    ) -> None:
        if not 0 <= resume_at < lane_capacity:
            raise ValueError("need 0 <= resume_at < lane_capacity")
        if batch_size < 1 or batch_wait < 0 or max_in_flight_per_lane < 1:
            raise ValueError("batch_size and max_in_flight_per_lane must be >= 1, batch_wait >= 0")
        self.topic = topic
        self.group_id = group_id
        self._cfg = cfg
        self._handler = handler
        self._capacity = lane_capacity
        self._resume_at = resume_at
        self._batch_size = batch_size
        self._batch_wait = batch_wait
        self._max_in_flight = max_in_flight_per_lane
        self._backoff = backoff or RetryBackoff()
        self._drain_timeout = drain_timeout
        self._revoke_timeout = revoke_timeout
        self._client_id = client_id or f"{group_id}-{topic}"
        self._tracer = tracer or trace.get_tracer(__name__)
        self._consumer: AIOKafkaConsumer | None = None
        self._fetcher: asyncio.Task[None] | None = None
        self._lanes: dict[int, _Lane] = {}
        self._epoch = 0
        self._revoking = False
        self._stopping = False
        self._retired = _Totals()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Join the group and start fetching; returns once the first assignment arrived.
        Raises :class:`~domain.errors.Unavailable` if the broker cannot be reached (start may be
        called again, also after :meth:`stop`)."""
        if self._consumer is not None:
            raise RuntimeError("PartitionedConsumer already started")
        self._stopping = False
        consumer = AIOKafkaConsumer(
            **connection_options(self._cfg, client_id=self._client_id),
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(self._cfg.session_timeout.total_seconds() * 1000),
            heartbeat_interval_ms=int(self._cfg.heartbeat_interval.total_seconds() * 1000),
            fetch_max_wait_ms=max(1, int(self._cfg.fetch_max_wait.total_seconds() * 1000)),
        )
        consumer.subscribe([self.topic], listener=_Listener(self))
        # Set before start(): the first assignment's listener runs inside it.
        self._consumer = consumer
        try:
            await consumer.start()
        except BaseException as err:  # also cancellation: never leak a half-started client
            self._consumer = None
            with contextlib.suppress(Exception):
                await consumer.stop()
            for lane in self._lanes.values():
                for task in lane.tasks():
                    task.cancel()
            self._lanes.clear()
            if isinstance(err, KafkaError):
                raise Unavailable(f"kafka at {self._cfg.brokers}: {err}") from err
            raise
        self._fetcher = asyncio.create_task(self._fetch_loop(), name=f"fetch-{self._client_id}")

    async def stop(self) -> None:
        """Graceful stop: no new records start, in-flight handler calls finish (up to
        ``drain_timeout``; calls waiting to retry are abandoned uncommitted), finished work is
        committed, then the consumer leaves the group so its partitions move at once."""
        consumer = self._consumer
        if consumer is None or self._stopping:
            return
        self._stopping = True
        if self._fetcher is not None:
            await _cancel(self._fetcher)
        lanes = list(self._lanes.values())
        for lane in lanes:
            if lane.runner is not None:
                await _cancel(lane.runner)
            for task in list(lane.backing_off):
                task.cancel()
        in_flight = [task for lane in lanes for task in lane.handlers]
        if in_flight:
            _, late = await asyncio.wait(in_flight, timeout=self._drain_timeout)
            for task in late:
                log.warning("%s: handler still running after %.1fs drain; abandoning it uncommitted",
                            self._client_id, self._drain_timeout)
                task.cancel()
        for lane in lanes:
            if lane.committer is not None:
                await _cancel(lane.committer)
            await self._final_commit(lane)
        self._lanes.clear()
        for lane in lanes:
            self._retired.add(lane)
        with contextlib.suppress(KafkaError):
            await consumer.stop()
        self._consumer = None

    @property
    def running(self) -> bool:
        """Started, not stopping, and the fetch loop is alive."""
        fetching = self._fetcher is not None and not self._fetcher.done()
        return self._consumer is not None and not self._stopping and fetching

    # ------------------------------------------------------------------ observability

    def assigned_partitions(self) -> list[int]:
        """Partitions this member currently holds a lane for."""
        return sorted(self._lanes)

    def lag(self) -> dict[int, int]:
        """Records not yet committed, per assigned partition: fetch high-watermark minus the
        committed offset (or, before the first commit, the first offset fetched).

        The high-watermark comes from fetch responses (correct on tansu, unlike ListOffsets); it is
        unknown until the first fetch of a partition returns, and stale while the partition is
        paused — then the lane already holds ``lane_capacity`` records, so lag is large anyway.
        """
        consumer = self._consumer
        out: dict[int, int] = {}
        if consumer is None:
            return out
        for partition, lane in self._lanes.items():
            try:
                highwater = consumer.highwater(lane.tp)
            except (AssertionError, KafkaError):  # revoked between our bookkeeping and the client's
                continue
            base = lane.committed if lane.committed is not None else lane.start_offset
            if highwater is None or base is None:
                out[partition] = 0
            else:
                out[partition] = max(0, highwater - base)
        return out

    def stats(self) -> ConsumerStats:
        """Counters since start (including lanes of partitions since revoked)."""
        lanes = [
            LaneStats(
                partition=p,
                epoch=lane.epoch,
                depth=lane.queue.qsize(),
                in_flight=len(lane.handlers),
                paused=lane.paused,
                processed=lane.processed,
                retries=lane.retries,
                skipped=lane.skipped,
                committed=lane.committed,
            )
            for p, lane in sorted(self._lanes.items())
        ]
        return ConsumerStats(
            topic=self.topic,
            group_id=self.group_id,
            running=self.running,
            assigned=sorted(self._lanes),
            lanes=lanes,
            processed=self._retired.processed + sum(lane.processed for lane in lanes),
            retries=self._retired.retries + sum(lane.retries for lane in lanes),
            skipped=self._retired.skipped + sum(lane.skipped for lane in lanes),
            in_flight=sum(lane.in_flight for lane in lanes),
            depth=sum(lane.depth for lane in lanes),
        )

    # ------------------------------------------------------------------ rebalancing

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        self._revoking = True
        for tp in revoked:
            lane = self._lanes.pop(tp.partition, None)
            if lane is None:
                continue
            # Popped first: from here on the lane is not the owner and its own commits are refused.
            tasks = lane.tasks()
            for task in tasks:
                task.cancel()
            if tasks:
                # A handler that swallows cancellation must not hold up the whole group's rebalance.
                await asyncio.wait(tasks, timeout=self._revoke_timeout)
            # The partition is still ours until the rejoin: hand over the finished prefix once.
            await self._commit_once(lane)
            self._retired.add(lane)
            log.info("%s: partition %d revoked (epoch %d)", self._client_id, tp.partition, lane.epoch)

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._revoking = False
        if self._stopping:
            return
        for tp in sorted(assigned, key=lambda tp: tp.partition):
            if tp.topic != self.topic or tp.partition in self._lanes:
                continue
            self._epoch += 1
            lane = _Lane(tp=tp, epoch=self._epoch, slots=asyncio.Semaphore(self._max_in_flight))
            lane.runner = asyncio.create_task(self._run_lane(lane), name=f"lane-{self.topic}-{tp.partition}")
            lane.committer = asyncio.create_task(self._commit_loop(lane))
            self._lanes[tp.partition] = lane
            log.info("%s: partition %d assigned (epoch %d)", self._client_id, tp.partition, lane.epoch)

    def _owns(self, lane: _Lane) -> bool:
        current = self._lanes.get(lane.tp.partition)
        return may_commit(lane.epoch, current.epoch if current is not None else None)

    # ------------------------------------------------------------------ fetching

    async def _fetch_loop(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        failures = 0
        while True:
            try:
                # Called continuously, even with every partition paused: aiokafka leaves the group
                # when getmany is not called for max_poll_interval.
                batches = await consumer.getmany(timeout_ms=200, max_records=min(500, self._capacity))
            except ConsumerStoppedError:
                return
            except Exception as err:
                # A dead fetch loop would look like an idle consumer: log, back off, keep going.
                failures += 1
                delay = self._backoff.delay(failures)
                log.warning("%s: fetch failed (%r); retrying in %.1fs", self._client_id, err, delay)
                await asyncio.sleep(delay)
                continue
            failures = 0
            for tp, records in batches.items():
                if records:
                    self._route(consumer, tp, records)

    def _route(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]
    ) -> None:
        lane = self._lanes.get(tp.partition)
        if lane is None or self._revoking:
            # No lane: the partition is being revoked, or was assigned a moment before our listener
            # ran.  Rewind so these records are fetched again by whoever owns the partition next
            # (a revoked assignment is discarded anyway, so the seek is harmless there).
            with contextlib.suppress(KafkaError, AssertionError):
                if tp in consumer.assignment():
                    consumer.seek(tp, records[0].offset)
            return
        if lane.start_offset is None:
            lane.start_offset = records[0].offset
        for record in records:
            lane.queue.put_nowait(ConsumedRecord.from_kafka(record))
        if not lane.paused and lane.queue.qsize() >= self._capacity:
            with contextlib.suppress(KafkaError):
                consumer.pause(tp)
                lane.paused = True

    def _maybe_resume(self, lane: _Lane) -> None:
        if lane.paused and lane.queue.qsize() <= self._resume_at and self._consumer is not None:
            lane.paused = False
            if self._owns(lane):
                with contextlib.suppress(KafkaError):
                    self._consumer.resume(lane.tp)

    # ------------------------------------------------------------------ lanes

    async def _next_batch(self, lane: _Lane) -> list[ConsumedRecord]:
        batch = [await lane.queue.get()]
        if self._batch_size == 1:
            return batch
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._batch_wait
        while len(batch) < self._batch_size:
            try:
                batch.append(lane.queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(lane.queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _run_lane(self, lane: _Lane) -> None:
        while True:
            await lane.slots.acquire()
            try:
                batch = await self._next_batch(lane)
                self._maybe_resume(lane)
                if self._max_in_flight > 1:
                    await self._wait_turn(lane, batch)
            except BaseException:
                lane.slots.release()
                raise
            keys = [record.key for record in batch if record.key is not None]
            lane.keys_in_flight.update(keys)
            lane.tracker.dispatched(batch[-1].offset + 1)
            task = asyncio.create_task(self._handle(lane, batch, keys))
            lane.handlers.add(task)
            task.add_done_callback(lane.handlers.discard)

    async def _wait_turn(self, lane: _Lane, batch: list[ConsumedRecord]) -> None:
        """With several units in flight: wait until no unit in flight holds one of ``batch``'s keys
        (per-key order) and the lane is less than ``lane_capacity`` records ahead of its finished
        prefix."""
        while True:
            done = lane.tracker.watermark if lane.tracker.watermark is not None else lane.start_offset
            # From the unit's first record: once everything before it finished, it may always start.
            ahead = batch[0].offset - done if done is not None else 0
            busy = any(lane.keys_in_flight[r.key] for r in batch if r.key is not None)
            if not busy and (ahead < self._capacity or not lane.handlers):
                return
            lane.settled.clear()
            await lane.settled.wait()

    async def _handle(self, lane: _Lane, batch: list[ConsumedRecord], keys: list[str]) -> None:
        me = asyncio.current_task()
        assert me is not None
        attempt = 0
        try:
            while True:
                try:
                    await self._invoke(batch)
                except Exception as err:
                    if not is_retryable(err):
                        lane.skipped += len(batch)
                        log.warning("%s: skipping %s %d:%d-%d after a permanent error: %s",
                                    self._client_id, self.topic, lane.tp.partition,
                                    batch[0].offset, batch[-1].offset, err)
                        break
                    if self._stopping:
                        return  # not finished, so not committed: the next owner redelivers it
                    attempt += 1
                    lane.retries += 1
                    delay = retry_delay(err, attempt, self._backoff)
                    log.warning("%s: %s %d:%d failed (attempt %d: %r); retrying in %.1fs",
                                self._client_id, self.topic, lane.tp.partition, batch[0].offset,
                                attempt, err, delay)
                    lane.backing_off.add(me)
                    try:
                        await asyncio.sleep(delay)
                    finally:
                        lane.backing_off.discard(me)
                    continue
                lane.processed += len(batch)
                break
            if lane.tracker.finished(batch[-1].offset + 1) is not None:
                lane.commit_wanted.set()
        finally:
            lane.keys_in_flight.subtract(keys)
            lane.keys_in_flight += Counter()  # drop the keys that reached zero
            lane.settled.set()
            lane.slots.release()

    async def _invoke(self, batch: list[ConsumedRecord]) -> None:
        first = batch[0]
        parent = propagate.extract(first.trace_carrier())
        links = []
        for record in batch[1:]:
            context = trace.get_current_span(propagate.extract(record.trace_carrier())).get_span_context()
            if context.is_valid:
                links.append(Link(context))
        attributes: dict[str, AttributeValue] = {
            "messaging.system": "kafka",
            "messaging.operation": "process",
            "messaging.destination.name": self.topic,
            "messaging.consumer.group.name": self.group_id,
            "messaging.destination.partition.id": str(first.partition),
            "messaging.kafka.offset": first.offset,
            "messaging.batch.message_count": len(batch),
        }
        with self._tracer.start_as_current_span(
            f"process {self.topic}", context=parent, kind=SpanKind.CONSUMER, links=links,
            attributes=attributes,
        ):
            await self._handler(batch)

    # ------------------------------------------------------------------ commits

    async def _commit_loop(self, lane: _Lane) -> None:
        failures = 0
        while True:
            await lane.commit_wanted.wait()
            lane.commit_wanted.clear()
            while self._owns(lane):
                target = lane.tracker.watermark
                if target is None or (lane.committed is not None and target <= lane.committed):
                    break
                try:
                    await self._commit(lane, target)
                except (KafkaError, ConsumerStoppedError) as err:
                    failures += 1
                    delay = self._backoff.delay(failures)
                    log.warning("%s: commit of %s %d@%d failed (%s); retrying in %.1fs",
                                self._client_id, self.topic, lane.tp.partition, target, err, delay)
                    await asyncio.sleep(delay)
                    continue
                failures = 0
                # Let finished work pile up behind this commit (KAFKA_COMMIT_INTERVAL); the final
                # commit on revoke/stop does not wait for it.
                await asyncio.sleep(self._cfg.commit_interval.total_seconds())

    async def _commit(self, lane: _Lane, offset: int) -> None:
        consumer = self._consumer
        if consumer is None:
            raise ConsumerStoppedError()
        await consumer.commit({lane.tp: offset})
        lane.committed = offset

    async def _commit_once(self, lane: _Lane) -> None:
        """Commit a retiring lane's finished prefix once (used while the partition is still held)."""
        target = lane.tracker.watermark
        if target is None or (lane.committed is not None and target <= lane.committed):
            return
        try:
            await self._commit(lane, target)
        except (KafkaError, ConsumerStoppedError) as err:
            log.warning("%s: final commit of %s %d@%d failed: %s",
                        self._client_id, self.topic, lane.tp.partition, target, err)

    async def _final_commit(self, lane: _Lane) -> None:
        """On graceful stop: commit the finished prefix, retrying briefly (the group is still ours)."""
        for attempt in range(1, 4):
            target = lane.tracker.watermark
            if target is None or (lane.committed is not None and target <= lane.committed):
                return
            if not self._owns(lane):
                return
            try:
                await self._commit(lane, target)
                return
            except KafkaError as err:
                log.warning("%s: commit on stop failed (%s), attempt %d", self._client_id, err, attempt)
                await asyncio.sleep(min(self._backoff.delay(attempt), 1.0))


@dataclass
class _Totals:
    """Counters of lanes that no longer exist, so stats() survives rebalances."""

    processed: int = 0
    retries: int = 0
    skipped: int = 0

    def add(self, lane: _Lane) -> None:
        self.processed += lane.processed
        self.retries += lane.retries
        self.skipped += lane.skipped


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
