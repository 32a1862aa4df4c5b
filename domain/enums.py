"""Every enumerated value of the data model (reference §3.1, §3.5, §8)."""

from __future__ import annotations

from enum import StrEnum


class NotificationPreference(StrEnum):
    ALERTS = "ALERTS"
    ALL = "ALL"
    NONE = "NONE"


class WorkflowKind(StrEnum):
    HEARTBEAT = "HEARTBEAT"
    CONTAINER = "CONTAINER"
    RAY = "RAY"


class WorkflowBuildStatus(StrEnum):
    QUEUED = "QUEUED"
    STARTED = "STARTED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"


class JobStatus(StrEnum):
    PENDING = "PENDING"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED)


class JobTrigger(StrEnum):
    AUTOMATIC = "AUTOMATIC"
    MANUAL = "MANUAL"


class FailureKind(StrEnum):
    USER = "USER"
    SYSTEM = "SYSTEM"


class IdempotencyStatus(StrEnum):
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


class OutboxStatus(StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    PUBLISHED = "PUBLISHED"
    FAILED = "FAILED"
    DEAD = "DEAD"


class WorkflowAction(StrEnum):
    BUILD = "BUILD"
    RESCHEDULE = "RESCHEDULE"
    TERMINATE = "TERMINATE"
    DELETE = "DELETE"
    JOB_COMPLETED = "JOB_COMPLETED"
    JOB_FAILED = "JOB_FAILED"


class AnalyticsEventType(StrEnum):
    WORKFLOWS = "WORKFLOWS"
    JOBS = "JOBS"
    LOGS = "LOGS"


class NotificationKind(StrEnum):
    WEB_ALERT = "WEB_ALERT"
    WEB_ERROR = "WEB_ERROR"
    WEB_WARN = "WEB_WARN"
    WEB_SUCCESS = "WEB_SUCCESS"
    WEB_INFO = "WEB_INFO"


class LogStream(StrEnum):
    STDOUT = "stdout"
    STDERR = "stderr"


class ResourceClass(StrEnum):
    """Ray custom resource that an actor pool requests, so node types can be targeted."""

    LOW = "low"
    HIGH = "high"
