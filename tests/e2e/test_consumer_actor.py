"""The Ray shell of the Kafka consumer (``consumer-<topic>-<i>``) on a real local Ray cluster and the
stack's tansu broker: records reach the target actor, the target's domain errors keep their meaning
across Ray (retry vs skip), a target that dies is found again by name, and stop drains."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any
from uuid import uuid4

import ray
from ray import cloudpickle

from domain.config import KafkaConfig
from domain.errors import Invalid, Unavailable
from domain.topology import TopicSpec
from ingest.consumer import ConsumedRecord
from ingest.consumer_actor import ConsumerSpec, consumer_actor_name, create_consumer_actor
from ingest.producer import EventProducer, OutgoingRecord
from ingest.topics import ensure_topics

NAMESPACE = "chronoverse-test"  # the ray_cluster fixture's namespace

# Ray workers cannot import this test module: ship the target class by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@ray.remote(num_cpus=0.05)
class FakePool:
    """Stands in for a worker pool: fails "flaky" twice (retryable), rejects "bad" (permanent)."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []
        self.flaky_failures = 0

    async def handle(self, record: ConsumedRecord) -> None:
        if record.value == b"flaky" and self.flaky_failures < 2:
            self.flaky_failures += 1
            raise Unavailable("the database is restarting")
        if record.value == b"bad":
            raise Invalid("not a valid event")
        self.seen.append(record.value)

    async def handle_batch(self, records: list[ConsumedRecord]) -> None:
        self.seen.append(b"batch:%d" % len(records))

    async def snapshot(self) -> tuple[list[bytes], int]:
        return self.seen, self.flaky_failures


async def produce(cfg: KafkaConfig, topic: str, values: list[str]) -> None:
    async with EventProducer(cfg) as producer:
        await producer.send_batch([OutgoingRecord(topic=topic, key="wf", value=v) for v in values])


async def eventually(check: Callable[[], Any], what: str, within: float = 120.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def test_consumer_actor_feeds_its_target_with_the_commit_policy(stack: Any, ray_cluster: Any) -> None:
    cfg: KafkaConfig = stack.settings.kafka
    topic, pool_name = f"actor-{uuid4().hex[:8]}", f"fake-pool-{uuid4().hex[:8]}"
    await ensure_topics(cfg, {topic: TopicSpec(partitions=1)})
    await produce(cfg, topic, ["1", "flaky", "bad", "4"])
    pool = FakePool.options(name=pool_name, namespace=NAMESPACE).remote()  # type: ignore[attr-defined]
    single = create_consumer_actor(
        cfg, ConsumerSpec(topic=topic, group_id=f"g-{topic}", retry_initial_s=0.2, retry_max_s=0.5),
        pool_name, 0, namespace=NAMESPACE)
    batched = create_consumer_actor(
        cfg, ConsumerSpec(topic=topic, group_id=f"b-{topic}", method="handle_batch", batch_size=10,
                          batch_wait_s=0.2, retry_initial_s=0.2, retry_max_s=0.5),
        pool_name, 1, namespace=NAMESPACE)
    try:
        assert await single.start.remote()
        assert await batched.start.remote()
        assert ray.get_actor(consumer_actor_name(topic, 0), namespace=NAMESPACE) is not None

        def batched_records(seen: list[bytes]) -> int:
            return sum(int(value.split(b":")[1]) for value in seen if value.startswith(b"batch:"))

        async def all_handled() -> Any:
            # Both consumers are done with the four records: "4" is the single consumer's last
            # (records of a partition go in order); the batched one may get them in more than one
            # batch when the fetches that bring them are further apart than batch_wait_s.
            seen, failures = await pool.snapshot.remote()
            return b"4" in seen and batched_records(seen) >= 4 and (seen, failures)

        seen, failures = await eventually(all_handled, "records at the target")
        assert sorted(value for value in seen if not value.startswith(b"batch:")) == [b"1", b"4", b"flaky"]
        assert batched_records(seen) == 4  # every record once, in batches of at most batch_size
        assert all(0 < int(v.split(b":")[1]) <= 10 for v in seen if v.startswith(b"batch:")), seen
        assert failures == 2  # Unavailable crossed Ray as itself: retried in place, then handled

        async def single_settled() -> Any:
            # The target has "4" before the consumer counts it: wait for the count, then check it.
            stats = await single.stats.remote()
            return stats.processed + stats.skipped >= 4 and stats

        stats = await eventually(single_settled, "the single consumer to count every record")
        assert (stats.processed, stats.retries, stats.skipped) == (3, 2, 1)  # Invalid: committed, skipped

        async def committed_all() -> Any:
            lanes = (await single.stats.remote()).lanes
            return lanes and lanes[0].committed == 4 and await single.lag.remote() == {0: 0}

        await eventually(committed_all, "commit and zero lag")

        # The target dies: records wait (Unavailable, retried) until a pool of that name exists again.
        ray.kill(pool, no_restart=True)
        await produce(cfg, topic, ["after restart"])
        await eventually(lambda: _retried(single, stats.retries), "retries against the dead pool")
        await eventually(lambda: _name_free(pool_name), "the dead pool's name to be released")
        pool = FakePool.options(name=pool_name, namespace=NAMESPACE).remote()  # type: ignore[attr-defined]

        async def redelivered() -> Any:
            seen, _ = await pool.snapshot.remote()
            return b"after restart" in seen

        await eventually(redelivered, "the record at the new pool")
    finally:
        await single.stop.remote()
        await batched.stop.remote()
        for actor in (single, batched, pool):
            ray.kill(actor, no_restart=True)


async def _retried(actor: Any, before: int) -> bool:
    return bool((await actor.stats.remote()).retries > before)


async def _name_free(name: str) -> bool:
    """True once no live actor holds ``name`` (a killed actor keeps it until Ray sees it dead)."""
    try:
        ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return True
    return False
