"""RayTaskRunner on a real local Ray cluster: a callable's stdout/stderr become numbered job log
lines; raising, timing out and a missing module are USER failures (SPEC §5.7)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from actors.runners.context import RunContext
from actors.runners.ray_task import RayTaskRunner
from domain.enums import ExecutionErrorCode, FailureKind, LogStream
from domain.ids import uuid7
from domain.log_lines import LogLine
from domain.payloads import RayPayload


class CollectingSink:
    def __init__(self) -> None:
        self.lines: list[LogLine] = []

    async def write(self, line: LogLine) -> None:
        self.lines.append(line)


@pytest.fixture(scope="module")
def runner(ray_cluster: Any) -> RayTaskRunner:
    return RayTaskRunner()


async def run(runner: RayTaskRunner, **fields: Any) -> tuple[Any, CollectingSink]:
    ctx = RunContext(job_id=uuid7(), workflow_id=uuid7(), user_id=uuid7(), attempt=1)
    sink = CollectingSink()
    payload = RayPayload(num_cpus=0.1, **fields)
    return await runner.run(ctx, payload, sink), sink


async def test_callable_output_becomes_numbered_log_lines(runner: RayTaskRunner) -> None:
    outcome, sink = await run(
        runner, callable="builtins:print", args=["alpha", "", "beta"], kwargs={"sep": "\n"}
    )
    assert outcome.completed
    assert [(line.sequence_num, line.stream, line.message) for line in sink.lines] == [
        (0, LogStream.STDOUT, "alpha"),
        (1, LogStream.STDOUT, "beta"),
    ]


async def test_stderr_is_captured_as_its_own_stream(runner: RayTaskRunner) -> None:
    outcome, sink = await run(runner, callable="sys:stderr.write", args=["oops\n"])
    assert outcome.completed
    assert [(line.stream, line.message) for line in sink.lines] == [(LogStream.STDERR, "oops")]


async def test_raising_callable_fails_as_user_with_its_traceback_logged(runner: RayTaskRunner) -> None:
    outcome, sink = await run(runner, callable="builtins:int", args=["not a number"])
    assert outcome.failure is not None
    assert outcome.failure.code is ExecutionErrorCode.TASK_FAILED
    assert outcome.failure.kind is FailureKind.USER
    assert "ValueError" in outcome.failure.message
    assert any("Traceback" in line.message for line in sink.lines if line.stream is LogStream.STDERR)


async def test_missing_module_fails_as_user(runner: RayTaskRunner) -> None:
    outcome, _ = await run(runner, callable="no_such_module_xyz:main")
    assert outcome.failure is not None and outcome.failure.kind is FailureKind.USER
    assert "No module named" in outcome.failure.message


async def test_timeout_cancels_the_task_and_fails_as_user(runner: RayTaskRunner) -> None:
    outcome, _ = await run(runner, callable="time:sleep", args=[60], timeout=timedelta(seconds=2))
    assert outcome.failure is not None
    assert outcome.failure.code is ExecutionErrorCode.TASK_TIMED_OUT
    assert outcome.failure.kind is FailureKind.USER


async def test_a_finished_task_is_not_cancelled_so_the_next_job_on_its_worker_survives(
    runner: RayTaskRunner,
) -> None:
    # Ray hands a finished task's worker to the next task at once; force-cancelling the finished
    # one (as the runner once did after every run) killed that worker under the next job.
    for _ in range(8):
        first, _ = await run(runner, callable="no_such_module_xyz:main")
        assert first.failure is not None and first.failure.code is ExecutionErrorCode.TASK_FAILED
        second, _ = await run(runner, callable="time:sleep", args=[0.5], timeout=timedelta(seconds=60))
        assert second.completed, second.failure
