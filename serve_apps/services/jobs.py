"""Jobs of the caller's workflows: list, read and manual runs (reference §2.2; SPEC §5.4).

The log routes (``/logs``, ``/logs/search``, ``/logs/raw``, ``/events``) belong to the execution
issue and will add their methods here, reading the log store.
"""

from __future__ import annotations

from domain.config import JobsServiceConfig
from serve_apps.resources import ServiceResources
from serve_apps.schemas.jobs import JobCreated, JobList, JobOut, JobRef, ListJobsQuery, ScheduleJobCommand
from serve_apps.services.context import CallContext, service_method
from store import jobs as jobs_repo


class JobsService:
    """Read the caller's jobs and schedule manual runs of the caller's workflows."""

    def __init__(self, resources: ServiceResources, config: JobsServiceConfig) -> None:
        self.resources = resources
        self.config = config

    @service_method
    async def list_jobs(self, ctx: CallContext, query: ListJobsQuery) -> JobList:
        """A page of a workflow's jobs, newest first (empty for a workflow that is not the caller's)."""
        page = await jobs_repo.list_jobs(
            await self.resources.pool(),
            ctx.require_user(),
            query.workflow_id,
            cursor=query.cursor,
            filters=query.filters,
            page_size=self.config.fetch_limit,
        )
        return JobList(jobs=[JobOut.from_record(j) for j in page.items], cursor=page.cursor)

    @service_method
    async def get_job(self, ctx: CallContext, ref: JobRef) -> JobOut:
        """One job of one of the caller's workflows (404 otherwise)."""
        job = await jobs_repo.get(
            await self.resources.pool(), ctx.require_user(), ref.workflow_id, ref.job_id
        )
        return JobOut.from_record(job)

    @service_method
    async def schedule_job(self, ctx: CallContext, cmd: ScheduleJobCommand) -> JobCreated:
        """A manual run now; the same idempotency key returns the same job (404 for a foreign
        workflow, 412 for a terminated one)."""
        job_id = await jobs_repo.schedule_manual(
            await self.resources.pool(),
            user_id=ctx.require_user(),
            workflow_id=cmd.workflow_id,
            idempotency_key=cmd.idempotency_key,
        )
        return JobCreated(id=job_id)
