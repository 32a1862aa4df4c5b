"""Workflow CRUD for the caller's own workflows (reference §2.2, §5.2, §5.4, §6.2).

Validation and decisions are pure domain code (:mod:`domain.workflow_spec`, :mod:`domain.filters`);
SQL, the outbox rows and cache invalidation live in :mod:`store.workflows`.  This class only wires
them to the caller in :class:`~serve_apps.services.context.CallContext`.
"""

from __future__ import annotations

import logging

from domain.config import WorkflowsServiceConfig
from domain.models import Page, Workflow
from domain.workflow_spec import prepare_create, prepare_update
from serve_apps.resources import ServiceResources
from serve_apps.schemas.workflows import (
    CreateWorkflowCommand,
    ListWorkflowsQuery,
    UpdateWorkflowCommand,
    WorkflowCreated,
    WorkflowDetail,
    WorkflowItem,
    WorkflowList,
    WorkflowRef,
)
from serve_apps.services.context import CallContext, service_method
from store import workflows as workflows_repo
from store.cache import Cache

log = logging.getLogger(__name__)


def workflow_detail(workflow: Workflow) -> WorkflowDetail:
    """``GET /workflows/{id}``'s answer for a workflow (from the database or the cache)."""
    return WorkflowDetail.from_record(workflow)


def workflow_list(page: Page[Workflow]) -> WorkflowList:
    """``GET /workflows``'s answer for a page of workflows (from the database or the cache)."""
    return WorkflowList(workflows=[WorkflowItem.from_record(w) for w in page.items], cursor=page.cursor)


async def cached_workflow(cache: Cache, ctx: CallContext, ref: WorkflowRef) -> WorkflowDetail | None:
    """The caller's workflow if the read-through cache holds a current entry, else ``None``.

    Safe to answer from anywhere that shares the service's Redis (the gateway does, to skip the
    handle hop): the key carries the caller's id, so another user's workflow is never found, and
    an entry is only current while the user's cache epoch is the one it was stored under (every
    mutation replaces the epoch before it returns).  A miss or a Redis failure is ``None``: ask
    :meth:`WorkflowsService.get_workflow`, which reads PostgreSQL and fills the cache.
    """
    lookup = await cache.get_workflow(ctx.require_user(), ref.workflow_id)
    return None if lookup.value is None else workflow_detail(lookup.value)


async def cached_workflow_list(
    cache: Cache, ctx: CallContext, query: ListWorkflowsQuery
) -> WorkflowList | None:
    """A cached page of the caller's workflows (``None`` on a miss), as :func:`cached_workflow`."""
    lookup = await cache.get_workflow_page(ctx.require_user(), query.cursor, query.filters)
    return None if lookup.value is None else workflow_list(lookup.value)


class WorkflowsService:
    """Create, read, list, update, terminate and delete the caller's workflows."""

    def __init__(self, resources: ServiceResources, config: WorkflowsServiceConfig) -> None:
        self.resources = resources
        self.config = config

    @service_method
    async def create_workflow(self, ctx: CallContext, cmd: CreateWorkflowCommand) -> WorkflowCreated:
        """Create (QUEUED, generation 1, outbox BUILD), idempotently by ``cmd.idempotency_key``."""
        req = cmd.request
        draft = prepare_create(
            name=req.name,
            payload=req.payload,
            kind=req.kind,
            interval=req.interval,
            max_consecutive_job_failures_allowed=req.max_consecutive_job_failures_allowed,
            log_retention=req.log_retention,
        )
        workflow_id = await workflows_repo.create(
            await self.resources.pool(),
            user_id=ctx.require_user(),
            draft=draft,
            idempotency_key=cmd.idempotency_key,
            cache=self.resources.cache(),
        )
        return WorkflowCreated(id=workflow_id)

    @service_method
    async def update_workflow(self, ctx: CallContext, cmd: UpdateWorkflowCommand) -> None:
        """PUT: replace name/payload/interval/max failures; rebuild or reschedule as §5.2 decides."""
        req = cmd.request
        changes = prepare_update(
            name=req.name,
            payload=req.payload,
            interval=req.interval,
            max_consecutive_job_failures_allowed=req.max_consecutive_job_failures_allowed,
        )
        await workflows_repo.update(
            await self.resources.pool(),
            user_id=ctx.require_user(),
            workflow_id=cmd.workflow_id,
            changes=changes,
            idempotency_key=cmd.idempotency_key,
            cache=self.resources.cache(),
        )

    @service_method
    async def get_workflow(self, ctx: CallContext, ref: WorkflowRef) -> WorkflowDetail:
        """One of the caller's workflows (404 for anyone else's)."""
        workflow = await workflows_repo.get(
            await self.resources.pool(), ctx.require_user(), ref.workflow_id, cache=self.resources.cache()
        )
        return workflow_detail(workflow)

    @service_method
    async def list_workflows(self, ctx: CallContext, query: ListWorkflowsQuery) -> WorkflowList:
        """A page of the caller's workflows, newest first."""
        page = await workflows_repo.list_workflows(
            await self.resources.pool(),
            ctx.require_user(),
            cursor=query.cursor,
            filters=query.filters,
            page_size=self.config.service_config_fetch_limit,
            cache=self.resources.cache(),
        )
        return workflow_list(page)

    @service_method
    async def terminate_workflow(self, ctx: CallContext, ref: WorkflowRef) -> None:
        """PATCH: terminate (idempotent; outbox TERMINATE)."""
        await workflows_repo.terminate(
            await self.resources.pool(),
            user_id=ctx.require_user(),
            workflow_id=ref.workflow_id,
            cache=self.resources.cache(),
        )

    @service_method
    async def delete_workflow(self, ctx: CallContext, ref: WorkflowRef) -> None:
        """DELETE a terminated workflow without a running job (412 otherwise; outbox DELETE)."""
        await workflows_repo.delete(
            await self.resources.pool(),
            user_id=ctx.require_user(),
            workflow_id=ref.workflow_id,
            cache=self.resources.cache(),
        )

    async def cleanup_idempotency_keys(self) -> int:
        """Purge expired idempotency keys until a batch comes back short; return how many."""
        pool = await self.resources.pool()
        total = 0
        while True:
            deleted = await workflows_repo.cleanup_expired_idempotency_keys(
                pool, batch_size=self.config.cleanup_batch_size
            )
            total += deleted
            if deleted < self.config.cleanup_batch_size:
                return total
