"""Proto messages ↔ the pydantic models the domain services take and return (pure, no I/O).

Requests become the *same* handle arguments the HTTP routes build (``CreateWorkflowCommand``,
``JobRef``, ``ListJobsQuery``, …), validated by the same models and filter parsers, so the two front
doors cannot drift.  proto3 cannot tell an empty string or zero from a missing field: both count as
*missing* here, so a required field left empty is ``<field> is required`` (INVALID_ARGUMENT), and
an empty cursor is the first page.  Enum values are the domain enum's member names behind the proto
enum's prefix (``WORKFLOW_KIND_HEARTBEAT`` ↔ ``WorkflowKind.HEARTBEAT``); ``*_UNSPECIFIED`` is
"not given".
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any, TypeVar
from uuid import UUID

from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from domain.enums import (
    JobStatus,
    JobTrigger,
    LogDownloadFormat,
    LogStream,
    NotificationPreference,
    WorkflowBuildStatus,
    WorkflowKind,
)
from domain.errors import Invalid
from domain.filters import JobFilters, WorkflowFilters
from domain.log_lines import LiveLogMessage
from serve_apps.gateway.dependencies import IDEMPOTENCY_KEY_MAX_LENGTH
from serve_apps.grpc.v1 import analytics_pb2, jobs_pb2, notifications_pb2, users_pb2, workflows_pb2
from serve_apps.live_logs import LiveConnected, LiveEnd, LiveLine
from serve_apps.schemas.analytics import UserAnalyticsOut, WorkflowAnalyticsOut
from serve_apps.schemas.job_logs import (
    RAW_CONTENT_TYPES,
    JobLogsPage,
    JobLogsSearchPage,
    LogDownloadQuery,
    LogLineOut,
    LogSearchQuery,
    LogsQuery,
)
from serve_apps.schemas.jobs import JobList, JobOut, JobRef, ListJobsQuery, ScheduleJobCommand
from serve_apps.schemas.notifications import (
    ListNotificationsQuery,
    MarkReadRequest,
    NotificationList,
    NotificationOut,
)
from serve_apps.schemas.users import UpdateUserRequest, UserProfile
from serve_apps.schemas.workflows import (
    CreateWorkflowCommand,
    CreateWorkflowRequest,
    ListWorkflowsQuery,
    UpdateWorkflowCommand,
    UpdateWorkflowRequest,
    WorkflowItem,
    WorkflowList,
    WorkflowRef,
)

E = TypeVar("E", bound=Enum)

#: Largest ``LogFileChunk.data``: well under gRPC's default 4 MiB message limit (a page of 1000
#: lines of up to 64 KiB each could be 64 MiB).
LOG_FILE_CHUNK_BYTES = 1024 * 1024

# ---------------------------------------------------------------------------------------------
# Building blocks


def present(message: Message) -> dict[str, Any]:
    """The fields of ``message`` that are set (non-empty, non-zero), repeated ones as lists."""
    return {
        field.name: list(value) if field.is_repeated else value for field, value in message.ListFields()
    }


def _prefix(proto_enum: EnumTypeWrapper) -> str:
    return proto_enum.Name(0).removesuffix("UNSPECIFIED")


def enum_in(domain_enum: type[E], proto_enum: EnumTypeWrapper, number: int, field: str) -> E | None:
    """The domain member of a proto enum value (``None`` for ``*_UNSPECIFIED``); an unknown number
    is INVALID_ARGUMENT naming ``field``."""
    if number == 0:
        return None
    try:
        return domain_enum[proto_enum.Name(number).removeprefix(_prefix(proto_enum))]
    except (ValueError, KeyError):
        names = (value.name for value in proto_enum.DESCRIPTOR.values)
        allowed = "|".join(name for name in names if not name.endswith("UNSPECIFIED"))
        raise Invalid(f"{field} must be one of {allowed}") from None


def enum_out(proto_enum: EnumTypeWrapper, member: Enum | None) -> str:
    """The proto enum value name of a domain member (``*_UNSPECIFIED`` for ``None``); message
    constructors take enum values by name."""
    if member is None:
        return proto_enum.Name(0)
    name = _prefix(proto_enum) + member.name
    proto_enum.Value(name)  # a domain member the proto lacks is a bug: fail loudly (ValueError)
    return name


def timestamp(value: datetime | None) -> Timestamp | None:
    """A protobuf timestamp (naive datetimes hold UTC, as everywhere in this code base)."""
    if value is None:
        return None
    out = Timestamp()
    out.FromDatetime(value)
    return out


def idempotency_key(value: str) -> str:
    """The request's ``idempotency_key``: required and at most 255 characters, as the HTTP API's
    ``Idempotency-Key`` header."""
    if not value.strip():
        raise Invalid("idempotency_key is required", code="idempotency_key_required")
    if len(value) > IDEMPOTENCY_KEY_MAX_LENGTH:
        raise Invalid(f"idempotency_key must be at most {IDEMPOTENCY_KEY_MAX_LENGTH} characters")
    return value.strip()


# ---------------------------------------------------------------------------------------------
# Users


def update_user_request(req: users_pb2.UpdateUserRequest) -> UpdateUserRequest:
    """``UpdateUser`` → the ``PUT /users`` body."""
    preference = enum_in(
        NotificationPreference, users_pb2.NotificationPreference, req.notification_preference,
        "notification_preference",
    )
    return UpdateUserRequest.model_validate(
        {} if preference is None else {"notification_preference": preference}
    )


def user_out(profile: UserProfile) -> users_pb2.User:
    """The caller's profile."""
    return users_pb2.User(
        email=profile.email,
        notification_preference=enum_out(users_pb2.NotificationPreference, profile.notification_preference),
        created_at=timestamp(profile.created_at),
        updated_at=timestamp(profile.updated_at),
    )


