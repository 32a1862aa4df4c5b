"""Workflows (reference §2.2, §4; SPEC §5.6-5.7)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated, Any
from uuid import UUID

from pydantic import Field, StrictBool, StrictInt, StrictStr

from domain.durations import format_duration
from domain.enums import WorkflowBuildStatus, WorkflowKind
from domain.filters import WorkflowFilters
from domain.models import Workflow
from domain.workflow_spec import (
    INTERVAL_MAX,
    INTERVAL_MIN,
    MAX_FAILURES_MAX,
    MAX_FAILURES_MIN,
    NAME_MAX_LENGTH,
)
from serve_apps.schemas.common import ApiModel, OutModel, Timestamp

Name = Annotated[StrictStr, Field(min_length=1, max_length=NAME_MAX_LENGTH, examples=["ping example.com"])]
PayloadText = Annotated[
    StrictStr | dict[str, Any],
    Field(
        description="The kind's payload: a JSON object, preferably encoded as a string (as the seed "
        "expects); a plain object is accepted too.",
        examples=['{"endpoint": "https://example.com/health", "expected_status_code": 200}'],
    ),
]
Interval = Annotated[StrictInt, Field(ge=INTERVAL_MIN, le=INTERVAL_MAX, description="Minutes between runs.")]
MaxFailures = Annotated[StrictInt, Field(ge=MAX_FAILURES_MIN, le=MAX_FAILURES_MAX)]


class CreateWorkflowRequest(ApiModel):
    """``POST /workflows``.  ``log_retention`` may be a boolean or a Go duration (retain, and
    expire lines after that long); it defaults to true for CONTAINER/RAY and must not be true for
    HEARTBEAT."""

    name: Name
    payload: PayloadText
    kind: WorkflowKind
    interval: Interval
    max_consecutive_job_failures_allowed: MaxFailures
    log_retention: Annotated[StrictBool | StrictStr | None, Field(examples=[True, "168h"])] = None


class UpdateWorkflowRequest(ApiModel):
    """``PUT /workflows/{id}`` (kind and log retention are immutable)."""

    name: Name
    payload: PayloadText
    interval: Interval
    max_consecutive_job_failures_allowed: MaxFailures


class CreateWorkflowCommand(OutModel):
    """Handle argument of ``WorkflowsService.create_workflow``."""

    request: CreateWorkflowRequest
    idempotency_key: str


class UpdateWorkflowCommand(OutModel):
    """Handle argument of ``WorkflowsService.update_workflow``."""

    workflow_id: UUID
    request: UpdateWorkflowRequest
    idempotency_key: str


class WorkflowRef(OutModel):
    """Names one of the caller's workflows."""

    workflow_id: UUID


class ListWorkflowsQuery(OutModel):
    """Handle argument of ``WorkflowsService.list_workflows``."""

    cursor: str | None = None
    filters: WorkflowFilters = Field(default_factory=WorkflowFilters)


class WorkflowCreated(OutModel):
    """``POST /workflows`` → 201 (a replay returns the same id)."""

    id: UUID


class WorkflowItem(OutModel):
    """A workflow as listed.  ``payload`` is the JSON text of the payload object."""

    id: UUID
    name: str
    payload: str
    kind: WorkflowKind
    build_status: WorkflowBuildStatus
    interval: int
    consecutive_job_failures_count: int
    max_consecutive_job_failures_allowed: int
    created_at: Timestamp
    updated_at: Timestamp
    terminated_at: Timestamp | None
    log_retention: bool
    log_retention_ttl: str | None = Field(
        description="Go duration after which log lines expire; null = kept."
    )

    @classmethod
    def fields_from(cls, wf: Workflow) -> dict[str, Any]:
        ttl = wf.log_retention_ttl_seconds
        return {
            "id": wf.id,
            "name": wf.name,
            "payload": json.dumps(wf.payload, separators=(",", ":")),
            "kind": wf.kind,
            "build_status": wf.build_status,
            "interval": wf.interval,
            "consecutive_job_failures_count": wf.consecutive_job_failures_count,
            "max_consecutive_job_failures_allowed": wf.max_consecutive_job_failures_allowed,
            "created_at": wf.created_at,
            "updated_at": wf.updated_at,
            "terminated_at": wf.terminated_at,
            "log_retention": wf.log_retention,
            "log_retention_ttl": format_duration(timedelta(seconds=ttl)) if ttl else None,
        }

    @classmethod
    def from_record(cls, wf: Workflow) -> WorkflowItem:
        return cls(**cls.fields_from(wf))


class WorkflowDetail(WorkflowItem):
    """``GET /workflows/{id}``: the listed fields plus ``generation``."""

    generation: int

    @classmethod
    def from_record(cls, wf: Workflow) -> WorkflowDetail:
        return cls(**cls.fields_from(wf), generation=wf.generation)


class WorkflowList(OutModel):
    """A page of 10, newest first; ``cursor`` (null on the last page) fetches the next one."""

    workflows: list[WorkflowItem]
    cursor: str | None
