"""``/analytics``: the caller's totals and per-workflow aggregates (reference §2.2)."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter

from serve_apps.gateway.dependencies import Caller, State
from serve_apps.gateway.errors import error_responses
from serve_apps.schemas.analytics import UserAnalyticsOut, WorkflowAnalyticsOut
from serve_apps.schemas.workflows import WorkflowRef

router = APIRouter(prefix="/analytics", tags=["analytics"])


@router.get(
    "", response_model=UserAnalyticsOut, responses=error_responses(401), summary="The caller's totals"
)
async def get_user_analytics(ctx: Caller, state: State) -> UserAnalyticsOut:
    """Zeros for a new user; deleted workflows stay counted."""
    return await state.services.analytics.get_user_analytics(ctx)


@router.get(
    "/{workflow_id}",
    response_model=WorkflowAnalyticsOut,
    responses=error_responses(401, 404),
    summary="One workflow's aggregates",
)
async def get_workflow_analytics(workflow_id: UUID, ctx: Caller, state: State) -> WorkflowAnalyticsOut:
    """404 until the workflow has been built once (or when it is not the caller's)."""
    return await state.services.analytics.get_workflow_analytics(ctx, WorkflowRef(workflow_id=workflow_id))
