"""Analytics reads (reference §2.2, §8); the processors write the aggregates."""

from __future__ import annotations

from serve_apps.resources import ServiceResources
from serve_apps.schemas.analytics import UserAnalyticsOut, WorkflowAnalyticsOut
from serve_apps.schemas.workflows import WorkflowRef
from serve_apps.services.context import CallContext, service_method
from store import analytics as analytics_repo


class AnalyticsService:
    """The caller's totals and per-workflow aggregates (not cached, as in the seed)."""

    def __init__(self, resources: ServiceResources) -> None:
        self.resources = resources

    @service_method
    async def get_user_analytics(self, ctx: CallContext) -> UserAnalyticsOut:
        """Totals over all the caller's workflows, deleted ones included; zeros for a new user."""
        totals = await analytics_repo.get_user(await self.resources.pool(), ctx.require_user())
        return UserAnalyticsOut.from_record(totals)

    @service_method
    async def get_workflow_analytics(self, ctx: CallContext, ref: WorkflowRef) -> WorkflowAnalyticsOut:
        """One workflow's aggregates (404 until it has been built once, or for anyone else's)."""
        row = await analytics_repo.get_workflow(
            await self.resources.pool(), ctx.require_user(), ref.workflow_id
        )
        return WorkflowAnalyticsOut.from_record(row)
