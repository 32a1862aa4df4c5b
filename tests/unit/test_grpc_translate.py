"""Proto requests become the same pydantic handle arguments the HTTP routes build, and service
answers become complete proto messages."""

from __future__ import annotations

import inspect
from datetime import datetime
from enum import Enum
from uuid import UUID, uuid4

import pytest
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
from pydantic import ValidationError

from domain.enums import (
    FailureKind,
    JobStatus,
    JobTrigger,
    LogDownloadFormat,
    LogStream,
    NotificationKind,
    NotificationPreference,
    WorkflowBuildStatus,
    WorkflowKind,
)
from domain.errors import Invalid
from domain.log_lines import LiveLogMessage
from serve_apps.grpc import translate
from serve_apps.grpc.servicer import SERVICE_NAMES, GrpcApi
from serve_apps.grpc.v1 import (
    analytics_pb2,
    health_pb2,
    jobs_pb2,
    notifications_pb2,
    users_pb2,
    workflows_pb2,
)
from serve_apps.live_logs import LiveConnected, LiveEnd, LiveLine
from serve_apps.schemas.jobs import JobOut
from serve_apps.schemas.workflows import WorkflowDetail, WorkflowItem

NOW = datetime(2025, 1, 2, 3, 4, 5, 123456)
PAYLOAD = '{"endpoint": "http://127.0.0.1:9/health", "expected_status_code": 200}'


def _create(**overrides: object) -> workflows_pb2.CreateWorkflowRequest:
    fields: dict[str, object] = {
        "name": "ping",
        "payload": PAYLOAD,
        "kind": workflows_pb2.WORKFLOW_KIND_HEARTBEAT,
        "interval": 5,
        "max_consecutive_job_failures_allowed": 3,
        "idempotency_key": "k-1",
    }
    fields.update(overrides)
    return workflows_pb2.CreateWorkflowRequest(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("domain_enum", "proto_enum"),
    [
        (WorkflowKind, workflows_pb2.WorkflowKind),
        (WorkflowBuildStatus, workflows_pb2.WorkflowBuildStatus),
        (JobStatus, jobs_pb2.JobStatus),
        (JobTrigger, jobs_pb2.JobTrigger),
        (FailureKind, jobs_pb2.FailureKind),
        (LogStream, jobs_pb2.LogStream),
        (NotificationPreference, users_pb2.NotificationPreference),
        (NotificationKind, notifications_pb2.NotificationKind),
    ],
)
def test_every_domain_enum_member_round_trips_through_its_proto_enum(
    domain_enum: type[Enum], proto_enum: EnumTypeWrapper
) -> None:
    for member in domain_enum:
        number = proto_enum.Value(translate.enum_out(proto_enum, member))
        assert translate.enum_in(domain_enum, proto_enum, number, "field") is member
    assert len(proto_enum.keys()) == len(domain_enum) + 1  # plus *_UNSPECIFIED
    assert translate.enum_in(domain_enum, proto_enum, 0, "field") is None


def test_an_unknown_enum_number_is_invalid_naming_the_field() -> None:
    with pytest.raises(Invalid, match=r"^kind must be one of WORKFLOW_KIND_HEARTBEAT\|"):
        translate.enum_in(WorkflowKind, workflows_pb2.WorkflowKind, 99, "kind")


def test_create_request_becomes_the_http_create_command() -> None:
    cmd = translate.create_workflow_command(_create(log_retention_ttl="168h"))
    assert cmd.idempotency_key == "k-1"
    assert cmd.request.name == "ping"
    assert cmd.request.kind is WorkflowKind.HEARTBEAT
    assert cmd.request.payload == PAYLOAD
    assert cmd.request.log_retention == "168h"


def test_log_retention_false_is_kept_and_unset_means_the_kinds_default() -> None:
    kept = translate.create_workflow_command(_create(log_retention_enabled=False))
    assert kept.request.log_retention is False
    assert translate.create_workflow_command(_create()).request.log_retention is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": ""}, "name is required"),
        ({"kind": workflows_pb2.WORKFLOW_KIND_UNSPECIFIED}, "kind is required"),
        ({"interval": 0}, "interval is required"),
        ({"interval": 20000}, "interval:"),
        ({"max_consecutive_job_failures_allowed": 1}, "max_consecutive_job_failures_allowed:"),
    ],
)
def test_invalid_create_fields_are_named(overrides: dict[str, object], message: str) -> None:
    from serve_apps.grpc.errors import rpc_error

    with pytest.raises(ValidationError) as caught:
        translate.create_workflow_command(_create(**overrides))
    assert rpc_error(caught.value).details.startswith(message)