# ---------------------------------------------------------------------------------------------
# Workflows


def create_workflow_command(req: workflows_pb2.CreateWorkflowRequest) -> CreateWorkflowCommand:
    """``CreateWorkflow`` → the handle argument of ``WorkflowsService.create_workflow``."""
    body = present(req)
    for name in ("idempotency_key", "log_retention_enabled", "log_retention_ttl"):
        body.pop(name, None)
    retention = req.WhichOneof("log_retention")
    if retention is not None:
        body["log_retention"] = getattr(req, retention)
    if "kind" in body:
        body["kind"] = enum_in(WorkflowKind, workflows_pb2.WorkflowKind, req.kind, "kind")
    request = CreateWorkflowRequest.model_validate(body)
    return CreateWorkflowCommand(request=request, idempotency_key=idempotency_key(req.idempotency_key))


def update_workflow_command(req: workflows_pb2.UpdateWorkflowRequest) -> UpdateWorkflowCommand:
    """``UpdateWorkflow`` → the handle argument of ``WorkflowsService.update_workflow``."""
    workflow_id = _workflow_id(req)
    body = present(req)
    for name in ("workflow_id", "idempotency_key"):
        body.pop(name, None)
    request = UpdateWorkflowRequest.model_validate(body)
    return UpdateWorkflowCommand(
        workflow_id=workflow_id, request=request, idempotency_key=idempotency_key(req.idempotency_key)
    )


def _workflow_id(req: Message) -> UUID:
    """The request's ``workflow_id`` (required, a UUID)."""
    given = {k: v for k, v in present(req).items() if k == "workflow_id"}
    return WorkflowRef.model_validate(given).workflow_id


def workflow_ref(
    req: workflows_pb2.GetWorkflowRequest
    | workflows_pb2.TerminateWorkflowRequest
    | workflows_pb2.DeleteWorkflowRequest
    | analytics_pb2.GetWorkflowAnalyticsRequest,
) -> WorkflowRef:
    """A request naming one of the caller's workflows."""
    return WorkflowRef.model_validate(present(req))


def list_workflows_query(req: workflows_pb2.ListWorkflowsRequest) -> ListWorkflowsQuery:
    """``ListWorkflows`` → the handle argument (filters parsed as the HTTP query string is)."""
    filters = WorkflowFilters.parse(
        query=req.query,
        kind=enum_in(WorkflowKind, workflows_pb2.WorkflowKind, req.kind, "kind"),
        build_status=enum_in(
            WorkflowBuildStatus, workflows_pb2.WorkflowBuildStatus, req.build_status, "build_status"
        ),
        terminated=req.terminated,
        interval_min=req.interval_min if req.HasField("interval_min") else None,
        interval_max=req.interval_max if req.HasField("interval_max") else None,
    )
    return ListWorkflowsQuery(cursor=req.cursor or None, filters=filters)


