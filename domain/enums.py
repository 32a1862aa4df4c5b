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


class LogDownloadFormat(StrEnum):
    """File format of ``GET …/logs/raw`` (reference §2.4)."""

    TXT = "txt"
    JSON = "json"
    JSONL = "jsonl"


class ResourceClass(StrEnum):
    """Ray custom resource that an actor pool requests, so node types can be targeted."""

    LOW = "low"
    HIGH = "high"


class ExecutionErrorCode(StrEnum):
    """Why a job run did not complete (``jobs.last_error_code``).  :mod:`domain.execution` maps each
    code to USER (the workload's fault: no retry) or SYSTEM (ours: retried with backoff)."""

    CONTAINER_EXIT_NONZERO = "container_exit_nonzero"
    CONTAINER_TIMED_OUT = "container_timed_out"
    CONTAINER_OUT_OF_MEMORY = "container_out_of_memory"
    IMAGE_NOT_FOUND = "image_not_found"
    CONTAINER_CREATE_FAILED = "container_create_failed"
    CONTAINER_START_FAILED = "container_start_failed"
    CONTAINER_RUNTIME_UNAVAILABLE = "container_runtime_unavailable"
    CONTAINER_MISSING = "container_missing"
    UNEXPECTED_STATUS = "unexpected_status"
    INVALID_ENDPOINT = "invalid_endpoint"
    ENDPOINT_UNREACHABLE = "endpoint_unreachable"
    INVALID_PAYLOAD = "invalid_payload"
    TASK_FAILED = "task_failed"
    TASK_TIMED_OUT = "task_timed_out"
    TASK_UNAVAILABLE = "task_unavailable"
    WORKFLOW_NOT_READY = "workflow_not_ready"
    SCHEDULE_FAILED = "schedule_failed"
    LEASE_EXPIRED = "lease_expired"
    CANCELED = "canceled"
    INTERNAL = "internal"


class StackComponent(StrEnum):
    """A part of the local embedded stack that ``chronoverse up`` starts (or finds external)."""

    POSTGRES = "postgres"
    REDIS = "redis"
    KAFKA = "kafka"
    CLICKHOUSE = "clickhouse"
    DOCKER = "docker"
    RAY = "ray"


class ComponentState(StrEnum):
    """What ``chronoverse status`` reports for one stack component."""

    RUNNING = "running"  # started by us and healthy
    EMBEDDED = "embedded"  # in-process engine (chdb): no process, data directory ready
    EXTERNAL = "external"  # configured elsewhere (or found already running) and healthy
    UNAVAILABLE = "unavailable"  # optional part that cannot be had here (Docker); not a failure
    DOWN = "down"
