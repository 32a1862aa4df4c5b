"""``/workflows/{workflow_id}/jobs``: list, read and run now (reference §2.2; SPEC §5.4)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Response, status

from domain.enums import JobStatus, JobTrigger
from domain.filters import JobFilters
from serve_apps.gateway.dependencies import Caller, IdempotencyKey, MutatingCaller, State
from serve_apps.gateway.errors import error_responses
from serve_apps.schemas.jobs import JobCreated, JobList, JobOut, JobRef, ListJobsQuery, ScheduleJobCommand

router = APIRouter(prefix="/workflows/{workflow_id}/jobs", tags=["jobs"])

#: A finished job never changes again.  ``private``: job data is per-user and must not be kept by
#: shared caches (the seed said ``public``).
TERMINAL_JOB_CACHE_CONTROL = "private, max-age=7200"


@router.get("", response_model=JobList, responses=error_responses(401), summary="List a workflow's jobs")
async def list_jobs(
    workflow_id: UUID,
    ctx: Caller,
    state: State,
    cursor: Annotated[str | None, Query(description="From the previous page.")] = None,
    status_filter: Annotated[JobStatus | None, Query(alias="status")] = None,
    trigger: JobTrigger | None = None,
) -> JobList:
    """Ten per page, newest first (empty for a workflow that is not the caller's)."""
    filters = JobFilters.parse(status=status_filter, trigger=trigger)
    return await state.services.jobs.list_jobs(
        ctx, ListJobsQuery(workflow_id=workflow_id, cursor=cursor, filters=filters)
    )


@router.post(
    "/schedule",
    status_code=status.HTTP_201_CREATED,
    response_model=JobCreated,
    responses=error_responses(401, 403, 404, 412),
    summary="Run the workflow now",
)
async def schedule_job(
    workflow_id: UUID, ctx: MutatingCaller, key: IdempotencyKey, state: State
) -> JobCreated:
    """A MANUAL job due now; the same key returns the same job."""
    return await state.services.jobs.schedule_job(
        ctx, ScheduleJobCommand(workflow_id=workflow_id, idempotency_key=key)
    )


@router.get("/{job_id}", response_model=JobOut, responses=error_responses(401, 404), summary="Read a job")
async def get_job(workflow_id: UUID, job_id: UUID, ctx: Caller, state: State, response: Response) -> JobOut:
    """Finished jobs may be cached by the browser for two hours."""
    job = await state.services.jobs.get_job(ctx, JobRef(workflow_id=workflow_id, job_id=job_id))
    response.headers["Cache-Control"] = TERMINAL_JOB_CACHE_CONTROL if job.status.terminal else "no-store"
    return job
