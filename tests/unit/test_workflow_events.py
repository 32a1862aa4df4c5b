"""Pure decisions of the workflow worker (reference §5.1, §5.3, §5.4, §6.4) and its notifications (§8)."""

from __future__ import annotations

import hashlib
import json

import pytest

from domain import notifications as notes
from domain.enums import JobStatus, NotificationKind, WorkflowAction, WorkflowBuildStatus, WorkflowKind
from domain.errors import Invalid
from domain.workflow_events import (
    BUILD_CANCEL_ORDER,
    TERMINATE_CANCEL_ORDER,
    BuildDecision,
    BuildMethod,
    JobOutcomeDecision,
    RescheduleDecision,
    TerminateDecision,
    WorkflowState,
    build_method,
    container_image,
    decide_build,
    decide_job_outcome,
    decide_reschedule,
    decide_terminate,
    image_pull_lock_key,
    is_stale,
    lock_key,
    lock_ttl,
)

WF = "0190a0a0-0000-7000-8000-000000000001"
USER = "0190a0a0-0000-7000-8000-0000000000aa"
JOB = "0190a0a0-0000-7000-8000-0000000000bb"


def state(
    status: WorkflowBuildStatus = WorkflowBuildStatus.QUEUED,
    *,
    generation: int = 1,
    terminated: bool = False,
    kind: WorkflowKind = WorkflowKind.HEARTBEAT,
) -> WorkflowState:
    return WorkflowState(generation=generation, build_status=status, terminated=terminated, kind=kind)


@pytest.mark.parametrize(
    ("event_gen", "current", "stale"),
    [(1, 1, False), (1, 2, True), (3, 2, True), (0, 7, False)],
)
def test_generation_zero_is_never_stale_and_others_must_match(
    event_gen: int, current: int, stale: bool
) -> None:
    assert is_stale(event_gen, current) is stale


def test_build_of_a_missing_workflow_is_acknowledged() -> None:
    assert decide_build(1, None) == BuildDecision.GONE


def test_build_with_an_old_generation_is_stale() -> None:
    assert decide_build(1, state(generation=2)) == BuildDecision.STALE


def test_build_of_a_terminated_workflow_is_refused_before_anything_else() -> None:
    assert decide_build(1, state(WorkflowBuildStatus.QUEUED, terminated=True)) == BuildDecision.TERMINATED


def test_build_of_a_completed_workflow_only_reschedules() -> None:
    assert decide_build(1, state(WorkflowBuildStatus.COMPLETED)) == BuildDecision.SCHEDULE_ONLY


@pytest.mark.parametrize("status", [WorkflowBuildStatus.FAILED, WorkflowBuildStatus.CANCELED])
def test_build_of_a_failed_or_canceled_workflow_does_nothing(status: WorkflowBuildStatus) -> None:
    assert decide_build(1, state(status)) == BuildDecision.FINAL


@pytest.mark.parametrize("status", [WorkflowBuildStatus.QUEUED, WorkflowBuildStatus.STARTED])
def test_queued_builds_and_started_resumes(status: WorkflowBuildStatus) -> None:
    assert decide_build(1, state(status)) == BuildDecision.BUILD


@pytest.mark.parametrize(
    ("kind", "method"),
    [
        (WorkflowKind.HEARTBEAT, BuildMethod.SKIP),
        (WorkflowKind.RAY, BuildMethod.SKIP),
        (WorkflowKind.CONTAINER, BuildMethod.IMAGE),
    ],
)
def test_only_container_workflows_need_an_image(kind: WorkflowKind, method: BuildMethod) -> None:
    assert build_method(kind) == method


def test_reschedule_needs_a_completed_active_current_workflow() -> None:
    completed, started = WorkflowBuildStatus.COMPLETED, WorkflowBuildStatus.STARTED
    assert decide_reschedule(2, state(completed, generation=2)) == RescheduleDecision.SCHEDULE
    assert decide_reschedule(1, state(completed, generation=2)) == RescheduleDecision.STALE
    assert decide_reschedule(2, state(started, generation=2)) == RescheduleDecision.NOT_READY
    assert (
        decide_reschedule(2, state(WorkflowBuildStatus.COMPLETED, generation=2, terminated=True))
        == RescheduleDecision.NOT_READY
    )
    assert decide_reschedule(2, None) == RescheduleDecision.GONE


def test_terminate_applies_to_the_current_terminated_workflow_only() -> None:
    assert decide_terminate(1, state(terminated=True)) == TerminateDecision.TERMINATE
    assert decide_terminate(1, state(generation=2, terminated=False)) == TerminateDecision.STALE
    assert decide_terminate(1, state(terminated=False)) == TerminateDecision.ACTIVE
    assert decide_terminate(1, None) == TerminateDecision.GONE


def test_job_outcomes_of_deleted_workflows_are_ignored() -> None:
    assert decide_job_outcome(None) == JobOutcomeDecision.IGNORE
    assert decide_job_outcome(state()) == JobOutcomeDecision.APPLY


