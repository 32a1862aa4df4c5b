"""The partition runner against the real tansu broker (reference §6.5, §11 partition runner list):
ordering, retry in place, permanent errors, rebalances, stale lanes, lag, restart, back-pressure,
batch mode, trace context."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any
from uuid import uuid4

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from pydantic import BaseModel

from domain.commit_policy import RetryBackoff
from domain.config import KafkaConfig
from domain.errors import Invalid, Unavailable
from domain.topology import TopicSpec
from ingest.consumer import ConsumedRecord, Handler, PartitionedConsumer
from ingest.producer import Delivery, EventProducer, OutgoingRecord
from ingest.topics import ensure_topics

FAST = RetryBackoff(initial_s=0.1, max_s=0.4)


# --------------------------------------------------------------------------- broker


@pytest.fixture(scope="module")
def kafka_cfg(stack: Any) -> KafkaConfig:
    """The stack's tansu broker (session timeout 2 s, so group joins take about a second)."""
    return stack.settings.kafka


# --------------------------------------------------------------------------- helpers


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid4().hex[:10]}"


async def new_topic(cfg: KafkaConfig, partitions: int) -> str:
    topic = unique("t")
    await ensure_topics(cfg, {topic: TopicSpec(partitions=partitions)})
    return topic


async def produce(cfg: KafkaConfig, topic: str, items: list[tuple[str, str]]) -> list[Delivery]:
    async with EventProducer(cfg) as producer:
        return await producer.send_batch([OutgoingRecord(topic=topic, key=k, value=v) for k, v in items])


async def keys_by_partition(cfg: KafkaConfig, partitions: int) -> dict[int, str]:
    """One record key per partition.  Placement depends only on the key and the partition count, so
    it is probed on a scratch topic and the test topic holds only the test's own records."""
    scratch = await new_topic(cfg, partitions)
    batch = [(f"key-{i}", "probe") for i in range(64)]
    found: dict[int, str] = {}
    for (key, _), delivery in zip(batch, await produce(cfg, scratch, batch), strict=True):
        found.setdefault(delivery.partition, key)
    assert len(found) == partitions
    return found


async def committed(cfg: KafkaConfig, topic: str, group: str, partitions: int) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=cfg.bootstrap_servers, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        await consumer.stop()


