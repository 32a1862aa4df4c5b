"""``/workflows``: create, list, read, update, terminate, delete (reference §2.2)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, status

from domain.enums import WorkflowBuildStatus, WorkflowKind
from domain.filters import WorkflowFilters
from serve_apps.gateway.dependencies import Caller, IdempotencyKey, MutatingCaller, State
from serve_apps.gateway.errors import error_responses
from serve_apps.schemas.workflows import (
    CreateWorkflowCommand,
    CreateWorkflowRequest,
    ListWorkflowsQuery,
    UpdateWorkflowCommand,
    UpdateWorkflowRequest,
    WorkflowCreated,
    WorkflowDetail,
    WorkflowList,
    WorkflowRef,
)

router = APIRouter(prefix="/workflows", tags=["workflows"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=WorkflowCreated,
    responses=error_responses(401, 403, 409, 412),
    summary="Create a workflow",
)
async def create_workflow(
    req: CreateWorkflowRequest, ctx: MutatingCaller, key: IdempotencyKey, state: State
) -> WorkflowCreated:
    """Starts QUEUED at generation 1 (a BUILD event is queued).  Replaying the same key and body
    returns the same id; the same key with another body is 409.  A payload ``timeout`` above the
    kind's maximum is 412."""
    return await state.services.workflows.create_workflow(
        ctx, CreateWorkflowCommand(request=req, idempotency_key=key)
    )


@router.get("", response_model=WorkflowList, responses=error_responses(401), summary="List workflows")
async def list_workflows(
    ctx: Caller,
    state: State,
    cursor: Annotated[str | None, Query(description="From the previous page.")] = None,
    query: Annotated[str | None, Query(description="Name contains (case-insensitive).")] = None,
    kind: WorkflowKind | None = None,
    build_status: Annotated[
        WorkflowBuildStatus | None, Query(description="Implies not terminated; not with terminated=true.")
    ] = None,
    terminated: Annotated[
        str | None, Query(description="true = only terminated ones; false/absent = no filter.")
    ] = None,
    interval_min: Annotated[int | None, Query(description="Minutes; needs interval_max.")] = None,
    interval_max: Annotated[int | None, Query(description="Minutes.")] = None,
) -> WorkflowList:
    """Ten per page, newest first."""
    filters = WorkflowFilters.parse(
        query=query,
        kind=kind,
        build_status=build_status,
        terminated=terminated,
        interval_min=interval_min,
        interval_max=interval_max,
    )
    return await state.services.workflows.list_workflows(
        ctx, ListWorkflowsQuery(cursor=cursor, filters=filters)
    )


@router.get(
    "/{workflow_id}",
    response_model=WorkflowDetail,
    responses=error_responses(401, 404),
    summary="Read a workflow",
)
async def get_workflow(workflow_id: UUID, ctx: Caller, state: State) -> WorkflowDetail:
    """The workflow with its generation (404 when missing or not the caller's)."""
    return await state.services.workflows.get_workflow(ctx, WorkflowRef(workflow_id=workflow_id))


@router.put(
    "/{workflow_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 403, 404, 409, 412),
    summary="Update a workflow",
)
async def update_workflow(
    workflow_id: UUID, req: UpdateWorkflowRequest, ctx: MutatingCaller, key: IdempotencyKey, state: State
) -> None:
    """Re-activates a terminated workflow; an image change (or a failed/terminated workflow) is
    rebuilt, an interval change of a built workflow rescheduled."""
    await state.services.workflows.update_workflow(
        ctx, UpdateWorkflowCommand(workflow_id=workflow_id, request=req, idempotency_key=key)
    )


@router.patch(
    "/{workflow_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 403, 404),
    summary="Terminate a workflow",
)
async def terminate_workflow(workflow_id: UUID, ctx: MutatingCaller, state: State) -> None:
    """Idempotent; its pending and running jobs are canceled by the workflow worker."""
    await state.services.workflows.terminate_workflow(ctx, WorkflowRef(workflow_id=workflow_id))


@router.delete(
    "/{workflow_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 403, 404, 412),
    summary="Delete a terminated workflow",
)
async def delete_workflow(workflow_id: UUID, ctx: MutatingCaller, state: State) -> None:
    """412 while it is active or has a running job."""
    await state.services.workflows.delete_workflow(ctx, WorkflowRef(workflow_id=workflow_id))
