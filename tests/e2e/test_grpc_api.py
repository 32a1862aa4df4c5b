"""The public gRPC API end to end: the ``chronoverse-grpc`` Serve application deployed beside the
HTTP one by :func:`serve_apps.app.deploy_serve` (the ``serve_api`` fixture), called over a real gRPC
channel on ``GRPC_PORT`` with a personal API token issued by the HTTP API.

Job logs are produced as in ``test_api_logs.py``: lines seeded into the ``log-store`` actor for a
CONTAINER workflow's job row, and live lines published on the job's Redis channel."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import pytest_asyncio
from test_api_logs import ROWS, SeededJob, insert_job, live_line, seed  # the HTTP log tests' seeding

from domain.config import ClickHouseConfig
from domain.enums import JobStatus
from domain.log_lines import LiveLogMessage, live_channel
from serve_apps.grpc.v1 import (
    health_pb2,
    health_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
    workflows_pb2,
    workflows_pb2_grpc,
)
from store.logstore import LogStore
from store.redis import create_redis

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


# ---------------------------------------------------------------------------------------------
# Job logs


#: The log-store actor this module started or found, held until the session ends (see below).
_LOG_STORE_HANDLES: list[Any] = []


@pytest.fixture(scope="module")
def log_store(
    serve_api: Any, ray_cluster: Any, tmp_path_factory: pytest.TempPathFactory
) -> LogStore:
    """A client of the ``log-store`` actor the Serve app's JobsService reaches (by name, in the app's
    namespace): the one running, or a new one, kept for the session (``test_api_logs`` finds it
    and stops it itself)."""
    from actors.log_store import start_log_store_actor
    from store.logstore.remote import log_store_client

    settings = serve_api.settings
    cfg = ClickHouseConfig(backend="chdb", chdb_path=str(tmp_path_factory.mktemp("grpc-logs")))
    # A non-detached actor dies with its last handle: keep one.
    handle = start_log_store_actor(cfg, settings.ray.namespace, detached=False, num_cpus=0.1)
    _LOG_STORE_HANDLES.append(handle)
    return log_store_client(settings.clickhouse, settings.ray.namespace)


@pytest_asyncio.fixture
async def finished_job(api: Any, api_user: Any, db: Any, log_store: LogStore) -> SeededJob:
    """A COMPLETED job of a CONTAINER workflow with 250 lines (``test_api_logs.message_of``)."""
    return await seed(api, api_user, db, log_store, JobStatus.COMPLETED)


def _job_fields(job: SeededJob) -> dict[str, str]:
    return {"workflow_id": str(job.workflow_id), "job_id": str(job.job_id)}


async def _list_logs(client: GrpcClient, md: Any, job: SeededJob, cursor: str = "") -> jobs_pb2.JobLogs:
    page: jobs_pb2.JobLogs = await client.jobs.ListJobLogs(
        jobs_pb2.ListJobLogsRequest(**_job_fields(job), cursor=cursor), metadata=md
    )
    return page


async def _download(
    client: GrpcClient, md: Any, job: SeededJob, **fields: Any
) -> list[jobs_pb2.LogFileChunk]:
    request = jobs_pb2.DownloadJobLogsRequest(**_job_fields(job), **fields)
    return [chunk async for chunk in client.jobs.DownloadJobLogs(request, metadata=md)]


async def test_a_finished_jobs_logs_are_listed_searched_and_downloaded_like_over_http(
    grpc_client: GrpcClient, finished_job: SeededJob
) -> None:
    user = finished_job.user
    md = grpc_client.metadata(await _token(user))

    pages = [await _list_logs(grpc_client, md, finished_job)]
    while pages[-1].cursor:
        pages.append(await _list_logs(grpc_client, md, finished_job, pages[-1].cursor))
    assert [len(p.logs) for p in pages] == [100, 100, 50]
    seqs = [line.sequence_num for p in pages for line in p.logs]
    assert seqs == list(range(ROWS - 1, -1, -1))  # newest first, no gap, no overlap
    over_http = (await user.client.get(f"{finished_job.base}/logs")).json()
    assert [(line.sequence_num, line.message, line.event_id) for line in pages[0].logs] == [
        (line["sequence_num"], line["message"], line["event_id"]) for line in over_http["logs"]
    ]
    assert pages[0].id == str(finished_job.job_id) and not pages[0].HasField("highlight_token")

    found = await grpc_client.jobs.SearchJobLogs(
        jobs_pb2.SearchJobLogsRequest(
            **_job_fields(finished_job), q="ERR LINE", stream=jobs_pb2.LOG_STREAM_STDERR
        ),
        metadata=md,
    )
    token = found.highlight_token
    assert len(token) == 32 and not found.cursor
    assert [line.sequence_num for line in found.logs] == [s for s in range(ROWS - 1, -1, -1) if s % 5 == 4]
    assert found.logs[0].message == f"__CV_HL_START_{token}__err line__CV_HL_END_{token}__ 249"
    assert {line.stream for line in found.logs} == {jobs_pb2.LOG_STREAM_STDERR}

    for fmt, name, http_format in (
        (jobs_pb2.LOG_FILE_FORMAT_UNSPECIFIED, "txt", "txt"),
        (jobs_pb2.LOG_FILE_FORMAT_JSONL, "jsonl", "jsonl"),
        (jobs_pb2.LOG_FILE_FORMAT_JSON, "json", "json"),
    ):
        chunks = await _download(grpc_client, md, finished_job, format=fmt)
        assert chunks[0].filename == f"{finished_job.job_id}-logs.{name}"
        raw = await user.client.get(f"{finished_job.base}/logs/raw", params={"format": http_format})
        assert chunks[0].content_type == raw.headers["content-type"]
        assert b"".join(c.data for c in chunks) == raw.content  # oldest first, the HTTP file's bytes
    filtered = await _download(grpc_client, md, finished_job, format=jobs_pb2.LOG_FILE_FORMAT_TXT, q="err",
                               stream=jobs_pb2.LOG_STREAM_STDERR)
    text = b"".join(c.data for c in filtered).decode()
    assert text.splitlines() == [f"err line {s:03d}" for s in range(ROWS) if s % 5 == 4]


async def test_log_rpcs_map_their_errors_to_status_codes(
    grpc_client: GrpcClient, api: Any, api_user: Any, other_user: Any, db: Any, finished_job: SeededJob
) -> None:
    md = grpc_client.metadata(await _token(api_user))
    await _list_logs(grpc_client, md, finished_job)  # the log store answers

    heartbeat_workflow = await api.create_workflow(api_user, api.heartbeat_body())
    no_logs = SeededJob(api_user, heartbeat_workflow,
                        await insert_job(db, api_user.user_id, heartbeat_workflow, JobStatus.COMPLETED))
    running = SeededJob(api_user, finished_job.workflow_id,
                        await insert_job(db, api_user.user_id, finished_job.workflow_id, JobStatus.RUNNING))
    intruder = grpc_client.metadata(await _token(other_user))

    def ref(job: SeededJob) -> dict[str, str]:
        return _job_fields(job)

    async def failure(call: Any) -> tuple[grpc.StatusCode, str]:
        """The status of a failed unary call or stream."""
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            if hasattr(call, "__aiter__"):
                async for _ in call:
                    pass
            else:
                await call
        return caught.value.code(), caught.value.details() or ""

    jobs = grpc_client.jobs
    no_retention = await failure(jobs.ListJobLogs(jobs_pb2.ListJobLogsRequest(**ref(no_logs)), metadata=md))
    assert no_retention[0] == grpc.StatusCode.FAILED_PRECONDITION
    assert no_retention[1].startswith("logs retention is disabled")
    foreign = await failure(
        jobs.ListJobLogs(jobs_pb2.ListJobLogsRequest(**ref(finished_job)), metadata=intruder)
    )
    assert foreign[0] == grpc.StatusCode.NOT_FOUND
    bad_cursor = jobs_pb2.ListJobLogsRequest(**ref(finished_job), cursor="nope")
    assert (await failure(jobs.ListJobLogs(bad_cursor, metadata=md)))[0] == grpc.StatusCode.INVALID_ARGUMENT

    download = jobs_pb2.DownloadJobLogsRequest
    assert (await failure(jobs.DownloadJobLogs(download(**ref(no_logs)), metadata=md)))[0] == (
        grpc.StatusCode.FAILED_PRECONDITION)
    assert await failure(jobs.DownloadJobLogs(download(**ref(running)), metadata=md)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "job is not yet completed")

    follow = jobs_pb2.StreamJobLogsRequest
    assert await failure(jobs.StreamJobLogs(follow(**ref(finished_job)), metadata=md)) == (
        grpc.StatusCode.FAILED_PRECONDITION, "job is not running: COMPLETED")
    assert (await failure(jobs.StreamJobLogs(follow(**ref(running)), metadata=intruder)))[0] == (
        grpc.StatusCode.NOT_FOUND)
    anonymous = grpc_client.metadata(None)
    assert (await failure(jobs.StreamJobLogs(follow(**ref(running)), metadata=anonymous)))[0] == (
        grpc.StatusCode.UNAUTHENTICATED)


async def test_a_running_jobs_lines_are_streamed_live_then_its_end(
    grpc_client: GrpcClient, api: Any, api_user: Any, db: Any, log_store: LogStore, serve_api: Any
) -> None:
    job = await seed(api, api_user, db, log_store, JobStatus.RUNNING, rows=3)
    md = grpc_client.metadata(await _token(api_user))
    redis = create_redis(serve_api.settings.redis, client_name="e2e-grpc-logs")
    try:
        call = grpc_client.jobs.StreamJobLogs(jobs_pb2.StreamJobLogsRequest(**_job_fields(job)), metadata=md)
        async with asyncio.timeout(60):
            first = await call.read()
            assert first.WhichOneof("event") == "connected"
            for seq in (3, 4):  # published after `connected`: the subscription came first
                await redis.publish(live_channel(job.job_id), live_line(job, seq, f"live {seq}"))
            lines = [(await call.read()).line for _ in range(2)]
            assert [(line.sequence_num, line.message, line.stream) for line in lines] == [
                (3, "live 3", jobs_pb2.LOG_STREAM_STDOUT), (4, "live 4", jobs_pb2.LOG_STREAM_STDOUT)]
            assert lines[0].event_id == f"log:{job.job_id}:attempt:1:stdout:3"
            assert lines[0].timestamp.ToJsonString() == "2025-03-01T13:00:03Z"
            end = LiveLogMessage.end(job_id=job.job_id, workflow_id=job.workflow_id,
                                     status=JobStatus.COMPLETED)
            await redis.publish(live_channel(job.job_id), end.model_dump_json())
            last = await call.read()
            assert last.WhichOneof("event") == "end" and last.end.job_status == jobs_pb2.JOB_STATUS_COMPLETED
            assert await call.read() is grpc.aio.EOF
            assert await call.code() == grpc.StatusCode.OK
    finally:
        await redis.aclose()


async def test_a_live_stream_ends_when_the_job_finishes_without_an_end_message(
    grpc_client: GrpcClient, api: Any, api_user: Any, db: Any, log_store: LogStore
) -> None:
    job = await seed(api, api_user, db, log_store, JobStatus.RUNNING, rows=1)
    md = grpc_client.metadata(await _token(api_user))
    call = grpc_client.jobs.StreamJobLogs(jobs_pb2.StreamJobLogsRequest(**_job_fields(job)), metadata=md)
    async with asyncio.timeout(60):
        assert (await call.read()).WhichOneof("event") == "connected"
        await db.execute("UPDATE jobs SET status = 'CANCELED', completed_at = now() AT TIME ZONE 'utc' "
                         "WHERE id = $1", job.job_id)
        last = await call.read()
        assert last.WhichOneof("event") == "end" and last.end.job_status == jobs_pb2.JOB_STATUS_CANCELED
        assert await call.read() is grpc.aio.EOF