async def wait_until(condition: Callable[[], object], within: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(
    cfg: KafkaConfig, topic: str, group: str, handler: Handler, **kwargs: object
) -> AsyncIterator[PartitionedConsumer]:
    consumer = PartitionedConsumer(cfg, topic, group, handler, backoff=FAST, **kwargs)  # type: ignore[arg-type]
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


class Recorder:
    """A handler that records every finished record; ``gate`` decides per record whether to wait."""

    def __init__(self, gate: Callable[[ConsumedRecord], Awaitable[None]] | None = None) -> None:
        self.done: list[ConsumedRecord] = []
        self._gate = gate

    async def __call__(self, records: list[ConsumedRecord]) -> None:
        for record in records:
            if self._gate is not None:
                await self._gate(record)
            self.done.append(record)

    def offsets(self, partition: int | None = None) -> list[int]:
        return [r.offset for r in self.done if partition is None or r.partition == partition]

    def positions(self) -> Counter[tuple[int, int]]:
        return Counter((r.partition, r.offset) for r in self.done)


# --------------------------------------------------------------------------- tests


async def test_records_flow_from_producer_to_handler_in_per_key_order(kafka_cfg: KafkaConfig) -> None:
    topic, group = await new_topic(kafka_cfg, 3), unique("g")
    items = [(f"wf-{i % 7}", f'{{"n": {i}}}') for i in range(300)]
    deliveries = await produce(kafka_cfg, topic, items)
    assert all(d.topic == topic for d in deliveries)
    recorder = Recorder()
    async with running(kafka_cfg, topic, group, recorder) as consumer:
        await wait_until(lambda: len(recorder.done) == 300, what="all records")
        await wait_until(lambda: all(lane.committed is not None for lane in consumer.stats().lanes)
                         and sum(lane.committed or 0 for lane in consumer.stats().lanes) == 300,
                         what="commits")
        assert consumer.stats().processed == 300
    per_key: dict[str, list[int]] = defaultdict(list)
    for record in recorder.done:
        per_key[record.key or ""].append(int(record.value.decode().split(":")[1].strip(" }")))
    for key, numbers in per_key.items():
        assert numbers == sorted(numbers), key
        assert numbers == [i for i in range(300) if f"wf-{i % 7}" == key]
    counts = Counter(d.partition for d in deliveries)
    assert await committed(kafka_cfg, topic, group, 3) == {p: counts.get(p) for p in range(3)}


async def test_retryable_error_retries_the_same_record_while_other_partitions_flow(
    kafka_cfg: KafkaConfig,
) -> None:
    topic, group = await new_topic(kafka_cfg, 2), unique("g")
    keys = await keys_by_partition(kafka_cfg, 2)
    stuck, flowing = 0, 1
    await produce(kafka_cfg, topic, [(keys[stuck], "stuck")] + [(keys[flowing], f"f{i}") for i in range(20)]
                  + [(keys[stuck], f"after{i}") for i in range(5)])
    healthy = asyncio.Event()
    failures = Counter[int]()
    seen: list[ConsumedRecord] = []

    async def handler(records: list[ConsumedRecord]) -> None:
        record = records[0]
        if record.value == b"stuck" and not healthy.is_set():
            failures[record.offset] += 1
            raise Unavailable("database is down")
        seen.append(record)

    def lane_committed(consumer: PartitionedConsumer, partition: int) -> int | None:
        return next(lane.committed for lane in consumer.stats().lanes if lane.partition == partition)

    async with running(kafka_cfg, topic, group, handler) as consumer:
        await wait_until(lambda: [r.offset for r in seen if r.partition == flowing] == list(range(20)),
                         what="the healthy partition")
        await wait_until(lambda: sum(failures.values()) >= 3, what="retries")
        # Retried in place: always the same record, nothing after it handled or committed.
        assert list(failures) == [0]
        assert not [r for r in seen if r.partition == stuck]
        assert lane_committed(consumer, stuck) is None
        assert consumer.stats().retries >= 3
        await wait_until(lambda: lane_committed(consumer, flowing) == 20, what="healthy partition commits")
        healthy.set()
        await wait_until(lambda: [r.value for r in seen if r.partition == stuck]
                         == [b"stuck"] + [f"after{i}".encode() for i in range(5)], what="recovery")
        await wait_until(lambda: lane_committed(consumer, stuck) == 6, what="commit after recovery")
    assert await committed(kafka_cfg, topic, group, 2) == {stuck: 6, flowing: 20}


class Payload(BaseModel):
    n: int


async def test_permanent_error_and_undecodable_payload_are_committed_and_skipped(
    kafka_cfg: KafkaConfig,
) -> None:
    topic, group = await new_topic(kafka_cfg, 1), unique("g")
    await produce(kafka_cfg, topic, [("k", '{"n": 1}'), ("k", "not json"), ("k", '{"n": 3, "bad": true}'),
                                     ("k", '{"n": 4}')])
    handled: list[int] = []

    async def handler(records: list[ConsumedRecord]) -> None:
        payload = records[0].decode(Payload)  # raises Invalid for "not json"
        if b'"bad"' in records[0].value:
            raise Invalid("rejected by the service")
        handled.append(payload.n)

    async with running(kafka_cfg, topic, group, handler) as consumer:
        await wait_until(lambda: handled == [1, 4], what="records around the bad ones")
        await wait_until(lambda: consumer.stats().lanes[0].committed == 4, what="commit past bad records")
        stats = consumer.stats()
        assert stats.skipped == 2
        assert stats.retries == 0
    assert await committed(kafka_cfg, topic, group, 1) == {0: 4}


async def test_two_members_rebalance_without_losing_or_reprocessing_finished_work(
    kafka_cfg: KafkaConfig,
) -> None:
    topic, group = await new_topic(kafka_cfg, 4), unique("g")
    total = 800
    await produce(kafka_cfg, topic, [(f"wf-{i % 40}", str(i)) for i in range(total)])

    async def slow(_: ConsumedRecord) -> None:
        await asyncio.sleep(0.004)

    first, second = Recorder(slow), Recorder(slow)
    async with running(kafka_cfg, topic, group, first) as a:
        await wait_until(lambda: len(first.done) >= 100, what="first member progress")
        b = PartitionedConsumer(kafka_cfg, topic, group, second, backoff=FAST)
        await b.start()
        try:
            await wait_until(lambda: b.assigned_partitions() and len(second.done) >= 50
                             and len(a.assigned_partitions()) < 4, what="second member takes partitions")
            assert set(a.assigned_partitions()).isdisjoint(b.assigned_partitions())
        finally:
            await b.stop()  # graceful: drains and commits, then leaves the group
        await wait_until(lambda: len(a.assigned_partitions()) == 4, what="first member takes all back")
        await wait_until(lambda: len(set(first.positions()) | set(second.positions())) == total,
                         within=60, what="every record")
    everything = first.positions() + second.positions()
    assert sum(everything.values()) == total, [pos for pos, n in everything.items() if n > 1]
    assert sum((await committed(kafka_cfg, topic, group, 4)).values()) == total  # type: ignore[arg-type]


async def test_lane_of_a_revoked_partition_never_commits(kafka_cfg: KafkaConfig) -> None:
    topic, group = await new_topic(kafka_cfg, 2), unique("g")
    keys = await keys_by_partition(kafka_cfg, 2)
    await produce(kafka_cfg, topic, [(keys[p], f"p{p}-{i}") for p in (0, 1) for i in range(3)])
    release = asyncio.Event()
    first_delivery: set[int] = set()
    stale_finished: list[int] = []

    async def stubborn(record: ConsumedRecord) -> None:
        # The first delivery of each partition's first record hangs and outlives cancellation, then
        # returns normally: like a remote call that completes after its partition has moved on.
        if record.offset == 0 and record.partition not in first_delivery:
            first_delivery.add(record.partition)
            try:
                await release.wait()
            except asyncio.CancelledError:
                await release.wait()
                stale_finished.append(record.partition)

    async def never(_: ConsumedRecord) -> None:
        await asyncio.Event().wait()

    a = PartitionedConsumer(kafka_cfg, topic, group, Recorder(stubborn), backoff=FAST, revoke_timeout=0.3)
    b = PartitionedConsumer(kafka_cfg, topic, group, Recorder(never), backoff=FAST, drain_timeout=0.3)
    await a.start()
    try:
        await wait_until(lambda: len(first_delivery) == 2, what="both first records stuck")
        await b.start()
        await wait_until(lambda: len(a.assigned_partitions()) == 1 and len(b.assigned_partitions()) == 1,
                         what="one partition each")
        kept, moved = a.assigned_partitions()[0], b.assigned_partitions()[0]
        # The kept partition was re-delivered to a fresh lane, which finishes and commits it.
        await wait_until(lambda: a.stats().lanes[0].committed == 3, what="the new lane's commit")
        release.set()
        await wait_until(lambda: sorted(stale_finished) == [0, 1], what="stale handlers to finish")
        await asyncio.sleep(0.5)  # time for a stale commit to land, if one could
        offsets = await committed(kafka_cfg, topic, group, 2)
        assert offsets[kept] == 3  # not rolled back to 1 by the old lane
        assert offsets[moved] is None  # nothing committed for the partition that moved away
    finally:
        await b.stop()
        await a.stop()
    # The barrier: once ``a`` has stopped, no commit of its stale lanes can still be on its way.
    assert await committed(kafka_cfg, topic, group, 2) == {kept: 3, moved: None}


async def test_lag_counts_unprocessed_records_from_the_fetch_highwater(kafka_cfg: KafkaConfig) -> None:
    topic, group = await new_topic(kafka_cfg, 2), unique("g")
    deliveries = await produce(kafka_cfg, topic, [(f"k{i}", str(i)) for i in range(150)])
    per_partition = Counter(d.partition for d in deliveries)
    release = asyncio.Event()

    async def blocked(_: ConsumedRecord) -> None:
        await release.wait()

    recorder = Recorder(blocked)
    async with running(kafka_cfg, topic, group, recorder) as consumer:
        expected = {p: per_partition.get(p, 0) for p in range(2)}
        await wait_until(lambda: consumer.lag() == expected, what="lag of untouched records")
        release.set()
        await wait_until(lambda: len(recorder.done) == 150, what="processing")
        await wait_until(lambda: consumer.lag() == {0: 0, 1: 0}, what="lag back to zero")
        await produce(kafka_cfg, topic, [("more", "x")] * 5)
        await wait_until(lambda: len(recorder.done) == 155 and sum(consumer.lag().values()) == 0,
                         what="lag after new records")


async def test_restart_resumes_from_committed_offsets_and_redelivers_unfinished_work(
    kafka_cfg: KafkaConfig,
) -> None:
    topic, group = await new_topic(kafka_cfg, 1), unique("g")
    await produce(kafka_cfg, topic, [("k", str(i)) for i in range(10)])

    async def hang_at_seven(record: ConsumedRecord) -> None:
        if record.offset == 7:
            await asyncio.Event().wait()

    before = Recorder(hang_at_seven)
    consumer = PartitionedConsumer(kafka_cfg, topic, group, before, backoff=FAST, drain_timeout=0.3)
    await consumer.start()
    await wait_until(lambda: before.offsets() == list(range(7)), what="records before the hang")
    await wait_until(lambda: consumer.stats().lanes[0].committed == 7, what="commit up to the hang")
    await consumer.stop()  # the hung call is abandoned, uncommitted
    assert await committed(kafka_cfg, topic, group, 1) == {0: 7}
    await produce(kafka_cfg, topic, [("k", "10"), ("k", "11")])
    after = Recorder()
    async with running(kafka_cfg, topic, group, after):
        await wait_until(lambda: after.offsets() == [7, 8, 9, 10, 11], what="resumed records")
    assert await committed(kafka_cfg, topic, group, 1) == {0: 12}


async def test_commits_are_spaced_by_the_commit_interval_and_stop_commits_the_rest(
    kafka_cfg: KafkaConfig,
) -> None:
    topic, group = await new_topic(kafka_cfg, 1), unique("g")
    cfg = kafka_cfg.model_copy(update={"commit_interval": timedelta(minutes=10)})
    await produce(kafka_cfg, topic, [("k", "0")])
    recorder = Recorder()
    consumer = PartitionedConsumer(cfg, topic, group, recorder, backoff=FAST)
    await consumer.start()
    try:
        await wait_until(lambda: consumer.stats().lanes[0].committed == 1, what="the first commit")
        await produce(kafka_cfg, topic, [("k", str(i)) for i in range(1, 6)])
        await wait_until(lambda: len(recorder.done) == 6, what="the later records")
        await asyncio.sleep(0.5)  # a per-record commit would have happened by now
        assert consumer.stats().lanes[0].committed == 1
    finally:
        await consumer.stop()
    assert await committed(kafka_cfg, topic, group, 1) == {0: 6}


async def test_full_lane_pauses_fetching_and_resumes_when_drained(kafka_cfg: KafkaConfig) -> None:
    topic, group = await new_topic(kafka_cfg, 1), unique("g")
    await produce(kafka_cfg, topic, [("k", str(i)) for i in range(200)])
    release = asyncio.Event()

    async def blocked(_: ConsumedRecord) -> None:
        await release.wait()

    recorder = Recorder(blocked)
    async with running(kafka_cfg, topic, group, recorder, lane_capacity=20, resume_at=5) as consumer:
        await wait_until(lambda: consumer.stats().lanes and consumer.stats().lanes[0].paused,
                         what="the lane to pause")
        await asyncio.sleep(0.5)  # fetching would keep filling the lane if it were not paused
        lane = consumer.stats().lanes[0]
        assert 19 <= lane.depth < 40  # one record is in the (blocked) handler
        release.set()
        await wait_until(lambda: len(recorder.done) == 200, what="all records")
        assert recorder.offsets() == list(range(200))
        assert not consumer.stats().lanes[0].paused


async def test_batch_mode_hands_over_bounded_ordered_batches(kafka_cfg: KafkaConfig) -> None:
    topic, group = await new_topic(kafka_cfg, 1), unique("g")
    await produce(kafka_cfg, topic, [("job", str(i)) for i in range(120)])
    batches: list[list[int]] = []

    async def handler(records: list[ConsumedRecord]) -> None:
        batches.append([r.offset for r in records])

    async with running(kafka_cfg, topic, group, handler, batch_size=50, batch_wait=0.3) as consumer:
        await wait_until(lambda: sum(map(len, batches)) == 120, what="all records")
        await wait_until(lambda: consumer.stats().lanes[0].committed == 120, what="commit")
        await produce(kafka_cfg, topic, [("job", "late")])
        await wait_until(lambda: sum(map(len, batches)) == 121, what="a lone record after batch_wait")
    assert all(1 <= len(batch) <= 50 for batch in batches)
    assert [offset for batch in batches for offset in batch] == list(range(121))
    assert max(map(len, batches)) == 50


async def test_concurrent_lane_commits_only_the_finished_prefix(kafka_cfg: KafkaConfig) -> None:
    topic, group = await new_topic(kafka_cfg, 1), unique("g")
    await produce(kafka_cfg, topic, [(f"k{i}", str(i)) for i in range(8)])
    release = asyncio.Event()

    async def slow_first(record: ConsumedRecord) -> None:
        if record.offset == 0:
            await release.wait()

    recorder = Recorder(slow_first)
    async with running(kafka_cfg, topic, group, recorder, max_in_flight_per_lane=4) as consumer:
        await wait_until(lambda: len(recorder.done) == 7, what="records behind the slow one")
        await asyncio.sleep(0.3)
        assert consumer.stats().lanes[0].committed is None  # offset 0 unfinished: nothing committed
        release.set()
        await wait_until(lambda: consumer.stats().lanes[0].committed == 8, what="commit after the gap closes")


async def test_concurrent_lane_never_overlaps_records_of_one_key(kafka_cfg: KafkaConfig) -> None:
    topic, group = await new_topic(kafka_cfg, 1), unique("g")
    items = [("a", "a0"), ("b", "b0"), ("a", "a1"), ("c", "c0"), ("a", "a2"), ("b", "b1")]
    await produce(kafka_cfg, topic, items)
    running_keys: Counter[str] = Counter()
    overlaps: list[str] = []
    started: list[str] = []
    b0_released = asyncio.Event()

    async def handler(records: list[ConsumedRecord]) -> None:
        for record in records:
            key = record.key or ""
            if running_keys[key]:
                overlaps.append(key)
            running_keys[key] += 1
            started.append(record.value.decode())
            try:
                if record.value == b"b0":
                    await b0_released.wait()  # holds key b; the a and c records must still flow
                else:
                    await asyncio.sleep(0.05)
            finally:
                running_keys[key] -= 1

    async with running(kafka_cfg, topic, group, handler, max_in_flight_per_lane=4) as consumer:
        await wait_until(lambda: "c0" in started, what="a record behind the held key")
        assert "b1" not in started  # waits for b0
        so_far = consumer.stats().lanes[0].committed
        assert so_far is None or so_far <= 1
        b0_released.set()
        await wait_until(lambda: consumer.stats().lanes[0].committed == 6, what="everything committed")
    assert overlaps == []
    for key in "abc":
        assert [v for v in started if v[0] == key] == sorted(v for v in started if v[0] == key)


async def test_concurrent_lane_stays_within_capacity_of_an_unfinished_record(kafka_cfg: KafkaConfig) -> None:
    topic, group = await new_topic(kafka_cfg, 1), unique("g")
    await produce(kafka_cfg, topic, [(f"k{i}", str(i)) for i in range(20)])
    release = asyncio.Event()

    async def stuck_first(record: ConsumedRecord) -> None:
        if record.offset == 0:
            await release.wait()

    recorder = Recorder(stuck_first)
    async with running(kafka_cfg, topic, group, recorder, max_in_flight_per_lane=8,
                       lane_capacity=5, resume_at=2) as consumer:
        await wait_until(lambda: len(recorder.done) >= 4, what="records behind the stuck one")
        await asyncio.sleep(0.3)
        assert max(recorder.offsets()) < 5  # never further than lane_capacity past the unfinished one
        release.set()
        await wait_until(lambda: consumer.stats().lanes[0].committed == 20, what="the rest after release")


async def test_trace_context_travels_from_producer_to_handler(kafka_cfg: KafkaConfig) -> None:
    topic, group = await new_topic(kafka_cfg, 1), unique("g")
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("http request") as span:
        trace_id = span.get_span_context().trace_id
        await produce(kafka_cfg, topic, [("k", "traced")])
    seen: list[int] = []

    async def handler(_: list[ConsumedRecord]) -> None:
        seen.append(trace.get_current_span().get_span_context().trace_id)

    async with running(kafka_cfg, topic, group, handler):
        await wait_until(lambda: len(seen) == 1, what="the traced record")
    assert seen == [trace_id]


async def test_start_against_an_unreachable_broker_is_unavailable(
    kafka_cfg: KafkaConfig,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens here
    recorder = Recorder()
    consumer = PartitionedConsumer(KafkaConfig(brokers=f"127.0.0.1:{port}"), "t", unique("g"), recorder)
    with pytest.raises(Unavailable):
        await consumer.start()
    assert not consumer.running
    await consumer.stop()  # a failed start leaves nothing to stop
