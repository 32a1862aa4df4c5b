"""Jobs of the caller's workflows: list, read and manual runs (reference §2.2; SPEC §5.4), and
their logs (reference §2.2-2.4, §8; SPEC §5.6).

Log reads are scoped like every other read: the workflow and the job must be the caller's (404),
and the workflow must keep logs (412, every HEARTBEAT included).  The log store answers pages and
searches; the gateway turns download pages and the live Redis channel into streams itself.
"""

from __future__ import annotations

from uuid import UUID

from domain.config import JobsServiceConfig
from domain.enums import JobStatus
from domain.errors import Invalid, PreconditionFailed
from domain.log_cursor import LogCursor
from domain.models import Job
from serve_apps.resources import ServiceResources
from serve_apps.schemas.job_logs import (
    JobLogsPage,
    JobLogsSearchPage,
    LogDownloadQuery,
    LogLineOut,
    LogSearchQuery,
    LogsQuery,
)
from serve_apps.schemas.jobs import JobCreated, JobList, JobOut, JobRef, ListJobsQuery, ScheduleJobCommand
from serve_apps.services.context import CallContext, service_method
from store import jobs as jobs_repo
from store import workflows as workflows_repo
from store.logstore import MAX_PAGE_SIZE, LogPage, LogStore, new_highlight_token

#: Lines per page of a raw download (the gateway asks for pages until there is no cursor).
DOWNLOAD_PAGE_SIZE = MAX_PAGE_SIZE


class JobsService:
    """Read the caller's jobs and their logs, and schedule manual runs of the caller's workflows.

    ``logs`` is the job-log store; without one, the cluster's store is looked up from the
    settings on first use (:func:`store.logstore.remote.log_store_client`).
    """

    def __init__(
        self, resources: ServiceResources, config: JobsServiceConfig, logs: LogStore | None = None
    ) -> None:
        self.resources = resources
        self.config = config
        self._logs = logs

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

    # -- logs --------------------------------------------------------------------------------

    def logs(self) -> LogStore:
        """The job-log store (built from the settings on first use when none was given)."""
        if self._logs is None:
            from store.logstore.remote import log_store_client  # imports Ray: only when needed

            settings = self.resources.settings
            self._logs = log_store_client(settings.clickhouse, settings.ray.namespace)
        return self._logs

    async def _log_owner(self, user_id: UUID, workflow_id: UUID, job_id: UUID) -> Job:
        """The caller's job of a workflow that keeps logs: 404 for a foreign or missing workflow or
        job, 412 when the workflow keeps no logs (every HEARTBEAT)."""
        pool = await self.resources.pool()
        workflow = await workflows_repo.get(pool, user_id, workflow_id, cache=self.resources.cache())
        if not workflow.log_retention:
            raise PreconditionFailed(
                f"logs retention is disabled for workflow: {workflow_id}", code="log_retention_disabled"
            )
        return await jobs_repo.get(pool, user_id, workflow_id, job_id)

    @staticmethod
    def _lines(page: LogPage) -> tuple[list[LogLineOut], str | None]:
        return [LogLineOut.from_entry(e) for e in page.logs], page.cursor.encode() if page.cursor else None

    @staticmethod
    def _cursor(token: str | None) -> LogCursor | None:
        return LogCursor.decode(token) if token else None

    @service_method
    async def list_logs(self, ctx: CallContext, query: LogsQuery) -> JobLogsPage:
        """A page of a job's lines, newest first (``JOBS_SERVICE_CONFIG_LOGS_FETCH_LIMIT`` per page)."""
        cursor = self._cursor(query.cursor)
        user_id = ctx.require_user()
        await self._log_owner(user_id, query.workflow_id, query.job_id)
        page = await self.logs().page(
            user_id, query.workflow_id, query.job_id, cursor=cursor, limit=self.config.logs_fetch_limit
        )
        logs, next_cursor = self._lines(page)
        return JobLogsPage(id=query.job_id, workflow_id=query.workflow_id, logs=logs, cursor=next_cursor)

    @service_method
    async def search_logs(self, ctx: CallContext, query: LogSearchQuery) -> JobLogsSearchPage:
        """A page of a job's lines containing ``q`` (case-insensitive), newest first, matches marked
        with a fresh highlight token; a blank ``q`` is the plain page filtered by ``stream``."""
        cursor = self._cursor(query.cursor)
        user_id = ctx.require_user()
        await self._log_owner(user_id, query.workflow_id, query.job_id)
        token: str | None = None
        if query.q.strip():
            token = new_highlight_token()
            page = await self.logs().search(
                user_id, query.workflow_id, query.job_id, query=query.q, stream=query.stream,
                cursor=cursor, limit=self.config.logs_fetch_limit, highlight_token=token,
            )
        else:
            page = await self.logs().page(
                user_id, query.workflow_id, query.job_id, stream=query.stream, cursor=cursor,
                limit=self.config.logs_fetch_limit,
            )
        logs, next_cursor = self._lines(page)
        return JobLogsSearchPage(
            id=query.job_id, workflow_id=query.workflow_id, logs=logs, cursor=next_cursor,
            highlight_token=token,
        )

    @service_method
    async def download_page(self, ctx: CallContext, query: LogDownloadQuery) -> JobLogsPage:
        """One oldest-first page of a finished job's lines for the raw download (no highlighting).

        400 ``job is not yet completed`` unless the job is COMPLETED, FAILED or CANCELED; 412 when
        the workflow keeps no logs.  Checked on every page, so a download never outlives access.
        """
        cursor = self._cursor(query.cursor)
        user_id = ctx.require_user()
        job = await self._log_owner(user_id, query.workflow_id, query.job_id)
        if not job.status.terminal:
            raise Invalid("job is not yet completed", code="job_not_completed")
        if query.q.strip():
            page = await self.logs().search(
                user_id, query.workflow_id, query.job_id, query=query.q, stream=query.stream,
                cursor=cursor, limit=DOWNLOAD_PAGE_SIZE, ascending=True,
            )
        else:
            page = await self.logs().page(
                user_id, query.workflow_id, query.job_id, stream=query.stream, cursor=cursor,
                limit=DOWNLOAD_PAGE_SIZE, ascending=True,
            )
        logs, next_cursor = self._lines(page)
        return JobLogsPage(id=query.job_id, workflow_id=query.workflow_id, logs=logs, cursor=next_cursor)

    @service_method
    async def open_live_logs(self, ctx: CallContext, ref: JobRef) -> JobOut:
        """The preconditions of ``GET …/events``: the caller's RUNNING job of a workflow that keeps
        logs (404 / 412 ``logs retention is disabled …`` / 412 ``job is not running: <status>``).
        The gateway then follows the job's live channel itself."""
        job = await self._log_owner(ctx.require_user(), ref.workflow_id, ref.job_id)
        if job.status is not JobStatus.RUNNING:
            raise PreconditionFailed(f"job is not running: {job.status.value}", code="job_not_running")
        return JobOut.from_record(job)
