"""Pure decisions of the workflow worker (reference §5.1, §5.3, §5.4, §6.4).

The worker (:mod:`actors.workflow_worker`) does the I/O; everything it *decides* — whether an event
is stale, what a BUILD does for a workflow in a given state, which jobs a rebuild or termination
cancels and in which order, which lock guards which action — lives here so it can be tested without
any service.  Schedule math is :mod:`domain.schedule`'s and event keys are :mod:`domain.event_keys`'.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from domain.enums import JobStatus, WorkflowAction, WorkflowBuildStatus, WorkflowKind
from domain.errors import Invalid

#: Lock TTLs of reference §10 ("build/reschedule/terminate locks 5 min, delete lock 15 min").
ACTION_LOCK_TTL = timedelta(minutes=5)
DELETE_LOCK_TTL = timedelta(minutes=15)

#: A (re)build cancels the workflow's QUEUED jobs first, then its PENDING ones (reference §5.1).
BUILD_CANCEL_ORDER: tuple[JobStatus, ...] = (JobStatus.QUEUED, JobStatus.PENDING)
#: Termination cancels RUNNING, then PENDING, then QUEUED jobs (reference §5.4).
TERMINATE_CANCEL_ORDER: tuple[JobStatus, ...] = (JobStatus.RUNNING, JobStatus.PENDING, JobStatus.QUEUED)


class BuildState(Protocol):
    """The part of a workflow the decisions read (:class:`domain.models.Workflow` satisfies it)."""

    @property
    def generation(self) -> int: ...
    @property
    def build_status(self) -> WorkflowBuildStatus: ...
    @property
    def terminated(self) -> bool: ...
    @property
    def kind(self) -> WorkflowKind: ...


class WorkflowState(BaseModel):
    """A minimal :class:`BuildState` value (tests, and callers that hold no full row)."""

    model_config = ConfigDict(frozen=True)

    generation: int
    build_status: WorkflowBuildStatus
    terminated: bool
    kind: WorkflowKind


def is_stale(event_generation: int, current_generation: int) -> bool:
    """An event is stale when it carries a generation that is not the workflow's current one.

    Generation 0 (DELETE, job-outcome events) is never stale (reference §6.6).
    """
    return event_generation != 0 and event_generation != current_generation


class BuildDecision(StrEnum):
    """What a BUILD event does, given the workflow's state (reference §5.1)."""

    GONE = "gone"  # the workflow no longer exists: acknowledge
    STALE = "stale"  # superseded by a newer generation: acknowledge, no effect
    TERMINATED = "terminated"  # terminated workflows are not built (FailedPrecondition, committed)
    SCHEDULE_ONLY = "schedule_only"  # already COMPLETED: just (re)schedule the automatic job, idempotently
    FINAL = "final"  # FAILED / CANCELED: nothing to do until the next update
    BUILD = "build"  # QUEUED, or STARTED (a redelivery resumes the build)


def decide_build(event_generation: int, state: BuildState | None) -> BuildDecision:
    if state is None:
        return BuildDecision.GONE
    if is_stale(event_generation, state.generation):
        return BuildDecision.STALE
    if state.terminated:
        return BuildDecision.TERMINATED
    if state.build_status == WorkflowBuildStatus.COMPLETED:
        return BuildDecision.SCHEDULE_ONLY
    if state.build_status in (WorkflowBuildStatus.FAILED, WorkflowBuildStatus.CANCELED):
        return BuildDecision.FINAL
    return BuildDecision.BUILD


class BuildMethod(StrEnum):
    """How a kind is built."""

    SKIP = "skip"  # QUEUED → COMPLETED with "Workflow Build Skipped" (HEARTBEAT, RAY)
    IMAGE = "image"  # QUEUED → STARTED → ensure the image on the Docker host → COMPLETED / FAILED


def build_method(kind: WorkflowKind) -> BuildMethod:
    return BuildMethod.IMAGE if kind == WorkflowKind.CONTAINER else BuildMethod.SKIP


class RescheduleDecision(StrEnum):
    GONE = "gone"
    STALE = "stale"
    NOT_READY = "not_ready"  # not COMPLETED, or terminated: nothing to reschedule
    SCHEDULE = "schedule"


def decide_reschedule(event_generation: int, state: BuildState | None) -> RescheduleDecision:
    if state is None:
        return RescheduleDecision.GONE
    if is_stale(event_generation, state.generation):
        return RescheduleDecision.STALE
    if state.terminated or state.build_status != WorkflowBuildStatus.COMPLETED:
        return RescheduleDecision.NOT_READY
    return RescheduleDecision.SCHEDULE


class TerminateDecision(StrEnum):
    GONE = "gone"
    STALE = "stale"
    ACTIVE = "active"  # re-activated since (a PUT clears terminated_at): nothing to tear down
    TERMINATE = "terminate"


def decide_terminate(event_generation: int, state: BuildState | None) -> TerminateDecision:
    if state is None:
        return TerminateDecision.GONE
    if is_stale(event_generation, state.generation):
        return TerminateDecision.STALE
    if not state.terminated:
        # Defensive: a re-activation always bumps the generation, so this should be unreachable.
        return TerminateDecision.ACTIVE
    return TerminateDecision.TERMINATE


class JobOutcomeDecision(StrEnum):
    """JOB_COMPLETED / JOB_FAILED: a missing workflow means the event is ignored (reference §5.3)."""

    IGNORE = "ignore"
    APPLY = "apply"


def decide_job_outcome(state: BuildState | None) -> JobOutcomeDecision:
    return JobOutcomeDecision.IGNORE if state is None else JobOutcomeDecision.APPLY


def lock_key(action: WorkflowAction, workflow_id: str) -> str:
    """``workflow:{BUILD|RESCHEDULE|TERMINATE|DELETE}:<id>`` (reference §3.4)."""
    return f"workflow:{action.value}:{workflow_id}"


def lock_ttl(action: WorkflowAction) -> timedelta:
    return DELETE_LOCK_TTL if action == WorkflowAction.DELETE else ACTION_LOCK_TTL


def image_pull_lock_key(docker_host: str, image: str) -> str:
    """``container:image-pull:<sha256(docker host)>:<sha256(image)>``: one pull per image per host."""
    host = hashlib.sha256(docker_host.encode()).hexdigest()
    img = hashlib.sha256(image.encode()).hexdigest()
    return f"container:image-pull:{host}:{img}"


def container_image(payload: str | dict[str, Any]) -> str:
    """The ``image`` of a CONTAINER payload (JSON text or an already-decoded object)."""
    data: Any = payload
    if isinstance(payload, str):
        try:
            data = json.loads(payload)
        except ValueError:
            raise Invalid("invalid payload format") from None
    image = data.get("image") if isinstance(data, dict) else None
    if not isinstance(image, str) or not image.strip():
        raise Invalid("container payload has no image")
    return image.strip()