def workflow_out(item: WorkflowItem) -> workflows_pb2.Workflow:
    """A workflow (``generation`` only when ``item`` is a :class:`WorkflowDetail`)."""
    return workflows_pb2.Workflow(
        id=str(item.id),
        name=item.name,
        payload=item.payload,
        kind=enum_out(workflows_pb2.WorkflowKind, item.kind),
        build_status=enum_out(workflows_pb2.WorkflowBuildStatus, item.build_status),
        interval=item.interval,
        consecutive_job_failures_count=item.consecutive_job_failures_count,
        max_consecutive_job_failures_allowed=item.max_consecutive_job_failures_allowed,
        created_at=timestamp(item.created_at),
        updated_at=timestamp(item.updated_at),
        terminated_at=timestamp(item.terminated_at),
        log_retention=item.log_retention,
        log_retention_ttl=item.log_retention_ttl,
        generation=getattr(item, "generation", 0),
    )


def workflow_list_out(page: WorkflowList) -> workflows_pb2.ListWorkflowsResponse:
    """A page of workflows."""
    return workflows_pb2.ListWorkflowsResponse(
        workflows=[workflow_out(w) for w in page.workflows], cursor=page.cursor or ""
    )


# ---------------------------------------------------------------------------------------------
# Jobs and their logs


def schedule_job_command(req: jobs_pb2.ScheduleJobRequest) -> ScheduleJobCommand:
    """``ScheduleJob`` → a manual run (the idempotency key is required)."""
    workflow_id = _workflow_id(req)
    return ScheduleJobCommand(workflow_id=workflow_id, idempotency_key=idempotency_key(req.idempotency_key))


def job_ref(req: jobs_pb2.GetJobRequest | jobs_pb2.StreamJobLogsRequest) -> JobRef:
    """A request naming one job of one of the caller's workflows."""
    return JobRef.model_validate(present(req))


def list_jobs_query(req: jobs_pb2.ListJobsRequest) -> ListJobsQuery:
    """``ListJobs`` → the handle argument."""
    filters = JobFilters.parse(
        status=enum_in(JobStatus, jobs_pb2.JobStatus, req.status, "status"),
        trigger=enum_in(JobTrigger, jobs_pb2.JobTrigger, req.trigger, "trigger"),
    )
    return ListJobsQuery(workflow_id=_workflow_id(req), cursor=req.cursor or None, filters=filters)


def job_out(job: JobOut) -> jobs_pb2.Job:
    """A job."""
    return jobs_pb2.Job(
        id=str(job.id),
        workflow_id=str(job.workflow_id),
        status=enum_out(jobs_pb2.JobStatus, job.status),
        trigger=enum_out(jobs_pb2.JobTrigger, job.trigger),
        scheduled_at=timestamp(job.scheduled_at),
        started_at=timestamp(job.started_at),
        completed_at=timestamp(job.completed_at),
        created_at=timestamp(job.created_at),
        updated_at=timestamp(job.updated_at),
        attempts=job.attempts,
        failure_kind=enum_out(jobs_pb2.FailureKind, job.failure_kind),
        last_error_code=job.last_error_code,
        last_error_message=job.last_error_message,
    )


def job_list_out(page: JobList) -> jobs_pb2.ListJobsResponse:
    """A page of jobs."""
    return jobs_pb2.ListJobsResponse(jobs=[job_out(j) for j in page.jobs], cursor=page.cursor or "")


def logs_query(req: jobs_pb2.ListJobLogsRequest) -> LogsQuery:
    """``ListJobLogs`` → the handle argument of ``JobsService.list_logs``."""
    return LogsQuery.model_validate(present(req))


def log_search_query(req: jobs_pb2.SearchJobLogsRequest) -> LogSearchQuery:
    """``SearchJobLogs`` → the handle argument of ``JobsService.search_logs``."""
    fields = present(req)
    fields["stream"] = enum_in(LogStream, jobs_pb2.LogStream, req.stream, "stream")
    return LogSearchQuery.model_validate(fields)


def log_line_out(line: LogLineOut | LiveLogMessage) -> jobs_pb2.LogLine:
    """One log line: stored (a page) or live (as the SSE ``log`` frame)."""
    return jobs_pb2.LogLine(
        timestamp=timestamp(line.timestamp),
        message=line.message,
        sequence_num=line.sequence_num,
        stream=enum_out(jobs_pb2.LogStream, line.stream),
        event_id=line.event_id,
    )


