"""The payload of every Kafka record (reference §3.5), as pydantic models.

Wire format: snake_case JSON with every field present (no omitted zero values — a deliberate change
from the seed's PascalCase Go structs), timestamps in RFC 3339 with nanosecond precision
(``2025-01-02T03:04:05.123456Z``), ids as their canonical UUID text, "no value" as ``""``.
Each model knows its topic and the record key that partitions it (per-workflow ordering on
``workflows``/``jobs``/``analytics``, per-job on ``job_logs``).

Decoding ignores unknown fields so a newer producer can add one without stalling older consumers.

These schemas live in ``domain`` (pure pydantic) because the store writes them as outbox payloads
in the same transaction as the state change; ``ingest`` publishes and consumes them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from domain.enums import AnalyticsEventType, FailureKind, LogStream, WorkflowAction, WorkflowKind
from domain.event_keys import analytics_job_key, analytics_workflow_key, parse_rfc3339nano, rfc3339nano

# Topic names (reference §3.5).  Partitions come from the cluster file.
WORKFLOWS = "workflows"
JOBS = "jobs"
JOB_LOGS = "job_logs"
ANALYTICS = "analytics"
ALL_TOPICS = (WORKFLOWS, JOBS, JOB_LOGS, ANALYTICS)


def _parse_time(value: object) -> object:
    return parse_rfc3339nano(value) if isinstance(value, str) else value


def _as_utc(value: datetime) -> datetime:
    # Naive values come from PostgreSQL TIMESTAMP WITHOUT TIME ZONE columns, which hold UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


WireTime = Annotated[
    datetime,
    BeforeValidator(_parse_time),
    AfterValidator(_as_utc),
    PlainSerializer(rfc3339nano, return_type=str, when_used="json"),
]
"""A datetime that travels as RFC 3339 "nano" text; always an aware UTC datetime in Python."""

Uint32 = Annotated[int, Field(ge=0, le=2**32 - 1)]


class Event(BaseModel):
    """Base of every record payload: immutable, ``topic`` and :meth:`record_key` per subclass."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    topic: ClassVar[str]

    event_key: str

    def record_key(self) -> str:
        """The Kafka record key (decides the partition, hence the ordering scope)."""
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """The record value: complete JSON, UTF-8."""
        return self.model_dump_json().encode()


class WorkflowEvent(Event):
    """``workflows`` topic: a workflow lifecycle step or a terminal job outcome of the workflow."""

    topic: ClassVar[str] = WORKFLOWS

    id: str  # the workflow id
    user_id: str = ""
    action: WorkflowAction
    generation: int = Field(default=0, ge=0)  # 0 = never stale (DELETE and job outcomes)
    job_id: str = ""
    failure_kind: FailureKind | Literal[""] = ""
    error_code: str = ""
    error_message: str = ""

    def record_key(self) -> str:
        return self.id


class ScheduledJobEntry(Event):
    """``jobs`` topic: a QUEUED job dispatched to the execution workers."""

    topic: ClassVar[str] = JOBS

    job_id: str
    workflow_id: str
    scheduled_at: WireTime
    dispatch_attempt: int = Field(gt=0)  # the claim must match the job's dispatch_attempts
    workflow_generation: int = Field(default=0, ge=0)

    def record_key(self) -> str:
        return self.workflow_id


class JobLogEvent(Event):
    """``job_logs`` topic: one line of a job's output (every line, retained or not)."""

    topic: ClassVar[str] = JOB_LOGS

    job_id: str
    workflow_id: str
    user_id: str
    message: str
    timestamp: WireTime
    sequence_num: Uint32
    stream: LogStream
    retention: bool
    live_published: bool = False
    attempt: int = Field(default=1, ge=1)

    def record_key(self) -> str:
        return self.job_id


class AnalyticEvent(Event):
    """``analytics`` topic.  ``data`` is ``{"kind"}`` (WORKFLOWS), ``{"job_execution_duration"}``
    in whole seconds plus our ``"succeeded"`` (JOBS) or ``{"count"}`` (LOGS).  An empty ``event_key``
    disables dedupe."""

    topic: ClassVar[str] = ANALYTICS

    user_id: str
    workflow_id: str
    event_type: AnalyticsEventType
    data: dict[str, Any] = Field(default_factory=dict)

    def record_key(self) -> str:
        return self.workflow_id

    @classmethod
    def workflow_built(cls, *, user_id: str, workflow_id: str, kind: WorkflowKind) -> AnalyticEvent:
        """The WORKFLOWS event of a workflow's first build (creates its analytics row)."""
        return cls(
            event_key=analytics_workflow_key(workflow_id),
            user_id=user_id,
            workflow_id=workflow_id,
            event_type=AnalyticsEventType.WORKFLOWS,
            data={"kind": WorkflowKind(kind).value},
        )

    @classmethod
    def job_finished(
        cls,
        *,
        user_id: str,
        workflow_id: str,
        job_id: str,
        execution_seconds: int,
        succeeded: bool | None = None,
    ) -> AnalyticEvent:
        """The JOBS event of a COMPLETED or FAILED job (one per job, whatever the outcome).

        ``succeeded`` (COMPLETED → True, FAILED → False) feeds the per-workflow success/failure
        counters, our addition to the seed's data; ``None`` leaves it out, as the seed's events do.
        """
        data: dict[str, Any] = {"job_execution_duration": max(0, int(execution_seconds))}
        if succeeded is not None:
            data["succeeded"] = succeeded
        return cls(
            event_key=analytics_job_key(job_id),
            user_id=user_id,
            workflow_id=workflow_id,
            event_type=AnalyticsEventType.JOBS,
            data=data,
        )


EVENT_TYPES: dict[str, type[Event]] = {
    WORKFLOWS: WorkflowEvent,
    JOBS: ScheduledJobEntry,
    JOB_LOGS: JobLogEvent,
    ANALYTICS: AnalyticEvent,
}
"""The payload model of each topic."""
