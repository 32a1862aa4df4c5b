"""The RPC methods of the public gRPC API as a plain class (no Ray): :class:`GrpcApi`.

Serve's gRPC proxy calls the ingress deployment's method named after the RPC with the request
message and, because the parameter is called ``grpc_context``, the call's context (ray-notes
§3.5).  Each method here is a thin translation: authenticate the bearer token, turn the proto
request into the services' pydantic argument (:mod:`serve_apps.grpc.translate`), make one handle
call, turn the answer back.  Method names are unique across the six services, so one class can
serve them all.

A failed call sets its status on the context and returns an empty response instead of raising:
the status reaches the client either way, but a raise makes Serve log a traceback for every
expected NOT_FOUND.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar
from uuid import UUID

import grpc
from google.protobuf.message import Message
from opentelemetry import trace

from domain.errors import NotFound
from serve_apps.gateway.clients import Services
from serve_apps.gateway.errors import unwrap
from serve_apps.grpc import translate
from serve_apps.grpc.access_log import GrpcAccess, GrpcAccessLog
from serve_apps.grpc.auth import TokenAuthenticator
from serve_apps.grpc.errors import RpcError, rpc_error
from serve_apps.grpc.v1 import (
    analytics_pb2,
    health_pb2,
    jobs_pb2,
    notifications_pb2,
    users_pb2,
    workflows_pb2,
)
from serve_apps.live_logs import LiveError, LiveKeepalive, LiveLogHub, follow_job_logs
from serve_apps.schemas.job_logs import RawLogEncoder
from serve_apps.services.context import CallContext
from serve_apps.telemetry import current_ids, extract_context, tracer

log = logging.getLogger("chronoverse.grpc")

#: Full names of the services this API serves (what ``grpc.health.v1.Health/Check`` knows).
SERVICE_NAMES: frozenset[str] = frozenset(
    service.full_name
    for module in (users_pb2, workflows_pb2, jobs_pb2, notifications_pb2, analytics_pb2, health_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
)

#: ``/<package>.<Service>/<Method>`` of every RPC by method name (unique across the services).
RPC_PATHS: dict[str, str] = {
    method.name: f"/{service.full_name}/{method.name}"
    for module in (users_pb2, workflows_pb2, jobs_pb2, notifications_pb2, analytics_pb2, health_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
}

#: Metadata keys carrying the W3C trace context of the caller.
_TRACE_KEYS = ("traceparent", "tracestate")


class RpcContext(Protocol):
    """What the methods use of Serve's ``RayServegRPCContext`` (a subset of ``ServicerContext``)."""

    def invocation_metadata(self) -> Sequence[tuple[str, str]]: ...

    def request_id(self) -> str | None: ...

    def set_code(self, code: grpc.StatusCode) -> None: ...

    def set_details(self, details: str) -> None: ...

    def set_trailing_metadata(self, trailing_metadata: list[tuple[str, str]]) -> None: ...


Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)
Handler = Callable[["GrpcApi", CallContext, Req], Awaitable[Resp]]
Method = Callable[["GrpcApi", Req, RpcContext], Awaitable[Resp]]
StreamHandler = Callable[["GrpcApi", CallContext, Req], AsyncIterator[Resp]]
StreamMethod = Callable[["GrpcApi", Req, RpcContext], AsyncIterator[Resp]]


class RpcAborted(Exception):
    """Ends a server-streaming call whose status is already set on its context.

    A streaming method cannot just return after setting the status: Serve's proxy only copies the
    context to the client along with a message, and there may be none.  Raised after the status
    is set, Serve reports that status (code and details; the trailing metadata does not survive
    this path) — and logs the exception, the price of a status on a stream.
    """


class _Call:
    """One call's bookkeeping: who calls, how it ended, and its access-log line."""

    def __init__(self, api: GrpcApi, name: str, grpc_context: RpcContext) -> None:
        self.api = api
        self.name = name
        self.grpc_context = grpc_context
        self.started = time.perf_counter()
        self.user_id: UUID | None = None
        self.code = grpc.StatusCode.OK

    async def context(self, *, public: bool) -> CallContext:
        """Authenticate the caller (unless ``public``): the context of the service calls."""
        if not public:
            self.user_id = await self.api.authenticator.user_id(self.grpc_context.invocation_metadata())
        return CallContext.current(user_id=self.user_id, request_id=self.grpc_context.request_id() or "")

    def fail(self, exc: Exception, span: trace.Span) -> RpcError:
        """Make ``exc`` the call's status (the one mapping: :func:`serve_apps.grpc.errors.rpc_error`)."""
        error = rpc_error(exc)
        self.code = error.code
        span.set_attribute("rpc.grpc.status_code", error.code.value[0])
        if error.internal:
            span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
            log.error("rpc %s failed", self.name, exc_info=unwrap(exc))
        self.grpc_context.set_code(error.code)
        self.grpc_context.set_details(error.details)
        self.grpc_context.set_trailing_metadata(list(error.trailers))
        return error

    def finish(self, *, messages: int | None = None) -> None:
        """Write the call's access-log line (inside its span, for the trace ids)."""
        trace_id, span_id = current_ids()
        self.api.access_log.write(GrpcAccess(
            method=RPC_PATHS.get(self.name, self.name),
            code=self.code,
            duration_s=time.perf_counter() - self.started,
            user_id=self.user_id,
            request_id=self.grpc_context.request_id() or "",
            trace_id=trace_id,
            span_id=span_id,
            messages=messages,
        ))


