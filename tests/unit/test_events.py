"""Kafka record payloads: complete snake_case JSON, RFC 3339 nano times, record keys."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from domain.commit_policy import is_retryable
from domain.enums import AnalyticsEventType, FailureKind, LogStream, WorkflowAction, WorkflowKind
from domain.errors import Invalid
from ingest.consumer import ConsumedRecord
from ingest.events import (
    EVENT_TYPES,
    AnalyticEvent,
    Event,
    JobLogEvent,
    ScheduledJobEntry,
    WorkflowEvent,
)
from ingest.topics import ANALYTICS, JOB_LOGS, JOBS, WORKFLOWS

WF = "0190f0e2-7c1a-7000-8000-000000000001"
JOB = "0190f0e2-7c1a-7000-8000-0000000000aa"
USER = "0190f0e2-7c1a-7000-8000-0000000000ff"


def _wire(event: Event) -> dict[str, object]:
    return json.loads(event.to_bytes())


def test_workflow_event_json_is_complete_with_zero_values() -> None:
    event = WorkflowEvent(event_key=f"workflow:{WF}:DELETE", id=WF, action=WorkflowAction.DELETE)
    assert _wire(event) == {
        "event_key": f"workflow:{WF}:DELETE",
        "id": WF,
        "user_id": "",
        "action": "DELETE",
        "generation": 0,
        "job_id": "",
        "failure_kind": "",
        "error_code": "",
        "error_message": "",
    }


def test_workflow_event_round_trips_a_job_failure() -> None:
    event = WorkflowEvent(
        event_key=f"workflow:job:{JOB}:JOB_FAILED", id=WF, user_id=USER, action=WorkflowAction.JOB_FAILED,
        job_id=JOB, failure_kind=FailureKind.USER, error_code="exit_code", error_message="exit 1",
    )
    decoded = WorkflowEvent.model_validate_json(event.to_bytes())
    assert decoded == event
    assert decoded.failure_kind is FailureKind.USER
    assert event.record_key() == WF


def test_scheduled_job_entry_sends_rfc3339nano_utc() -> None:
    entry = ScheduledJobEntry(
        event_key=f"job:{JOB}:dispatch:1", job_id=JOB, workflow_id=WF,
        scheduled_at=datetime(2025, 6, 7, 8, 9, 10, 250000), dispatch_attempt=1, workflow_generation=2,
    )
    wire = _wire(entry)
    assert wire["scheduled_at"] == "2025-06-07T08:09:10.25Z"
    assert set(wire) == {"event_key", "job_id", "workflow_id", "scheduled_at", "dispatch_attempt",
                         "workflow_generation"}
    assert entry.record_key() == WF
    assert entry.scheduled_at.tzinfo is UTC  # naive PostgreSQL UTC becomes aware
    assert ScheduledJobEntry.model_validate_json(entry.to_bytes()) == entry


def test_scheduled_job_entry_parses_go_nanoseconds() -> None:
    raw = json.dumps({
        "event_key": "k", "job_id": JOB, "workflow_id": WF, "scheduled_at": "2025-06-07T08:09:10.123456789Z",
        "dispatch_attempt": 3, "workflow_generation": 1,
    })
    entry = ScheduledJobEntry.model_validate_json(raw)
    assert entry.scheduled_at == datetime(2025, 6, 7, 8, 9, 10, 123456, tzinfo=UTC)


def test_scheduled_job_entry_requires_a_positive_dispatch_attempt() -> None:
    with pytest.raises(ValidationError):
        ScheduledJobEntry(event_key="k", job_id=JOB, workflow_id=WF,
                          scheduled_at=datetime.now(UTC), dispatch_attempt=0)


def test_job_log_event_round_trip_and_key() -> None:
    event = JobLogEvent(
        event_key=f"log:{JOB}:attempt:2:stderr:41", job_id=JOB, workflow_id=WF, user_id=USER,
        message="line", timestamp=datetime(2025, 1, 1, tzinfo=UTC), sequence_num=41,
        stream=LogStream.STDERR, retention=True, attempt=2,
    )
    wire = _wire(event)
    assert wire["stream"] == "stderr"
    assert wire["timestamp"] == "2025-01-01T00:00:00Z"
    assert wire["live_published"] is False
    assert JobLogEvent.model_validate_json(event.to_bytes()) == event
    assert event.record_key() == JOB


def test_job_log_sequence_is_uint32() -> None:
    with pytest.raises(ValidationError):
        JobLogEvent(event_key="k", job_id=JOB, workflow_id=WF, user_id=USER, message="",
                    timestamp=datetime.now(UTC), sequence_num=2**32, stream=LogStream.STDOUT, retention=False)


def test_analytic_event_constructors_use_the_reference_keys_and_data() -> None:
    built = AnalyticEvent.workflow_built(user_id=USER, workflow_id=WF, kind=WorkflowKind.CONTAINER)
    assert _wire(built) == {"event_key": f"analytics:workflow:{WF}", "user_id": USER, "workflow_id": WF,
                            "event_type": "WORKFLOWS", "data": {"kind": "CONTAINER"}}
    finished = AnalyticEvent.job_finished(user_id=USER, workflow_id=WF, job_id=JOB, execution_seconds=-3)
    assert finished.event_key == f"analytics:job:{JOB}:completed"
    assert finished.event_type is AnalyticsEventType.JOBS
    assert finished.data == {"job_execution_duration": 0}
    assert finished.record_key() == WF


def test_job_finished_event_carries_the_outcome_when_given() -> None:
    ok = AnalyticEvent.job_finished(user_id=USER, workflow_id=WF, job_id=JOB, execution_seconds=4,
                                    succeeded=True)
    failed = AnalyticEvent.job_finished(user_id=USER, workflow_id=WF, job_id=JOB, execution_seconds=4,
                                        succeeded=False)
    assert _wire(ok)["data"] == {"job_execution_duration": 4, "succeeded": True}
    assert _wire(failed)["data"] == {"job_execution_duration": 4, "succeeded": False}


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    raw = json.dumps({"event_key": "", "user_id": USER, "workflow_id": WF, "event_type": "LOGS",
                      "data": {"count": 3}, "added_later": True})
    assert AnalyticEvent.model_validate_json(raw).data == {"count": 3}


def test_every_topic_has_its_model() -> None:
    expected = {WORKFLOWS: WorkflowEvent, JOBS: ScheduledJobEntry, JOB_LOGS: JobLogEvent,
                ANALYTICS: AnalyticEvent}
    assert expected == EVENT_TYPES
    assert all(model.topic == topic for topic, model in EVENT_TYPES.items())


def test_undecodable_record_raises_invalid_which_is_committed() -> None:
    record = ConsumedRecord(topic=JOBS, partition=0, offset=7, key=WF, value=b"{not json")
    with pytest.raises(Invalid) as caught:
        record.decode(ScheduledJobEntry)
    assert not is_retryable(caught.value)


def test_consumed_record_headers_and_decode() -> None:
    entry = ScheduledJobEntry(event_key="k", job_id=JOB, workflow_id=WF, scheduled_at=datetime.now(UTC),
                              dispatch_attempt=1)
    record = ConsumedRecord(topic=JOBS, partition=1, offset=2, key=WF, value=entry.to_bytes(),
                            headers=[("traceparent", b"00-ab-cd-01"), ("x", b"1"), ("x", b"2")])
    assert record.decode(ScheduledJobEntry) == entry
    assert record.header("x") == "2"
    assert record.header("missing") is None
    assert record.trace_carrier()["traceparent"] == "00-ab-cd-01"
