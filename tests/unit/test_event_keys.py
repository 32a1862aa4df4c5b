"""Deterministic event keys (reference §3.6) and RFC 3339 "nano" times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID

import pytest

from domain.enums import LogStream, WorkflowAction
from domain.event_keys import (
    analytics_job_key,
    analytics_workflow_key,
    automatic_job_key,
    dispatch_event_key,
    followup_job_key,
    job_notification_key,
    job_terminal_event_key,
    log_event_key,
    parse_rfc3339nano,
    rfc3339nano,
    workflow_event_key,
    workflow_notification_key,
)

WF = "0190f0e2-7c1a-7000-8000-000000000001"
JOB = "0190f0e2-7c1a-7000-8000-0000000000aa"


def test_workflow_event_key_carries_the_generation() -> None:
    assert workflow_event_key(WF, WorkflowAction.BUILD, 3) == f"workflow:{WF}:BUILD:3"


def test_workflow_event_key_without_generation_for_delete() -> None:
    assert workflow_event_key(WF, WorkflowAction.DELETE, 0) == f"workflow:{WF}:DELETE"


def test_workflow_event_key_accepts_uuid_objects() -> None:
    assert workflow_event_key(UUID(WF), WorkflowAction.RESCHEDULE, 1) == f"workflow:{WF}:RESCHEDULE:1"


def test_workflow_event_key_rejects_negative_generation() -> None:
    with pytest.raises(ValueError):
        workflow_event_key(WF, WorkflowAction.BUILD, -1)


def test_dispatch_key_names_the_attempt() -> None:
    assert dispatch_event_key(JOB, 2) == f"job:{JOB}:dispatch:2"
    with pytest.raises(ValueError):
        dispatch_event_key(JOB, 0)


def test_automatic_job_key_uses_rfc3339nano_slot() -> None:
    slot = datetime(2025, 3, 4, 5, 6, 7, 120000)
    assert automatic_job_key(WF, slot) == f"job:{WF}:2025-03-04T05:06:07.12Z:dispatch"


def test_followup_job_key_extends_the_workflow_event_key() -> None:
    event_key = workflow_event_key(WF, WorkflowAction.BUILD, 2)
    assert followup_job_key(event_key) == f"workflow:{WF}:BUILD:2:automatic-job"
    with pytest.raises(ValueError):
        followup_job_key("")


def test_terminal_keys_only_for_terminal_actions() -> None:
    assert job_terminal_event_key(JOB, WorkflowAction.JOB_COMPLETED) == f"workflow:job:{JOB}:JOB_COMPLETED"
    assert job_terminal_event_key(JOB, WorkflowAction.JOB_FAILED) == f"workflow:job:{JOB}:JOB_FAILED"
    with pytest.raises(ValueError):
        job_terminal_event_key(JOB, WorkflowAction.BUILD)


def test_analytics_keys() -> None:
    assert analytics_job_key(JOB) == f"analytics:job:{JOB}:completed"
    assert analytics_workflow_key(WF) == f"analytics:workflow:{WF}"


def test_log_key_of_first_attempt_has_no_attempt_segment() -> None:
    assert log_event_key(JOB, 1, LogStream.STDOUT, 7) == f"log:{JOB}:stdout:7"
    assert log_event_key(JOB, 0, LogStream.STDERR, 0) == f"log:{JOB}:stderr:0"


def test_log_key_of_retried_attempt_is_distinct() -> None:
    assert log_event_key(JOB, 2, LogStream.STDERR, 7) == f"log:{JOB}:attempt:2:stderr:7"
    assert log_event_key(JOB, 2, LogStream.STDERR, 7) != log_event_key(JOB, 1, LogStream.STDERR, 7)


def test_notification_keys() -> None:
    assert job_notification_key(JOB, "Job Execution Failed") == f"notification:JOB:{JOB}:Job Execution Failed"
    assert workflow_notification_key(WF, "Workflow Build Completed") == (
        f"notification:WORKFLOW:{WF}:Workflow Build Completed"
    )
    assert workflow_notification_key(WF, "Workflow Terminated", JOB) == (
        f"notification:WORKFLOW:{WF}:Workflow Terminated:{JOB}"
    )


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC), "2025-01-02T03:04:05Z"),
        (datetime(2025, 1, 2, 3, 4, 5, 500000, tzinfo=UTC), "2025-01-02T03:04:05.5Z"),
        (datetime(2025, 1, 2, 3, 4, 5, 123456), "2025-01-02T03:04:05.123456Z"),  # naive = UTC
        (datetime(2025, 1, 2, 5, 4, 5, 10, tzinfo=timezone(timedelta(hours=2))),
         "2025-01-02T03:04:05.00001Z"),
    ],
)
def test_rfc3339nano_formats_like_go(moment: datetime, text: str) -> None:
    assert rfc3339nano(moment) == text


def test_parse_accepts_nanoseconds_and_offsets() -> None:
    expected = datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    assert parse_rfc3339nano("2025-01-02T03:04:05.123456789Z") == expected
    assert parse_rfc3339nano("2025-01-02T05:04:05+02:00") == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_parse_rejects_non_rfc3339() -> None:
    with pytest.raises(ValueError):
        parse_rfc3339nano("yesterday")


def test_format_parse_round_trip() -> None:
    moment = datetime(2030, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert parse_rfc3339nano(rfc3339nano(moment)) == moment