def test_the_idempotency_key_is_required_for_create_update_and_schedule() -> None:
    with pytest.raises(Invalid, match="idempotency_key is required"):
        translate.create_workflow_command(_create(idempotency_key="  "))
    update = workflows_pb2.UpdateWorkflowRequest(
        workflow_id=str(uuid4()), name="n", payload=PAYLOAD, interval=5,
        max_consecutive_job_failures_allowed=3,
    )
    with pytest.raises(Invalid, match="idempotency_key is required"):
        translate.update_workflow_command(update)
    with pytest.raises(Invalid, match="idempotency_key is required"):
        translate.schedule_job_command(jobs_pb2.ScheduleJobRequest(workflow_id=str(uuid4())))
    with pytest.raises(Invalid, match="at most 255"):
        translate.schedule_job_command(
            jobs_pb2.ScheduleJobRequest(workflow_id=str(uuid4()), idempotency_key="k" * 256)
        )


def test_workflow_ids_must_be_uuids_and_are_required() -> None:
    from serve_apps.grpc.errors import rpc_error

    with pytest.raises(ValidationError) as missing:
        translate.workflow_ref(workflows_pb2.GetWorkflowRequest())
    assert rpc_error(missing.value).details == "workflow_id is required"
    with pytest.raises(ValidationError) as malformed:
        translate.job_ref(jobs_pb2.GetJobRequest(workflow_id=str(uuid4()), job_id="nope"))
    assert rpc_error(malformed.value).details.startswith("job_id:")


def test_list_filters_are_parsed_like_the_http_query() -> None:
    query = translate.list_workflows_query(
        workflows_pb2.ListWorkflowsRequest(
            query=" db ", kind=workflows_pb2.WORKFLOW_KIND_CONTAINER, interval_min=0, interval_max=30
        )
    )
    assert query.cursor is None
    assert query.filters.kind is WorkflowKind.CONTAINER
    assert (query.filters.query, query.filters.interval_min, query.filters.interval_max) == ("db", 0, 30)
    with pytest.raises(Invalid, match="build_status cannot be combined"):
        translate.list_workflows_query(
            workflows_pb2.ListWorkflowsRequest(
                terminated=True, build_status=workflows_pb2.WORKFLOW_BUILD_STATUS_COMPLETED
            )
        )
    jobs = translate.list_jobs_query(
        jobs_pb2.ListJobsRequest(workflow_id=str(uuid4()), cursor="abc", trigger=jobs_pb2.JOB_TRIGGER_MANUAL)
    )
    assert (jobs.cursor, jobs.filters.trigger, jobs.filters.status) == ("abc", JobTrigger.MANUAL, None)


def test_search_stream_unspecified_means_both_streams() -> None:
    ref = {"workflow_id": str(uuid4()), "job_id": str(uuid4())}
    assert translate.log_search_query(jobs_pb2.SearchJobLogsRequest(**ref, q="err")).stream is None
    stderr = translate.log_search_query(
        jobs_pb2.SearchJobLogsRequest(**ref, stream=jobs_pb2.LOG_STREAM_STDERR)
    )
    assert stderr.stream is LogStream.STDERR


def test_mark_read_needs_at_least_one_uuid() -> None:
    ids = [str(uuid4()), str(uuid4())]
    assert translate.mark_read_request(notifications_pb2.MarkNotificationsReadRequest(ids=ids)).ids == [
        UUID(i) for i in ids
    ]
    with pytest.raises(ValidationError):
        translate.mark_read_request(notifications_pb2.MarkNotificationsReadRequest())


def _detail(**overrides: object) -> WorkflowDetail:
    fields: dict[str, object] = {
        "id": uuid4(), "name": "ping", "payload": PAYLOAD, "kind": WorkflowKind.CONTAINER,
        "build_status": WorkflowBuildStatus.COMPLETED, "interval": 5, "consecutive_job_failures_count": 1,
        "max_consecutive_job_failures_allowed": 3, "created_at": NOW, "updated_at": NOW,
        "terminated_at": None, "log_retention": True, "log_retention_ttl": "168h", "generation": 4,
    }
    fields.update(overrides)
    return WorkflowDetail.model_validate(fields)


