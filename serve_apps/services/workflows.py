"""Workflow CRUD for the caller's own workflows (reference §2.2, §5.2, §5.4, §6.2).

Validation and decisions are pure domain code (:mod:`domain.workflow_spec`, :mod:`domain.filters`);
SQL, the outbox rows and cache invalidation live in :mod:`store.workflows`.  This class only wires
them to the caller in :class:`~serve_apps.services.context.CallContext`.
"""

from __future__ import annotations

import logging

from domain.config import WorkflowsServiceConfig
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

log = logging.getLogger(__name__)


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
        return WorkflowDetail.from_record(workflow)

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
        return WorkflowList(workflows=[WorkflowItem.from_record(w) for w in page.items], cursor=page.cursor)

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
