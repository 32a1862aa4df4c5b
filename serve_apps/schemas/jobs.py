"""Jobs of a workflow (reference §2.2)."""

from __future__ import annotations

from uuid import UUID

from pydantic import Field

from domain.enums import FailureKind, JobStatus, JobTrigger
from domain.filters import JobFilters
from domain.models import Job
from serve_apps.schemas.common import OutModel, Timestamp


class JobRef(OutModel):
    """Names one job of one of the caller's workflows."""

    workflow_id: UUID
    job_id: UUID


class ListJobsQuery(OutModel):
    """Handle argument of ``JobsService.list_jobs``."""

    workflow_id: UUID
    cursor: str | None = None
    filters: JobFilters = Field(default_factory=JobFilters)


class ScheduleJobCommand(OutModel):
    """Handle argument of ``JobsService.schedule_job`` (a manual run)."""

    workflow_id: UUID
    idempotency_key: str


class JobCreated(OutModel):
    """``POST /workflows/{id}/jobs/schedule`` → 201 (the same key returns the same id)."""

    id: UUID


class JobOut(OutModel):
    """A job.  ``failure_kind``/``last_error_*`` say why a failed (or retried) job failed."""

    id: UUID
    workflow_id: UUID
    status: JobStatus
    trigger: JobTrigger
    scheduled_at: Timestamp
    started_at: Timestamp | None
    completed_at: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp
    attempts: int
    failure_kind: FailureKind | None
    last_error_code: str | None
    last_error_message: str | None

    @classmethod
    def from_record(cls, job: Job) -> JobOut:
        return cls(
            id=job.id,
            workflow_id=job.workflow_id,
            status=job.status,
            trigger=job.trigger,
            scheduled_at=job.scheduled_at,
            started_at=job.started_at,
            completed_at=job.completed_at,
            created_at=job.created_at,
            updated_at=job.updated_at,
            attempts=job.attempts,
            failure_kind=job.failure_kind,
            last_error_code=job.last_error_code,
            last_error_message=job.last_error_message,
        )


class JobList(OutModel):
    """A page of 10 jobs, newest first; ``cursor`` is null on the last page."""

    jobs: list[JobOut]
    cursor: str | None