def _server_span(name: str, grpc_context: RpcContext) -> AbstractContextManager[trace.Span]:
    carrier = {k: v for k, v in grpc_context.invocation_metadata() if k in _TRACE_KEYS and isinstance(v, str)}
    return tracer().start_as_current_span(
        f"grpc {name}",
        context=extract_context(carrier),
        kind=trace.SpanKind.SERVER,
        record_exception=False,
        set_status_on_exception=False,
    )


def _as_method(method: Any, handler: Callable[..., Any]) -> None:
    method.__name__ = handler.__name__
    method.__qualname__ = f"GrpcApi.{handler.__name__}"
    method.__doc__ = handler.__doc__


def rpc(response: type[Resp], *, public: bool = False) -> Callable[[Handler[Req, Resp]], Method[Req, Resp]]:
    """Make ``handler(self, ctx, request)`` an RPC method ``(self, request, grpc_context)``: the
    caller is authenticated first (unless ``public``), the call runs in a server span, any error
    becomes the call's status with an empty ``response``, and the call gets its access-log line.

    The wrapper deliberately has no ``__wrapped__``: Serve inspects the signature for the
    ``grpc_context`` parameter, and ``inspect.signature`` would otherwise read the handler's.
    """

    def decorate(handler: Handler[Req, Resp]) -> Method[Req, Resp]:
        name = handler.__name__

        async def method(self: GrpcApi, request: Req, grpc_context: RpcContext) -> Resp:
            call = _Call(self, name, grpc_context)
            with _server_span(name, grpc_context) as span:
                try:
                    return await handler(self, await call.context(public=public), request)
                except Exception as exc:
                    call.fail(exc, span)
                    return response()
                except BaseException:
                    call.code = grpc.StatusCode.CANCELLED
                    raise
                finally:
                    call.finish()

        _as_method(method, handler)
        return method

    return decorate


def rpc_stream(*, public: bool = False) -> Callable[[StreamHandler[Req, Resp]], StreamMethod[Req, Resp]]:
    """:func:`rpc` for a server-streaming RPC: ``handler`` is an async generator of messages.  An
    error — before the first message or after some — sets the call's status and ends the call
    with :class:`RpcAborted`; a caller that hangs up is logged as CANCELLED.  No span (like the
    HTTP gateway's streams: a span would last as long as the stream)."""

    def decorate(handler: StreamHandler[Req, Resp]) -> StreamMethod[Req, Resp]:
        name = handler.__name__

        async def method(self: GrpcApi, request: Req, grpc_context: RpcContext) -> AsyncIterator[Resp]:
            call = _Call(self, name, grpc_context)
            sent = 0
            try:
                async for message in handler(self, await call.context(public=public), request):
                    yield message
                    sent += 1
            except Exception as exc:
                error = call.fail(exc, trace.INVALID_SPAN)
                raise RpcAborted(f"{error.code.name}: {error.details}") from None
            except BaseException:  # GeneratorExit / CancelledError: the caller went away
                call.code = grpc.StatusCode.CANCELLED
                raise
            finally:
                call.finish(messages=sent)

        _as_method(method, handler)
        return method

    return decorate


