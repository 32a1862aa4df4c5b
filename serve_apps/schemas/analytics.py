"""Analytics aggregates (reference §2.2, §8)."""

from __future__ import annotations

from uuid import UUID

from domain.models import UserAnalytics, WorkflowAnalytics
from serve_apps.schemas.common import OutModel


class UserAnalyticsOut(OutModel):
    """``GET /analytics``: totals over every workflow the user ever had (durations in seconds)."""

    total_workflows: int
    total_jobs: int
    total_joblogs: int
    total_job_execution_duration: int

    @classmethod
    def from_record(cls, rec: UserAnalytics) -> UserAnalyticsOut:
        return cls(**rec.model_dump())


class WorkflowAnalyticsOut(OutModel):
    """``GET /analytics/{workflow_id}`` (404 until the workflow has been built once)."""

    workflow_id: UUID
    total_job_execution_duration: int
    total_jobs: int
    total_joblogs: int

    @classmethod
    def from_record(cls, rec: WorkflowAnalytics) -> WorkflowAnalyticsOut:
        return cls(
            workflow_id=rec.workflow_id,
            total_job_execution_duration=rec.total_job_execution_duration,
            total_jobs=rec.total_jobs,
            total_joblogs=rec.total_joblogs,
        )
