"""The public gRPC API end to end: the ``chronoverse-grpc`` Serve application deployed beside the
HTTP one by :func:`serve_apps.app.deploy_serve` (the ``serve_api`` fixture), called over a real gRPC
channel on ``GRPC_PORT`` with a personal API token issued by the HTTP API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import pytest_asyncio

from serve_apps.grpc.v1 import (
    health_pb2,
    health_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
    workflows_pb2,
    workflows_pb2_grpc,
)

pytestmark = pytest.mark.timeout(300)

PAYLOAD = '{"endpoint": "http://127.0.0.1:9/health", "expected_status_code": 200}'


@dataclass
class GrpcClient:
    """Stubs over one channel, and the metadata every call sends."""

    channel: grpc.aio.Channel
    application: str

    @property
    def workflows(self) -> workflows_pb2_grpc.WorkflowsServiceStub:
        return workflows_pb2_grpc.WorkflowsServiceStub(self.channel)

    @property
    def jobs(self) -> jobs_pb2_grpc.JobsServiceStub:
        return jobs_pb2_grpc.JobsServiceStub(self.channel)

    def metadata(self, token: str | None) -> tuple[tuple[str, str], ...]:
        """``application`` (two Serve apps are deployed) and, when given, the bearer token."""
        app = (("application", self.application),)
        return app if token is None else (*app, ("authorization", f"Bearer {token}"))


#: How long the gRPC app may take to answer after ``deploy_serve`` returned.
SERVING_TIMEOUT_S = 60.0


async def _wait_until_serving(client: GrpcClient) -> None:
    # The gRPC proxy may start routing to the new app a moment after it reports RUNNING.
    health = health_pb2_grpc.HealthStub(client.channel)
    deadline = time.monotonic() + SERVING_TIMEOUT_S
    while True:
        try:
            reply = await health.Check(
                health_pb2.HealthCheckRequest(), metadata=client.metadata(None), timeout=5
            )
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.aio.AioRpcError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.5)


@pytest_asyncio.fixture
async def grpc_client(serve_api: Any) -> AsyncIterator[GrpcClient]:
    """A channel to ``GRPC_PORT`` of the deployment, once the gRPC app answers its health check."""
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{serve_api.settings.grpc.port}")
    client = GrpcClient(channel, serve_api.spec.serve.grpc_app_name)
    try:
        await _wait_until_serving(client)
        yield client
    finally:
        await channel.close()


async def _token(user: Any) -> str:
    response = await user.client.post("/auth/tokens", json={"name": "grpc"}, headers=user.mutating())
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


def _create(**overrides: object) -> workflows_pb2.CreateWorkflowRequest:
    fields: dict[str, object] = {
        "name": "grpc-ping",
        "payload": PAYLOAD,
        "kind": workflows_pb2.WORKFLOW_KIND_HEARTBEAT,
        "interval": 5,
        "max_consecutive_job_failures_allowed": 3,
        "idempotency_key": f"grpc-{time.monotonic_ns()}",
    }
    fields.update(overrides)
    return workflows_pb2.CreateWorkflowRequest(**fields)  # type: ignore[arg-type]


async def test_a_token_user_creates_reads_and_lists_a_workflow_and_runs_it(
    grpc_client: GrpcClient, api_user: Any
) -> None:
    md = grpc_client.metadata(await _token(api_user))
    request = _create()
    created = await grpc_client.workflows.CreateWorkflow(request, metadata=md)
    replay = await grpc_client.workflows.CreateWorkflow(request, metadata=md)
    assert replay.id == created.id

    workflow = await grpc_client.workflows.GetWorkflow(
        workflows_pb2.GetWorkflowRequest(workflow_id=created.id), metadata=md
    )
    assert (workflow.id, workflow.name, workflow.kind) == (
        created.id, "grpc-ping", workflows_pb2.WORKFLOW_KIND_HEARTBEAT
    )
    assert workflow.generation == 1 and workflow.HasField("created_at")
    page = await grpc_client.workflows.ListWorkflows(workflows_pb2.ListWorkflowsRequest(), metadata=md)
    assert [w.id for w in page.workflows] == [created.id]

    key = f"run-{created.id}"
    scheduled = await grpc_client.jobs.ScheduleJob(
        jobs_pb2.ScheduleJobRequest(workflow_id=created.id, idempotency_key=key), metadata=md
    )
    again = await grpc_client.jobs.ScheduleJob(
        jobs_pb2.ScheduleJobRequest(workflow_id=created.id, idempotency_key=key), metadata=md
    )
    assert again.id == scheduled.id
    job = await grpc_client.jobs.GetJob(
        jobs_pb2.GetJobRequest(workflow_id=created.id, job_id=scheduled.id), metadata=md
    )
    assert (job.id, job.workflow_id, job.trigger) == (scheduled.id, created.id, jobs_pb2.JOB_TRIGGER_MANUAL)
    jobs = await grpc_client.jobs.ListJobs(
        jobs_pb2.ListJobsRequest(workflow_id=created.id, trigger=jobs_pb2.JOB_TRIGGER_MANUAL), metadata=md
    )
    assert scheduled.id in [j.id for j in jobs.jobs]

    # The same workflow over HTTP: both front doors serve the same services.
    over_http = await api_user.client.get(f"/workflows/{created.id}")
    assert over_http.status_code == 200 and over_http.json()["name"] == "grpc-ping"


async def test_calls_without_a_valid_token_are_unauthenticated(grpc_client: GrpcClient) -> None:
    for token in (None, "cvt_not-a-real-token"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await grpc_client.workflows.ListWorkflows(
                workflows_pb2.ListWorkflowsRequest(), metadata=grpc_client.metadata(token)
            )
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert dict(caught.value.trailing_metadata() or ())["error-code"] == "unauthenticated"


async def test_another_users_workflow_is_not_found(
    grpc_client: GrpcClient, api: Any, api_user: Any, other_user: Any
) -> None:
    workflow_id = str(await api.create_workflow(api_user))
    intruder = grpc_client.metadata(await _token(other_user))
    with pytest.raises(grpc.aio.AioRpcError) as read:
        await grpc_client.workflows.GetWorkflow(
            workflows_pb2.GetWorkflowRequest(workflow_id=workflow_id), metadata=intruder
        )
    assert read.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as run:
        await grpc_client.jobs.ScheduleJob(
            jobs_pb2.ScheduleJobRequest(workflow_id=workflow_id, idempotency_key="steal"), metadata=intruder
        )
    assert run.value.code() == grpc.StatusCode.NOT_FOUND


async def test_an_invalid_request_is_invalid_argument_naming_the_field(
    grpc_client: GrpcClient, api_user: Any
) -> None:
    md = grpc_client.metadata(await _token(api_user))
    for request, field in (
        (_create(interval=20000), "interval"),
        (_create(payload='{"expected_status_code": 200}'), "payload.endpoint"),
        (_create(idempotency_key=""), "idempotency_key"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await grpc_client.workflows.CreateWorkflow(request, metadata=md)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (caught.value.details() or "").startswith(field), caught.value.details()