def test_a_workflow_answer_carries_every_field() -> None:
    detail = _detail()
    out = translate.workflow_out(detail)
    assert out.id == str(detail.id)
    assert out.kind == workflows_pb2.WORKFLOW_KIND_CONTAINER
    assert out.build_status == workflows_pb2.WORKFLOW_BUILD_STATUS_COMPLETED
    assert out.created_at.ToDatetime() == NOW
    assert not out.HasField("terminated_at")
    assert (out.log_retention, out.log_retention_ttl, out.generation) == (True, "168h", 4)
    listed = translate.workflow_out(WorkflowItem.model_validate(detail.model_dump(exclude={"generation"})))
    assert listed.generation == 0
    assert not translate.workflow_out(_detail(log_retention_ttl=None)).HasField("log_retention_ttl")


def test_a_job_answer_leaves_unknown_times_and_errors_unset() -> None:
    job = JobOut(
        id=uuid4(), workflow_id=uuid4(), status=JobStatus.QUEUED, trigger=JobTrigger.MANUAL,
        scheduled_at=NOW, started_at=None, completed_at=None, created_at=NOW, updated_at=NOW,
        attempts=0, failure_kind=None, last_error_code=None, last_error_message=None,
    )
    out = translate.job_out(job)
    assert (out.status, out.trigger) == (jobs_pb2.JOB_STATUS_QUEUED, jobs_pb2.JOB_TRIGGER_MANUAL)
    assert out.failure_kind == jobs_pb2.FAILURE_KIND_UNSPECIFIED
    assert not out.HasField("started_at") and not out.HasField("last_error_code")


def test_every_rpc_of_the_protos_has_a_method_serve_can_pass_the_context_to() -> None:
    modules = (users_pb2, workflows_pb2, jobs_pb2, notifications_pb2, analytics_pb2, health_pb2)
    rpcs = [
        method.name
        for module in modules
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    ]
    assert len(rpcs) == len(set(rpcs)), "RPC names must be unique: Serve dispatches by method name"
    for name in rpcs:
        params = inspect.signature(getattr(GrpcApi, name)).parameters
        assert list(params) == ["self", "request", "grpc_context"], name
    assert "chronoverse.workflows.v1.WorkflowsService" in SERVICE_NAMES


# -- job log downloads and live events ---------------------------------------------------------


def test_a_download_defaults_to_txt_and_names_its_file_like_the_http_download() -> None:
    job_id = uuid4()
    query, fmt = translate.log_download(
        jobs_pb2.DownloadJobLogsRequest(workflow_id=str(uuid4()), job_id=str(job_id)))
    assert fmt is LogDownloadFormat.TXT
    head = translate.log_file_head(query, fmt)
    assert (head.filename, head.data) == (f"{job_id}-logs.txt", b"")
    _, jsonl = translate.log_download(jobs_pb2.DownloadJobLogsRequest(
        workflow_id=str(uuid4()), job_id=str(job_id), format=jobs_pb2.LOG_FILE_FORMAT_JSONL))
    assert jsonl is LogDownloadFormat.JSONL


def test_a_file_is_cut_into_chunks_of_at_most_the_limit_whose_bytes_join_back() -> None:
    text = "é" * 10 + "x"  # 21 bytes: a cut may fall inside a character
    chunks = translate.log_file_chunks(text, limit=4)
    assert [len(c.data) for c in chunks] == [4, 4, 4, 4, 4, 1]
    assert b"".join(c.data for c in chunks).decode() == text
    assert translate.log_file_chunks("") == []


def test_live_events_become_connected_line_and_end_messages() -> None:
    job_id, workflow_id = uuid4(), uuid4()
    line = LiveLogMessage(type="log", job_id=job_id, workflow_id=workflow_id, event_id="e-7", message="hi",
                          sequence_num=7, stream=LogStream.STDERR, timestamp=datetime(2026, 11, 30, 1, 2, 3))
    assert translate.live_event_out(LiveConnected()).HasField("connected")
    out = translate.live_event_out(LiveLine(line)).line
    assert (out.message, out.sequence_num, out.event_id) == ("hi", 7, "e-7")
    assert out.stream == jobs_pb2.LOG_STREAM_STDERR
    assert out.timestamp.ToDatetime() == datetime(2026, 11, 30, 1, 2, 3)
    end = translate.live_event_out(LiveEnd(JobStatus.FAILED)).end
    assert end.job_status == jobs_pb2.JOB_STATUS_FAILED
