"""Topic creation and the producer against the real tansu broker (issue 2 item 4, reference §3.5)."""

from __future__ import annotations

import logging
import socket
import time
from datetime import UTC, datetime
from typing import Any, ClassVar
from uuid import uuid4

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.partitioner import murmur2
from aiokafka.structs import ConsumerRecord
from opentelemetry.sdk.trace import TracerProvider

from domain.config import KafkaConfig
from domain.enums import WorkflowAction
from domain.errors import Unavailable
from domain.event_keys import dispatch_event_key, workflow_event_key
from domain.topology import TopicSpec
from ingest.events import ScheduledJobEntry, WorkflowEvent
from ingest.producer import EventProducer, OutgoingRecord
from ingest.topics import describe_topics, ensure_topics

WF = "0190f0e2-7c1a-7000-8000-000000000001"
JOB = "0190f0e2-7c1a-7000-8000-0000000000aa"


@pytest.fixture(scope="module")
def kafka_cfg(stack: Any) -> KafkaConfig:
    """The stack's tansu broker (session timeout 2 s, so group joins take about a second)."""
    return stack.settings.kafka


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid4().hex[:10]}"


async def list_topics(cfg: KafkaConfig) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=cfg.bootstrap_servers)
    await admin.start()
    try:
        return await admin.list_topics()
    finally:
        await admin.close()


async def read_all(cfg: KafkaConfig, topic: str, partitions: int, expected: int) -> list[ConsumerRecord]:
    """Every record of ``topic`` (no group), waiting until ``expected`` have arrived."""
    consumer = AIOKafkaConsumer(bootstrap_servers=cfg.bootstrap_servers, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + 60  # generous: the machine may be loaded
        while len(records) < expected and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


async def test_ensure_topics_creates_missing_topics_with_configured_partitions_and_retention(
    kafka_cfg: KafkaConfig,
) -> None:
    small, large = unique("small"), unique("large")
    await ensure_topics(kafka_cfg, {small: TopicSpec(partitions=2, retention="1h"),
                                    large: TopicSpec(partitions=5)})
    assert await describe_topics(kafka_cfg, [small, large]) == {small: 2, large: 5}
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_cfg.bootstrap_servers)
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, small)])
    finally:
        await admin.close()
    entries = {entry[0]: entry[1] for entry in response.resources[0][4]}
    assert entries["retention.ms"] == str(3_600_000)


async def test_ensure_topics_keeps_existing_topics_and_warns_when_partitions_are_short(
    kafka_cfg: KafkaConfig, caplog: pytest.LogCaptureFixture
) -> None:
    topic = unique("existing")
    await ensure_topics(kafka_cfg, {topic: TopicSpec(partitions=2)})
    with caplog.at_level(logging.WARNING, logger="ingest.topics"):
        await ensure_topics(kafka_cfg, {topic: TopicSpec(partitions=2)})
        assert not caplog.records
        await ensure_topics(kafka_cfg, {topic: TopicSpec(partitions=4)})  # the broker cannot grow it
    assert await describe_topics(kafka_cfg, [topic]) == {topic: 2}
    assert any(topic in r.getMessage() and "4 are configured" in r.getMessage() for r in caplog.records)


async def test_describe_topics_never_creates_a_missing_topic(kafka_cfg: KafkaConfig) -> None:
    missing = unique("missing")
    assert await describe_topics(kafka_cfg, [missing]) == {}
    assert missing not in await list_topics(kafka_cfg)  # tansu would auto-create on a Metadata request


async def test_unreachable_broker_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens here
    nowhere = KafkaConfig(brokers=f"127.0.0.1:{port}")
    with pytest.raises(Unavailable):
        await ensure_topics(nowhere, {"x": TopicSpec(partitions=1)})
    with pytest.raises(Unavailable):
        await EventProducer(nowhere).start()


async def test_producer_places_each_key_like_the_java_partitioner(kafka_cfg: KafkaConfig) -> None:
    topic = unique("keys")
    await ensure_topics(kafka_cfg, {topic: TopicSpec(partitions=4)})
    keys = [f"wf-{i}" for i in range(40)]
    async with EventProducer(kafka_cfg) as producer:
        deliveries = await producer.send_batch(
            [OutgoingRecord(topic=topic, key=key, value=str(n)) for n in range(3) for key in keys]
        )
    by_key: dict[str, set[int]] = {}
    for key, delivery in zip([k for _ in range(3) for k in keys], deliveries, strict=True):
        by_key.setdefault(key, set()).add(delivery.partition)
    for key, partitions in by_key.items():
        assert partitions == {(murmur2(key.encode()) & 0x7FFFFFFF) % 4}, key


async def test_publish_sends_an_event_to_its_topic_with_record_key_and_trace_headers(
    kafka_cfg: KafkaConfig,
) -> None:
    topic = unique("jobs")
    await ensure_topics(kafka_cfg, {topic: TopicSpec(partitions=1)})
    entry = ScheduledJobEntry(event_key=dispatch_event_key(JOB, 1), job_id=JOB, workflow_id=WF,
                              scheduled_at=datetime(2025, 1, 2, 3, 4, 5, 600000, tzinfo=UTC),
                              dispatch_attempt=1)
    event = WorkflowEvent(event_key=workflow_event_key(WF, WorkflowAction.BUILD, 1), id=WF, user_id="u",
                          action=WorkflowAction.BUILD, generation=1)
    other = unique("workflows")

    class Probe(WorkflowEvent):
        topic: ClassVar[str] = other

    await ensure_topics(kafka_cfg, {other: TopicSpec(partitions=1)})
    probe = Probe(event_key="k", id=WF, action=WorkflowAction.DELETE)
    tracer = TracerProvider().get_tracer("test")
    forwarded = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with EventProducer(kafka_cfg) as producer:
        with tracer.start_as_current_span("request") as span:
            trace_id = f"{span.get_span_context().trace_id:032x}"
            await producer.send(topic, entry.record_key(), entry)
        await producer.send(topic, WF, event, headers={"traceparent": forwarded})
        assert (await producer.publish(probe)).topic == other  # publish(): the event's own topic and key
    first, second = await read_all(kafka_cfg, topic, 1, expected=2)
    assert first.key == WF.encode()
    assert ScheduledJobEntry.model_validate_json(first.value) == entry
    assert b'"scheduled_at":"2025-01-02T03:04:05.6Z"' in first.value
    headers = dict(first.headers)
    assert headers["traceparent"].decode().split("-")[1] == trace_id
    assert WorkflowEvent.model_validate_json(second.value) == event
    assert dict(second.headers)["traceparent"].decode() == forwarded  # a forwarded context is kept
    [published] = await read_all(kafka_cfg, other, 1, expected=1)
    assert published.key == WF.encode()
    assert Probe.model_validate_json(published.value) == probe
