"""Records of the data model (reference §3.1) as the repositories return them.

These are the *internal* shapes: every column a caller may need (workers read lease and generation
columns).  The HTTP layer picks the public fields for its own response models.  Timestamps are
naive UTC, as stored in PostgreSQL; render them with :func:`domain.timestamps.format_rfc3339nano`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from domain.enums import (
    FailureKind,
    JobStatus,
    JobTrigger,
    NotificationKind,
    NotificationPreference,
    WorkflowBuildStatus,
    WorkflowKind,
)
from domain.workflow_update import UpdateAction

T = TypeVar("T")


class Record(BaseModel):
    """Base of every stored record: immutable and strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class User(Record):
    """A registered user (no password hash: see :class:`UserCredentials`)."""

    id: UUID
    email: str
    notification_preference: NotificationPreference
    created_at: datetime
    updated_at: datetime


class UserCredentials(Record):
    """What login needs: the id and the bcrypt hash for an email."""

    id: UUID
    email: str
    password_hash: str = Field(repr=False)


class Workflow(Record):
    """A workflow row.  ``payload`` is the parsed JSON object; validate it per kind with
    :func:`domain.payloads.validate_payload` before use."""

    id: UUID
    user_id: UUID
    name: str
    payload: dict[str, Any]
    kind: WorkflowKind
    build_status: WorkflowBuildStatus
    interval: int
    consecutive_job_failures_count: int
    max_consecutive_job_failures_allowed: int
    created_at: datetime
    updated_at: datetime
    terminated_at: datetime | None
    log_retention: bool
    log_retention_ttl_seconds: int | None
    generation: int
    build_hash: str | None

    @property
    def terminated(self) -> bool:
        return self.terminated_at is not None


class Job(Record):
    """A job row with its lease/retry columns."""

    id: UUID
    workflow_id: UUID
    user_id: UUID
    container_id: str | None
    status: JobStatus
    trigger: JobTrigger
    scheduled_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    idempotency_key: str | None
    queued_at: datetime | None
    lease_token: str | None = Field(repr=False)
    leased_by: str | None
    lease_expires_at: datetime | None
    last_heartbeat_at: datetime | None
    dispatch_attempts: int
    attempts: int
    next_attempt_at: datetime | None
    failure_kind: FailureKind | None
    last_error_code: str | None
    last_error_message: str | None


class Notification(Record):
    """A notification; ``payload`` is ``{"title","message","entity_id","entity_type","action_url"}``."""

    id: UUID
    user_id: UUID
    kind: NotificationKind
    payload: dict[str, Any]
    read_at: datetime | None
    created_at: datetime
    updated_at: datetime


class UserAnalytics(Record):
    """Aggregates over every analytics row of a user (deleted workflows included); zeros for new users."""

    total_workflows: int = 0
    total_jobs: int = 0
    total_joblogs: int = 0
    total_job_execution_duration: int = 0  # seconds


class WorkflowAnalytics(Record):
    """One workflow's analytics row."""

    workflow_id: UUID
    kind: str
    total_job_execution_duration: int  # seconds
    total_jobs: int
    total_joblogs: int
    # Our additions: outcome counters and duration percentiles (None until a job has finished).
    jobs_succeeded: int = 0
    jobs_failed: int = 0
    duration_p50_s: float | None = None
    duration_p95_s: float | None = None


class ApiToken(Record):
    """A personal API token's metadata (never the token itself; only its sha256 is stored)."""

    id: UUID
    user_id: UUID
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None


class IssuedApiToken(Record):
    """The result of creating a token: the secret (shown once) and its record."""

    token: str = Field(repr=False)
    record: ApiToken


class Session(Record):
    """A login session: the opaque id (cookie value), its user and the CSRF token bound to it."""

    session_id: str = Field(repr=False)
    user_id: UUID
    csrf_token: str = Field(repr=False)
    expires_at: datetime


class Page(BaseModel, Generic[T]):
    """One page of a newest-first listing; ``cursor`` is ``None`` on the last page."""

    model_config = ConfigDict(frozen=True)

    items: list[T]
    cursor: str | None = None


class WorkflowDraft(Record):
    """A validated create request, ready to insert (see :func:`domain.workflow_spec.prepare_create`)."""

    name: str
    payload: dict[str, Any]
    kind: WorkflowKind
    interval: int
    max_consecutive_job_failures_allowed: int
    log_retention: bool
    log_retention_ttl_seconds: int | None
    build_hash: str | None


class WorkflowChanges(Record):
    """A validated update request (kind-independent part; the payload is checked against the
    stored kind inside the update transaction, see :func:`domain.workflow_spec.prepare_update`)."""

    name: str
    payload: dict[str, Any]
    interval: int
    max_consecutive_job_failures_allowed: int


class WorkflowUpdateResult(Record):
    """What an update did: the decision, the generation after it, and whether it was a replay of an
    earlier request with the same idempotency key (then nothing changed)."""

    action: UpdateAction
    generation: int
    replayed: bool