class GrpcApi:
    """Every RPC of the public API.  ``services`` makes the five domain-service clients on first use
    (handles to the HTTP application's deployments in Serve; see
    :class:`serve_apps.gateway.clients.Services`); ``live_logs`` is the replica's live-log hub
    (``StreamJobLogs``).  Every call writes one access-log line (:mod:`serve_apps.grpc.access_log`)."""

    def __init__(
        self, services: Callable[[], Services], authenticator: TokenAuthenticator, live_logs: LiveLogHub
    ) -> None:
        self._make_services = services
        self._services: Services | None = None
        self.authenticator = authenticator
        self.live_logs = live_logs
        self.access_log = GrpcAccessLog()

    @property
    def services(self) -> Services:
        """The domain-service clients (made on first use)."""
        if self._services is None:
            self._services = self._make_services()
        return self._services

    # -- chronoverse.users.v1.UsersService ------------------------------------------------------

    @rpc(users_pb2.User)
    async def GetUser(self, ctx: CallContext, request: users_pb2.GetUserRequest) -> users_pb2.User:
        """The caller's profile."""
        return translate.user_out(await self.services.users.get_user(ctx))

    @rpc(users_pb2.UpdateUserResponse)
    async def UpdateUser(
        self, ctx: CallContext, request: users_pb2.UpdateUserRequest
    ) -> users_pb2.UpdateUserResponse:
        """Set the caller's notification preference."""
        await self.services.users.update_user(ctx, translate.update_user_request(request))
        return users_pb2.UpdateUserResponse()

    # -- chronoverse.workflows.v1.WorkflowsService ----------------------------------------------

    @rpc(workflows_pb2.CreateWorkflowResponse)
    async def CreateWorkflow(
        self, ctx: CallContext, request: workflows_pb2.CreateWorkflowRequest
    ) -> workflows_pb2.CreateWorkflowResponse:
        """Create a workflow, idempotently by ``idempotency_key``."""
        created = await self.services.workflows.create_workflow(
            ctx, translate.create_workflow_command(request)
        )
        return workflows_pb2.CreateWorkflowResponse(id=str(created.id))

    @rpc(workflows_pb2.UpdateWorkflowResponse)
    async def UpdateWorkflow(
        self, ctx: CallContext, request: workflows_pb2.UpdateWorkflowRequest
    ) -> workflows_pb2.UpdateWorkflowResponse:
        """Replace a workflow's name, payload, interval and failure limit."""
        await self.services.workflows.update_workflow(ctx, translate.update_workflow_command(request))
        return workflows_pb2.UpdateWorkflowResponse()

    @rpc(workflows_pb2.Workflow)
    async def GetWorkflow(
        self, ctx: CallContext, request: workflows_pb2.GetWorkflowRequest
    ) -> workflows_pb2.Workflow:
        """One of the caller's workflows."""
        return translate.workflow_out(
            await self.services.workflows.get_workflow(ctx, translate.workflow_ref(request))
        )

    @rpc(workflows_pb2.ListWorkflowsResponse)
    async def ListWorkflows(
        self, ctx: CallContext, request: workflows_pb2.ListWorkflowsRequest
    ) -> workflows_pb2.ListWorkflowsResponse:
        """A page of the caller's workflows."""
        page = await self.services.workflows.list_workflows(ctx, translate.list_workflows_query(request))
        return translate.workflow_list_out(page)

    @rpc(workflows_pb2.TerminateWorkflowResponse)
    async def TerminateWorkflow(
        self, ctx: CallContext, request: workflows_pb2.TerminateWorkflowRequest
    ) -> workflows_pb2.TerminateWorkflowResponse:
        """Terminate a workflow (idempotent)."""
        await self.services.workflows.terminate_workflow(ctx, translate.workflow_ref(request))
        return workflows_pb2.TerminateWorkflowResponse()

    @rpc(workflows_pb2.DeleteWorkflowResponse)
    async def DeleteWorkflow(
        self, ctx: CallContext, request: workflows_pb2.DeleteWorkflowRequest
    ) -> workflows_pb2.DeleteWorkflowResponse:
        """Delete a terminated workflow."""
        await self.services.workflows.delete_workflow(ctx, translate.workflow_ref(request))
        return workflows_pb2.DeleteWorkflowResponse()

    # -- chronoverse.jobs.v1.JobsService --------------------------------------------------------

    @rpc(jobs_pb2.ScheduleJobResponse)
    async def ScheduleJob(
        self, ctx: CallContext, request: jobs_pb2.ScheduleJobRequest
    ) -> jobs_pb2.ScheduleJobResponse:
        """A manual run now, idempotently by ``idempotency_key``."""
        created = await self.services.jobs.schedule_job(ctx, translate.schedule_job_command(request))
        return jobs_pb2.ScheduleJobResponse(id=str(created.id))

    @rpc(jobs_pb2.Job)
    async def GetJob(self, ctx: CallContext, request: jobs_pb2.GetJobRequest) -> jobs_pb2.Job:
        """One job of one of the caller's workflows."""
        return translate.job_out(await self.services.jobs.get_job(ctx, translate.job_ref(request)))

    @rpc(jobs_pb2.ListJobsResponse)
    async def ListJobs(
        self, ctx: CallContext, request: jobs_pb2.ListJobsRequest
    ) -> jobs_pb2.ListJobsResponse:
        """A page of a workflow's jobs."""
        page = await self.services.jobs.list_jobs(ctx, translate.list_jobs_query(request))
        return translate.job_list_out(page)

    @rpc(jobs_pb2.JobLogs)
    async def ListJobLogs(self, ctx: CallContext, request: jobs_pb2.ListJobLogsRequest) -> jobs_pb2.JobLogs:
        """A page of a job's log lines, newest first."""
        return translate.job_logs_out(await self.services.jobs.list_logs(ctx, translate.logs_query(request)))

    @rpc(jobs_pb2.JobLogs)
    async def SearchJobLogs(
        self, ctx: CallContext, request: jobs_pb2.SearchJobLogsRequest
    ) -> jobs_pb2.JobLogs:
        """A page of a job's lines containing ``q``."""
        page = await self.services.jobs.search_logs(ctx, translate.log_search_query(request))
        return translate.job_logs_out(page)

    @rpc_stream()
    async def StreamJobLogs(
        self, ctx: CallContext, request: jobs_pb2.StreamJobLogsRequest
    ) -> AsyncIterator[jobs_pb2.JobLogEvent]:
        """A running job's lines as they come, through the replica's live-log hub (the same
        follower as the HTTP API's SSE stream); an error event becomes the call's status."""
        ref = translate.job_ref(request)
        async for event in follow_job_logs(self.live_logs, self.services.jobs, ctx, ref):
            if isinstance(event, LiveError):
                raise event.error
            if not isinstance(event, LiveKeepalive):  # HTTP/2 keeps an idle stream open
                yield translate.live_event_out(event)

    @rpc_stream()
    async def DownloadJobLogs(
        self, ctx: CallContext, request: jobs_pb2.DownloadJobLogsRequest
    ) -> AsyncIterator[jobs_pb2.LogFileChunk]:
        """A finished job's log file, oldest first: one ``download_page`` hop per page of 1000 lines,
        the first before any chunk is sent (so its errors are the call's plain status)."""
        query, fmt = translate.log_download(request)
        page = await self.services.jobs.download_page(ctx, query)
        encoder = RawLogEncoder.for_query(fmt, query)
        yield translate.log_file_head(query, fmt)
        text = encoder.start()
        while True:
            for chunk in translate.log_file_chunks(text + encoder.page(page.logs)):
                yield chunk
            if page.cursor is None:
                break
            next_page = query.model_copy(update={"cursor": page.cursor})
            page = await self.services.jobs.download_page(ctx, next_page)
            text = ""
        for chunk in translate.log_file_chunks(encoder.finish()):
            yield chunk

    # -- chronoverse.notifications.v1.NotificationsService --------------------------------------

    @rpc(notifications_pb2.ListNotificationsResponse)
    async def ListNotifications(
        self, ctx: CallContext, request: notifications_pb2.ListNotificationsRequest
    ) -> notifications_pb2.ListNotificationsResponse:
        """The caller's unread notifications."""
        page = await self.services.notifications.list_notifications(
            ctx, translate.list_notifications_query(request)
        )
        return translate.notification_list_out(page)

    @rpc(notifications_pb2.MarkNotificationsReadResponse)
    async def MarkNotificationsRead(
        self, ctx: CallContext, request: notifications_pb2.MarkNotificationsReadRequest
    ) -> notifications_pb2.MarkNotificationsReadResponse:
        """Mark some of the caller's notifications read."""
        await self.services.notifications.mark_read(ctx, translate.mark_read_request(request))
        return notifications_pb2.MarkNotificationsReadResponse()

    # -- chronoverse.analytics.v1.AnalyticsService ----------------------------------------------

    @rpc(analytics_pb2.UserAnalytics)
    async def GetUserAnalytics(
        self, ctx: CallContext, request: analytics_pb2.GetUserAnalyticsRequest
    ) -> analytics_pb2.UserAnalytics:
        """The caller's totals."""
        return translate.user_analytics_out(await self.services.analytics.get_user_analytics(ctx))

    @rpc(analytics_pb2.WorkflowAnalytics)
    async def GetWorkflowAnalytics(
        self, ctx: CallContext, request: analytics_pb2.GetWorkflowAnalyticsRequest
    ) -> analytics_pb2.WorkflowAnalytics:
        """One workflow's aggregates."""
        row = await self.services.analytics.get_workflow_analytics(ctx, translate.workflow_ref(request))
        return translate.workflow_analytics_out(row)

    # -- grpc.health.v1.Health ------------------------------------------------------------------

    @rpc(health_pb2.HealthCheckResponse, public=True)
    async def Check(
        self, ctx: CallContext, request: health_pb2.HealthCheckRequest
    ) -> health_pb2.HealthCheckResponse:
        """SERVING for the server ("") and each service of the API; NOT_FOUND for other names (the
        health-checking protocol's answer).  The replica answering is the check: it only runs once
        Serve has started it, and its calls go to the domain services through Serve's handles."""
        if request.service and request.service not in SERVICE_NAMES:
            raise NotFound(f"unknown service: {request.service}")
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

