"""Runners against real endpoints: HEARTBEAT against a local aiohttp server, CONTAINER against the
Docker engine with the offline ``local/busybox:1`` image (skipped, with the reason, without Docker)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest
from aiohttp import web

from actors.runners.container import ContainerRunner
from actors.runners.context import RunContext
from actors.runners.heartbeat import HeartbeatRunner
from domain.config import DockerConfig, ExecutionWorkerConfig
from domain.enums import ExecutionErrorCode, FailureKind, LogStream
from domain.ids import uuid7
from domain.log_lines import LogLine
from domain.payloads import ContainerPayload, HeartbeatPayload

IMAGE = "local/busybox:1"


class CollectingSink:
    """A log sink that keeps what it is given."""

    def __init__(self) -> None:
        self.lines: list[LogLine] = []

    async def write(self, line: LogLine) -> None:
        self.lines.append(line)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def context(attempt: int = 1, attach: Any = None) -> RunContext:
    if attach is None:
        return RunContext(job_id=uuid7(), workflow_id=uuid7(), user_id=uuid7(), attempt=attempt)
    return RunContext(job_id=uuid7(), workflow_id=uuid7(), user_id=uuid7(), attempt=attempt, attach=attach)


# ---------------------------------------------------------------------------------------- HEARTBEAT


@pytest.fixture(scope="module")
async def http_target() -> AsyncIterator[str]:
    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="x")

    async def needs_header(request: web.Request) -> web.Response:
        ok = request.headers.getall("X-Probe", []) == ["a", "b"]
        return web.Response(status=200 if ok else 401)

    async def redirect(_: web.Request) -> web.Response:
        raise web.HTTPFound("/status/204")

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(status=200)

    app = web.Application()
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/header", needs_header)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture(scope="module")
async def heartbeat() -> AsyncIterator[HeartbeatRunner]:
    runner = HeartbeatRunner()
    yield runner
    await runner.aclose()


async def probe(runner: HeartbeatRunner, endpoint: str, **fields: Any) -> Any:
    return await runner.run(context(), HeartbeatPayload(endpoint=endpoint, **fields), CollectingSink())


async def test_heartbeat_with_the_expected_status_completes(
    heartbeat: HeartbeatRunner, http_target: str
) -> None:
    assert (await probe(heartbeat, f"{http_target}/status/200")).completed
    assert (await probe(heartbeat, f"{http_target}/status/418", expected_status_code=418)).completed


async def test_heartbeat_with_another_status_fails_as_user(
    heartbeat: HeartbeatRunner, http_target: str
) -> None:
    outcome = await probe(heartbeat, f"{http_target}/status/503")
    assert outcome.failure is not None
    assert outcome.failure.code is ExecutionErrorCode.UNEXPECTED_STATUS
    assert outcome.failure.kind is FailureKind.USER
    assert "503" in outcome.failure.message


async def test_heartbeat_sends_every_header_value(heartbeat: HeartbeatRunner, http_target: str) -> None:
    assert (await probe(heartbeat, f"{http_target}/header", headers={"X-Probe": ["a", "b"]})).completed
    assert not (await probe(heartbeat, f"{http_target}/header")).completed


async def test_heartbeat_follows_redirects(heartbeat: HeartbeatRunner, http_target: str) -> None:
    assert (await probe(heartbeat, f"{http_target}/redirect", expected_status_code=204)).completed


async def test_heartbeat_to_a_refused_port_is_a_system_failure(heartbeat: HeartbeatRunner) -> None:
    outcome = await probe(heartbeat, f"http://127.0.0.1:{free_port()}/")
    assert outcome.failure is not None
    assert outcome.failure.code is ExecutionErrorCode.ENDPOINT_UNREACHABLE
    assert outcome.failure.kind is FailureKind.SYSTEM


async def test_heartbeat_timeout_is_a_system_failure(heartbeat: HeartbeatRunner, http_target: str) -> None:
    outcome = await probe(heartbeat, f"{http_target}/slow", timeout=timedelta(milliseconds=300))
    assert outcome.failure is not None
    assert outcome.failure.kind is FailureKind.SYSTEM


async def test_heartbeat_to_a_non_url_is_a_user_failure(heartbeat: HeartbeatRunner) -> None:
    outcome = await probe(heartbeat, "not a url")
    assert outcome.failure is not None
    assert outcome.failure.code is ExecutionErrorCode.INVALID_ENDPOINT


# ---------------------------------------------------------------------------------------- CONTAINER


async def test_unreachable_docker_engine_is_a_system_failure() -> None:
    runner = ContainerRunner(
        DockerConfig(host="unix:///tmp/chronoverse-no-such-docker.sock"), ExecutionWorkerConfig()
    )
    outcome = await runner.run(context(), ContainerPayload(image=IMAGE, cmd=["true"]), CollectingSink())
    runner.close()
    assert outcome.failure is not None
    assert outcome.failure.code is ExecutionErrorCode.CONTAINER_RUNTIME_UNAVAILABLE
    assert outcome.failure.kind is FailureKind.SYSTEM


@pytest.fixture(scope="module")
def docker_cfg(stack: Any) -> DockerConfig:
    stack.busybox_image()  # skips, with the reason, when no Docker engine answers
    config: DockerConfig = stack.settings.docker
    return config


@pytest.fixture
def containers(docker_cfg: DockerConfig) -> Any:
    runner = ContainerRunner(
        docker_cfg, ExecutionWorkerConfig(container_memory="64m", container_cpus=0.5, container_pids_limit=64)
    )
    yield runner
    runner.close()


def job_containers(runner: ContainerRunner, job_id: UUID) -> list[Any]:
    return list(runner._docker().containers.list(all=True, filters={"label": f"chronoverse.job_id={job_id}"}))


async def run_container(
    runner: ContainerRunner, cmd: list[str], *, timeout_s: float = 30, attach: Any = None, image: str = IMAGE
) -> tuple[Any, CollectingSink, RunContext]:
    ctx = context(attach=attach)
    sink = CollectingSink()
    payload = ContainerPayload(
        image=image, cmd=cmd, timeout=timedelta(seconds=timeout_s), env={"GREETING": "hi"}
    )
    outcome = await runner.run(ctx, payload, sink)
    return outcome, sink, ctx


async def test_echo_container_completes_with_numbered_logs_and_is_removed(
    containers: ContainerRunner,
) -> None:
    outcome, sink, ctx = await run_container(
        containers, ["sh", "-c", "echo one; echo $GREETING >&2; echo; echo three"]
    )
    assert outcome.completed
    assert sorted(line.sequence_num for line in sink.lines) == [0, 1, 2]
    by_stream = {(line.stream, line.message) for line in sink.lines}
    assert by_stream == {(LogStream.STDOUT, "one"), (LogStream.STDERR, "hi"), (LogStream.STDOUT, "three")}
    stdout = [line for line in sink.lines if line.stream is LogStream.STDOUT]
    assert [line.message for line in stdout] == ["one", "three"]
    assert stdout[0].sequence_num < stdout[1].sequence_num
    assert job_containers(containers, ctx.job_id) == []


async def test_nonzero_exit_fails_as_user_with_the_code(containers: ContainerRunner) -> None:
    outcome, _, ctx = await run_container(containers, ["sh", "-c", "exit 3"])
    assert outcome.failure is not None
    assert outcome.failure.code is ExecutionErrorCode.CONTAINER_EXIT_NONZERO
    assert outcome.failure.kind is FailureKind.USER
    assert outcome.failure.message.endswith("3")
    assert job_containers(containers, ctx.job_id) == []


async def test_timeout_stops_the_container_and_fails_as_user(containers: ContainerRunner) -> None:
    # The timeout runs from the start request: it must leave a loaded engine time to start the shell.
    outcome, sink, ctx = await run_container(containers, ["sh", "-c", "echo started; sleep 60"], timeout_s=5)
    assert outcome.failure is not None
    assert outcome.failure.code is ExecutionErrorCode.CONTAINER_TIMED_OUT
    assert outcome.failure.kind is FailureKind.USER
    assert "container execution timed out" in outcome.failure.message
    assert [line.message for line in sink.lines] == ["started"]
    assert job_containers(containers, ctx.job_id) == []


async def test_memory_limit_is_enforced_and_oom_fails_with_a_clear_reason(
    containers: ContainerRunner,
) -> None:
    outcome, _, ctx = await run_container(
        containers, ["dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1"]
    )
    assert outcome.failure is not None
    assert outcome.failure.code is ExecutionErrorCode.CONTAINER_OUT_OF_MEMORY
    assert "out of memory (limit 64 MiB)" in outcome.failure.message
    assert job_containers(containers, ctx.job_id) == []


async def test_a_sigkill_someone_requested_is_an_exit_code_failure_not_an_oom(
    containers: ContainerRunner,
) -> None:
    # `docker kill` (SIGKILL, exit 137) under the same memory limit: not mistaken for the OOM killer.
    attached: asyncio.Queue[str] = asyncio.Queue()

    async def attach(container_id: str) -> None:
        await attached.put(container_id)

    async def kill_once_running() -> None:
        container = containers._docker().containers.get(await attached.get())
        for _ in range(600):
            container.reload()
            if container.attrs["State"]["Running"]:
                container.kill()
                return
            await asyncio.sleep(0.1)
        raise AssertionError("the container never ran")

    killer = asyncio.create_task(kill_once_running())
    outcome, _, ctx = await run_container(containers, ["sleep", "60"], attach=attach)
    await killer
    assert outcome.failure is not None
    assert outcome.failure.code is ExecutionErrorCode.CONTAINER_EXIT_NONZERO, outcome.failure
    assert outcome.failure.message.startswith("container exited with non-zero code: 137 (killed by SIGKILL")
    assert job_containers(containers, ctx.job_id) == []


async def test_container_gets_cgroup_limits_labels_and_no_network(containers: ContainerRunner) -> None:
    seen: dict[str, Any] = {}

    async def attach(container_id: str) -> None:
        seen.update(containers._docker().containers.get(container_id).attrs)

    outcome, sink, ctx = await run_container(containers, ["sh", "-c", "ip -o link | wc -l"], attach=attach)
    assert outcome.completed
    host = seen["HostConfig"]
    assert host["NanoCpus"] == 500_000_000
    assert host["Memory"] == host["MemorySwap"] == 64 * 1024**2
    assert host["PidsLimit"] == 64
    assert host["NetworkMode"] == "none"
    labels = seen["Config"]["Labels"]
    assert labels["chronoverse.job_id"] == str(ctx.job_id)
    assert labels["chronoverse.workflow_id"] == str(ctx.workflow_id)
    assert labels["chronoverse.attempt"] == "1"
    assert [line.message.strip() for line in sink.lines] == ["1"]  # only the loopback interface


async def test_missing_image_fails_as_user_without_pulling(containers: ContainerRunner) -> None:
    outcome, _, _ = await run_container(containers, ["true"], image="local/no-such-image:404")
    assert outcome.failure is not None
    assert outcome.failure.code is ExecutionErrorCode.IMAGE_NOT_FOUND
    assert outcome.failure.kind is FailureKind.USER


async def test_lost_lease_at_attach_aborts_and_removes_the_container(containers: ContainerRunner) -> None:
    class LeaseLost(Exception):
        pass

    async def attach(_: str) -> None:
        raise LeaseLost

    ctx = context(attach=attach)
    with pytest.raises(LeaseLost):
        await containers.run(ctx, ContainerPayload(image=IMAGE, cmd=["sleep", "30"]), CollectingSink())
    assert job_containers(containers, ctx.job_id) == []


async def test_cancelled_run_removes_the_container(containers: ContainerRunner) -> None:
    started = asyncio.Event()

    class Sink(CollectingSink):
        async def write(self, line: LogLine) -> None:
            await super().write(line)
            started.set()

    ctx = context()
    task = asyncio.create_task(
        containers.run(
            ctx,
            ContainerPayload(
                image=IMAGE, cmd=["sh", "-c", "echo up; sleep 60"], timeout=timedelta(seconds=60)
            ),
            Sink(),
        )
    )
    await asyncio.wait_for(started.wait(), 60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert job_containers(containers, ctx.job_id) == []


async def test_recovery_reads_an_exited_container_by_label_and_replays_its_logs(
    containers: ContainerRunner,
) -> None:
    job_id, workflow_id = uuid7(), uuid7()
    client = containers._docker()
    container = client.containers.run(
        IMAGE,
        ["sh", "-c", "echo a; echo b >&2; echo c; exit 5"],
        detach=True,
        labels=ContainerRunner.labels(job_id, workflow_id, 2),
        network_mode="none",
    )
    await asyncio.to_thread(container.wait)
    try:
        assert await containers.inspect(container_id=None, job_id=job_id, attempt=1) is None
        state = await containers.inspect(container_id=None, job_id=job_id, attempt=2)
        assert state is not None and state.container_id == container.id
        assert not state.running and state.exit_code == 5
        by_id = await containers.inspect(container_id=container.id, job_id=job_id, attempt=2)
        assert by_id == state
        sink = CollectingSink()
        assert await containers.replay_logs(container.id, sink) == 3
        assert [line.sequence_num for line in sink.lines] == [0, 1, 2]
        assert {line.message for line in sink.lines} == {"a", "b", "c"}
    finally:
        await containers.remove(container.id)
    assert await containers.inspect(container_id=container.id, job_id=job_id, attempt=2) is None
