"""Kafka topic names and their explicit creation (reference §3.5: auto-create is never relied on).

Partition counts come from the cluster file (``deploy/chronoverse.yaml`` → ``ClusterSpec.topics``).
Two broker facts shape this module (infra-notes §1a):

* tansu auto-creates a topic (with its own default partition count) when a *Metadata* request
  names it, so we only ever describe topics that :func:`list_topics` already returned;
* tansu has no CreatePartitions, so a topic created with fewer partitions than configured keeps
  them: we warn and carry on rather than fail start-up.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from domain.config import KafkaConfig
from domain.durations import parse_duration
from domain.errors import Unavailable
from domain.events import ALL_TOPICS, ANALYTICS, JOB_LOGS, JOBS, WORKFLOWS
from domain.topology import TopicSpec
from ingest.connection import connection_options

log = logging.getLogger(__name__)

__all__ = ["ALL_TOPICS", "ANALYTICS", "JOBS", "JOB_LOGS", "WORKFLOWS", "describe_topics", "ensure_topics"]

_TOPIC_ALREADY_EXISTS = 36
_ADMIN_CLIENT_ID = "chronoverse-admin"


def _new_topic(cfg: KafkaConfig, name: str, spec: TopicSpec) -> NewTopic:
    retention_ms = int(parse_duration(spec.retention).total_seconds() * 1000)
    # KAFKA_TOPIC_REPLICATION_FACTOR can raise the cluster file's factor for a real cluster.
    replication = max(spec.replication_factor, cfg.topic_replication_factor)
    return NewTopic(name, spec.partitions, replication, topic_configs={"retention.ms": str(retention_ms)})


async def _partition_counts(admin: AIOKafkaAdminClient, names: Iterable[str]) -> dict[str, int]:
    wanted = set(names)
    existing = wanted & set(await admin.list_topics())
    if not existing:
        return {}
    described: list[dict[str, Any]] = await admin.describe_topics(sorted(existing))
    return {item["topic"]: len(item["partitions"]) for item in described if item["topic"] in existing}


async def ensure_topics(cfg: KafkaConfig, topics: dict[str, TopicSpec]) -> None:
    """Create every topic of ``topics`` that does not exist yet, with its configured partitions,
    replication factor and ``retention.ms``.  Existing topics are left alone; one with fewer
    partitions than configured is logged as a warning (the broker may not support adding any).

    Raises :class:`~domain.errors.Unavailable` when the broker cannot be reached or refuses a topic.
    """
    admin = AIOKafkaAdminClient(**connection_options(cfg, client_id=_ADMIN_CLIENT_ID))
    try:
        await admin.start()
        counts = await _partition_counts(admin, topics)
        missing = [_new_topic(cfg, name, spec) for name, spec in topics.items() if name not in counts]
        if missing:
            response = await admin.create_topics(missing)
            for item in response.topic_errors:
                name, code = item[0], item[1]
                message = item[2] if len(item) > 2 else ""
                if code not in (0, _TOPIC_ALREADY_EXISTS):  # "exists" = another process won the race
                    raise Unavailable(f"creating Kafka topic {name!r} failed: error {code} {message or ''}")
                log.info("kafka topic %s ready (%d partitions)", name, topics[name].partitions)
        for name, have in counts.items():
            want = topics[name].partitions
            if have < want:
                log.warning(
                    "kafka topic %s has %d partitions but %d are configured; the broker cannot add "
                    "partitions here, so consumers beyond %d stay idle",
                    name, have, want, have,
                )
    except KafkaError as err:
        raise Unavailable(f"kafka at {cfg.brokers}: {err}") from err
    finally:
        await admin.close()


async def describe_topics(cfg: KafkaConfig, names: Iterable[str]) -> dict[str, int]:
    """Partition count of each named topic that exists (missing topics are omitted, never created)."""
    admin = AIOKafkaAdminClient(**connection_options(cfg, client_id=_ADMIN_CLIENT_ID))
    try:
        await admin.start()
        return await _partition_counts(admin, names)
    except KafkaError as err:
        raise Unavailable(f"kafka at {cfg.brokers}: {err}") from err
    finally:
        await admin.close()
