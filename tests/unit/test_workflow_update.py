"""The PUT decision of reference §5.2 (and the cases listed in §11)."""

from __future__ import annotations

import pytest

from domain.enums import JobStatus, JobTrigger, WorkflowAction, WorkflowBuildStatus
from domain.workflow_update import UpdateAction, decide_update

S = WorkflowBuildStatus


def decide(
    *, old_hash: str | None = "h", new_hash: str | None = "h", status: S = S.COMPLETED,
    terminated: bool = False, old_interval: int = 5, new_interval: int = 5,
) -> UpdateAction:
    return decide_update(
        old_build_hash=old_hash, new_build_hash=new_hash, build_status=status, terminated=terminated,
        old_interval=old_interval, new_interval=new_interval,
    )


@pytest.mark.parametrize("status", [S.STARTED, S.COMPLETED])
def test_terminated_workflow_is_rebuilt(status: S) -> None:
    assert decide(status=status, terminated=True) == UpdateAction.BUILD


def test_active_completed_with_new_interval_is_rescheduled() -> None:
    assert decide(new_interval=10) == UpdateAction.RESCHEDULE


def test_active_started_with_new_interval_waits_for_the_build() -> None:
    assert decide(status=S.STARTED, new_interval=10) == UpdateAction.NONE


@pytest.mark.parametrize("status", [S.STARTED, S.COMPLETED])
def test_build_hash_change_rebuilds(status: S) -> None:
    assert decide(new_hash="other", status=status) == UpdateAction.BUILD


@pytest.mark.parametrize("status", [S.QUEUED, S.FAILED, S.CANCELED])
def test_build_not_completed_or_started_rebuilds(status: S) -> None:
    assert decide(status=status) == UpdateAction.BUILD


def test_build_wins_over_reschedule() -> None:
    assert decide(new_hash="other", new_interval=10) == UpdateAction.BUILD


def test_unchanged_active_completed_workflow_needs_nothing() -> None:
    assert decide() == UpdateAction.NONE


def test_missing_and_empty_hashes_are_the_same() -> None:
    assert decide(old_hash=None, new_hash=None) == UpdateAction.NONE
    assert decide(old_hash="", new_hash=None) == UpdateAction.NONE
    assert decide(old_hash=None, new_hash="h") == UpdateAction.BUILD


def test_each_action_says_what_it_cancels_and_emits() -> None:
    assert UpdateAction.BUILD.jobs_to_cancel == ((JobStatus.PENDING, JobStatus.QUEUED), None)
    pending_queued = (JobStatus.PENDING, JobStatus.QUEUED)
    assert UpdateAction.RESCHEDULE.jobs_to_cancel == (pending_queued, JobTrigger.AUTOMATIC)
    assert UpdateAction.NONE.jobs_to_cancel == ((), None)
    assert UpdateAction.BUILD.event_action == WorkflowAction.BUILD
    assert UpdateAction.RESCHEDULE.event_action == WorkflowAction.RESCHEDULE
    assert UpdateAction.NONE.event_action is None
    assert UpdateAction.BUILD.bumps_generation and UpdateAction.RESCHEDULE.bumps_generation
    assert not UpdateAction.NONE.bumps_generation