def test_cancel_orders_follow_the_reference() -> None:
    assert BUILD_CANCEL_ORDER == (JobStatus.QUEUED, JobStatus.PENDING)
    assert TERMINATE_CANCEL_ORDER == (JobStatus.RUNNING, JobStatus.PENDING, JobStatus.QUEUED)


def test_lock_keys_and_ttls() -> None:
    assert lock_key(WorkflowAction.BUILD, WF) == f"workflow:BUILD:{WF}"
    assert lock_key(WorkflowAction.DELETE, WF) == f"workflow:DELETE:{WF}"
    assert lock_ttl(WorkflowAction.BUILD).total_seconds() == 300
    assert lock_ttl(WorkflowAction.TERMINATE).total_seconds() == 300
    assert lock_ttl(WorkflowAction.DELETE).total_seconds() == 900


def test_image_pull_lock_key_hashes_host_and_image() -> None:
    host, image = "unix:///var/run/docker.sock", "local/busybox:1"
    expected = (
        f"container:image-pull:{hashlib.sha256(host.encode()).hexdigest()}:"
        f"{hashlib.sha256(image.encode()).hexdigest()}"
    )
    assert image_pull_lock_key(host, image) == expected
    assert image_pull_lock_key("tcp://other:2375", image) != expected


def test_container_image_reads_text_or_object_payloads() -> None:
    assert container_image(json.dumps({"image": " local/busybox:1 "})) == "local/busybox:1"
    assert container_image({"image": "alpine:3"}) == "alpine:3"
    for bad in ("{not json", json.dumps({"cmd": ["x"]}), {"image": ""}, {"image": 3}):
        with pytest.raises(Invalid):
            container_image(bad)


def test_notification_titles_kinds_and_payloads() -> None:
    info, success, alert = NotificationKind.WEB_INFO, NotificationKind.WEB_SUCCESS, NotificationKind.WEB_ALERT
    cases = [
        (notes.build_skipped(USER, WF, "w", "ev"), notes.Title.BUILD_SKIPPED, info),
        (notes.build_started(USER, WF, "w", "ev"), notes.Title.BUILD_STARTED, info),
        (notes.build_completed(USER, WF, "w", "ev"), notes.Title.BUILD_COMPLETED, success),
        (notes.build_failed(USER, WF, "w", "ev", "boom"), notes.Title.BUILD_FAILED, alert),
        (notes.terminated(USER, WF, "w", "ev"), notes.Title.WORKFLOW_TERMINATED, info),
        (
            notes.terminated_after_failures(USER, WF, "w", 1, 3),
            notes.Title.WORKFLOW_TERMINATED,
            NotificationKind.WEB_ALERT,
        ),
    ]
    for draft, title, kind in cases:
        assert draft.kind == kind
        assert draft.payload.title == title.value
        assert draft.payload.entity_type == notes.EntityType.WORKFLOW
        assert draft.payload.entity_id == WF
        assert draft.payload.action_url == f"/workflows/{WF}"
    job_cases = [
        (notes.job_completed(USER, WF, JOB, "w"), notes.Title.JOB_COMPLETED, NotificationKind.WEB_SUCCESS),
        (notes.job_failed(USER, WF, JOB, "w", "exit 3"), notes.Title.JOB_FAILED, NotificationKind.WEB_ERROR),
        (notes.job_canceled(USER, WF, JOB, "w"), notes.Title.JOB_CANCELED, NotificationKind.WEB_INFO),
    ]
    for draft, title, kind in job_cases:
        assert draft.kind == kind
        assert draft.payload.entity_type == notes.EntityType.JOB
        assert draft.payload.action_url == f"/workflows/{WF}/jobs/{JOB}"
        assert draft.idempotency_key == f"notification:JOB:{JOB}:{title.value}"


def test_threshold_termination_alerts_once_per_generation() -> None:
    draft = notes.terminated_after_failures(USER, WF, "nightly", 2, 3)
    assert draft.payload.message.startswith(
        "Workflow 'nightly' has been terminated after reaching 3 consecutive job failures"
    )
    assert draft.idempotency_key == f"notification:WORKFLOW:{WF}:Workflow Terminated:failures:2"
    assert notes.terminated_after_failures(USER, WF, "nightly", 3, 3).idempotency_key != draft.idempotency_key


def test_rebuild_notifications_differ_per_generation_but_replays_do_not() -> None:
    first = notes.build_completed(USER, WF, "w", f"workflow:{WF}:BUILD:1")
    replay = notes.build_completed(USER, WF, "w", f"workflow:{WF}:BUILD:1")
    rebuild = notes.build_completed(USER, WF, "w", f"workflow:{WF}:BUILD:2")
    assert first.idempotency_key == replay.idempotency_key
    assert first.idempotency_key != rebuild.idempotency_key


def test_payload_json_is_a_complete_object() -> None:
    draft = notes.job_canceled(USER, WF, JOB, "w")
    fields = {"title", "message", "entity_id", "entity_type", "action_url"}
    assert set(json.loads(draft.payload_json())) == fields
