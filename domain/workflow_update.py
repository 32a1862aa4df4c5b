"""What a workflow update (PUT) must trigger (reference §5.2), as a pure decision.

``build`` when the build hash changed, the build is not ``COMPLETED``/``STARTED`` (queued, failed,
canceled) or the workflow was terminated; otherwise ``reschedule`` when the interval changed and the
build is ``COMPLETED``; otherwise nothing beyond the field update (a ``STARTED`` build with a new
interval waits: the build will schedule with the new interval).
"""

from __future__ import annotations

from enum import StrEnum

from domain.enums import JobStatus, JobTrigger, WorkflowAction, WorkflowBuildStatus


class UpdateAction(StrEnum):
    BUILD = "BUILD"
    RESCHEDULE = "RESCHEDULE"
    NONE = "NONE"

    @property
    def bumps_generation(self) -> bool:
        return self != UpdateAction.NONE

    @property
    def event_action(self) -> WorkflowAction | None:
        """The outbox action this decision emits (``None`` for ``NONE``)."""
        if self == UpdateAction.BUILD:
            return WorkflowAction.BUILD
        if self == UpdateAction.RESCHEDULE:
            return WorkflowAction.RESCHEDULE
        return None

    @property
    def jobs_to_cancel(self) -> tuple[tuple[JobStatus, ...], JobTrigger | None]:
        """``(statuses, trigger)`` of the jobs the decision cancels; trigger ``None`` = all triggers."""
        if self == UpdateAction.BUILD:
            return (JobStatus.PENDING, JobStatus.QUEUED), None
        if self == UpdateAction.RESCHEDULE:
            return (JobStatus.PENDING, JobStatus.QUEUED), JobTrigger.AUTOMATIC
        return (), None


def decide_update(
    *,
    old_build_hash: str | None,
    new_build_hash: str | None,
    build_status: WorkflowBuildStatus,
    terminated: bool,
    old_interval: int,
    new_interval: int,
) -> UpdateAction:
    """The reference's ``decideWorkflowUpdateAction``.  ``None`` and ``""`` hashes are equal."""
    hash_changed = (old_build_hash or "") != (new_build_hash or "")
    if (
        hash_changed
        or build_status not in (WorkflowBuildStatus.COMPLETED, WorkflowBuildStatus.STARTED)
        or terminated
    ):
        return UpdateAction.BUILD
    if old_interval != new_interval and build_status == WorkflowBuildStatus.COMPLETED:
        return UpdateAction.RESCHEDULE
    return UpdateAction.NONE