def job_logs_out(page: JobLogsPage) -> jobs_pb2.JobLogs:
    """A page of a job's lines (``highlight_token`` from a search page)."""
    token = page.highlight_token if isinstance(page, JobLogsSearchPage) else None
    return jobs_pb2.JobLogs(
        id=str(page.id),
        workflow_id=str(page.workflow_id),
        logs=[log_line_out(line) for line in page.logs],
        cursor=page.cursor or "",
        highlight_token=token,
    )


def log_download(req: jobs_pb2.DownloadJobLogsRequest) -> tuple[LogDownloadQuery, LogDownloadFormat]:
    """``DownloadJobLogs`` → the handle argument of ``JobsService.download_page`` (first page) and
    the file format (UNSPECIFIED = txt, as the HTTP download's default)."""
    fields = present(req)
    fields.pop("format", None)
    fields["stream"] = enum_in(LogStream, jobs_pb2.LogStream, req.stream, "stream")
    fmt = enum_in(LogDownloadFormat, jobs_pb2.LogFileFormat, req.format, "format")
    return LogDownloadQuery.model_validate(fields), fmt or LogDownloadFormat.TXT


def log_file_head(query: LogDownloadQuery, fmt: LogDownloadFormat) -> jobs_pb2.LogFileChunk:
    """The first chunk of a download: the file's name and media type, as the HTTP headers say."""
    return jobs_pb2.LogFileChunk(
        filename=f"{query.job_id}-logs.{fmt.value}", content_type=RAW_CONTENT_TYPES[fmt]
    )


def log_file_chunks(text: str, limit: int = LOG_FILE_CHUNK_BYTES) -> list[jobs_pb2.LogFileChunk]:
    """``text`` (UTF-8) in chunks of at most ``limit`` bytes (none for an empty text).  A chunk may
    end inside a character: the client concatenates the bytes."""
    data = text.encode("utf-8")
    return [jobs_pb2.LogFileChunk(data=data[i : i + limit]) for i in range(0, len(data), limit)]



def live_event_out(event: LiveConnected | LiveLine | LiveEnd) -> jobs_pb2.JobLogEvent:
    """A ``StreamJobLogs`` message (keepalives and errors are not messages: the servicer skips the
    first and turns the second into the call's status)."""
    if isinstance(event, LiveLine):
        return jobs_pb2.JobLogEvent(line=log_line_out(event.message))
    if isinstance(event, LiveEnd):
        ended = jobs_pb2.StreamEnded(job_status=enum_out(jobs_pb2.JobStatus, event.status))
        return jobs_pb2.JobLogEvent(end=ended)
    return jobs_pb2.JobLogEvent(connected=jobs_pb2.StreamConnected())


# ---------------------------------------------------------------------------------------------
# Notifications and analytics


def list_notifications_query(req: notifications_pb2.ListNotificationsRequest) -> ListNotificationsQuery:
    """``ListNotifications`` → the handle argument."""
    return ListNotificationsQuery(cursor=req.cursor or None)


def mark_read_request(req: notifications_pb2.MarkNotificationsReadRequest) -> MarkReadRequest:
    """``MarkNotificationsRead`` → the ``PUT /notifications`` body."""
    return MarkReadRequest.model_validate(present(req))


def notification_out(item: NotificationOut) -> notifications_pb2.Notification:
    """An unread notification."""
    return notifications_pb2.Notification(
        id=str(item.id),
        kind=enum_out(notifications_pb2.NotificationKind, item.kind),
        payload=item.payload,
        read_at=timestamp(item.read_at),
        created_at=timestamp(item.created_at),
        updated_at=timestamp(item.updated_at),
    )


def notification_list_out(page: NotificationList) -> notifications_pb2.ListNotificationsResponse:
    """A page of notifications."""
    return notifications_pb2.ListNotificationsResponse(
        notifications=[notification_out(n) for n in page.notifications], cursor=page.cursor or ""
    )


def user_analytics_out(totals: UserAnalyticsOut) -> analytics_pb2.UserAnalytics:
    """The caller's totals."""
    return analytics_pb2.UserAnalytics(**totals.model_dump())


def workflow_analytics_out(row: WorkflowAnalyticsOut) -> analytics_pb2.WorkflowAnalytics:
    """One workflow's aggregates."""
    return analytics_pb2.WorkflowAnalytics(
        workflow_id=str(row.workflow_id),
        total_job_execution_duration=row.total_job_execution_duration,
        total_jobs=row.total_jobs,
        total_joblogs=row.total_joblogs,
    )
