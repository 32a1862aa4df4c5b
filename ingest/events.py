"""Kafka record schemas.  They are defined in :mod:`domain.events` (the store writes them as outbox
payloads); ingest re-exports them so producers and consumers import from their own package."""

from domain.events import (
    ALL_TOPICS,
    ANALYTICS,
    EVENT_TYPES,
    JOB_LOGS,
    JOBS,
    WORKFLOWS,
    AnalyticEvent,
    Event,
    JobLogEvent,
    ScheduledJobEntry,
    WorkflowEvent,
)

__all__ = [
    "ALL_TOPICS",
    "ANALYTICS",
    "EVENT_TYPES",
    "JOBS",
    "JOB_LOGS",
    "WORKFLOWS",
    "AnalyticEvent",
    "Event",
    "JobLogEvent",
    "ScheduledJobEntry",
    "WorkflowEvent",
]
