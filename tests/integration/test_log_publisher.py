"""LogPublisher against the real broker and Redis: every line reaches ``job_logs`` with its
deterministic event id; retained lines also go live, followed by the ``end`` marker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from actors.log_publisher import LogPublisher
from domain.config import ExecutionWorkerConfig
from domain.enums import JobStatus, LogStream
from domain.ids import uuid7
from domain.log_lines import LogLine, live_channel
from ingest.connection import connection_options
from ingest.events import JobLogEvent
from ingest.producer import EventProducer
from ingest.topics import JOB_LOGS
from store.redis import create_redis


@pytest.fixture(scope="module")
async def publisher_parts(stack: Any) -> AsyncIterator[tuple[EventProducer, Any]]:
    producer = EventProducer(stack.settings.kafka, client_id="test-log-publisher")
    await producer.start()
    redis = create_redis(stack.settings.redis)
    yield producer, redis
    await producer.stop()
    await redis.aclose()


async def read_job_logs(stack: Any, job_id: str, expected: int) -> list[JobLogEvent]:
    consumer = AIOKafkaConsumer(
        **connection_options(stack.settings.kafka, client_id="test-reader"),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(JOB_LOGS) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(JOB_LOGS) or set()
        consumer.assign([TopicPartition(JOB_LOGS, p) for p in partitions])
        await consumer.seek_to_beginning()
        found: list[JobLogEvent] = []
        # Generous: the shared topic holds every earlier test's lines, and the machine may be loaded.
        deadline = asyncio.get_running_loop().time() + 60
        while len(found) < expected and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    if record.key == job_id.encode():
                        found.append(JobLogEvent.model_validate_json(record.value))
        return found
    finally:
        await consumer.stop()


def line(seq: int, stream: LogStream = LogStream.STDOUT) -> LogLine:
    return LogLine(
        stream=stream, sequence_num=seq, message=f"m{seq}", timestamp=datetime.now(UTC).replace(tzinfo=None)
    )


async def test_lines_reach_kafka_in_batches_with_deterministic_ids(
    stack: Any, publisher_parts: tuple[EventProducer, Any]
) -> None:
    producer, redis = publisher_parts
    cfg = ExecutionWorkerConfig(job_log_batch_size=3, job_log_batch_interval=timedelta(milliseconds=50))
    publisher = LogPublisher(producer, redis, cfg)
    publisher.start()
    job_id, workflow_id, user_id = uuid7(), uuid7(), uuid7()
    writer = publisher.writer(
        job_id=job_id, workflow_id=workflow_id, user_id=user_id, attempt=2, retention=False
    )
    for seq in range(7):
        await writer.write(line(seq, LogStream.STDERR if seq == 3 else LogStream.STDOUT))
    await writer.flush()
    await publisher.stop()
    assert publisher.stats.published == 7 and publisher.stats.dropped == 0
    events = await read_job_logs(stack, str(job_id), 7)
    assert [e.sequence_num for e in events] == list(range(7))  # one partition per job: in order
    assert events[3].event_key == f"log:{job_id}:attempt:2:stderr:3"
    assert all(not e.retention and not e.live_published and e.attempt == 2 for e in events)


async def test_retained_lines_go_live_then_the_end_marker(
    stack: Any, publisher_parts: tuple[EventProducer, Any]
) -> None:
    producer, redis = publisher_parts
    publisher = LogPublisher(producer, redis, ExecutionWorkerConfig())
    publisher.start()
    job_id = uuid7()
    pubsub = redis.pubsub()
    await pubsub.subscribe(live_channel(job_id))
    try:
        writer = publisher.writer(
            job_id=job_id, workflow_id=uuid7(), user_id=uuid7(), attempt=1, retention=True
        )
        for seq in range(3):
            await writer.write(line(seq))
        await writer.flush()
        await writer.end(JobStatus.COMPLETED)
        messages: list[dict[str, Any]] = []
        deadline = asyncio.get_running_loop().time() + 30  # generous: the machine may be loaded
        while len(messages) < 4 and asyncio.get_running_loop().time() < deadline:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if message is not None:
                messages.append(json.loads(message["data"]))
        assert [m["type"] for m in messages] == ["log", "log", "log", "end"]
        assert [m["sequence_num"] for m in messages[:3]] == [0, 1, 2]
        assert messages[3]["status"] == "COMPLETED"
    finally:
        await pubsub.unsubscribe()
        await pubsub.aclose()
        await publisher.stop()
    events = await read_job_logs(stack, str(job_id), 3)
    assert len(events) == 3 and all(e.retention and e.live_published for e in events)


async def test_publish_failures_are_retried_then_dropped_without_raising(stack: Any) -> None:
    # A producer that never started cannot send: each flush is retried, then dropped.
    producer = EventProducer(stack.settings.kafka, client_id="never-started")
    cfg = ExecutionWorkerConfig(
        job_log_publish_retries=2,
        job_log_publish_backoff=timedelta(milliseconds=10),
        job_log_publish_timeout=timedelta(seconds=1),
    )
    publisher = LogPublisher(producer, None, cfg)
    writer = publisher.writer(job_id=uuid7(), workflow_id=uuid7(), user_id=uuid7(), attempt=1, retention=True)
    await writer.write(line(0))
    await writer.flush()
    assert (publisher.stats.published, publisher.stats.dropped) == (0, 1)
