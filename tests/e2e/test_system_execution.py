"""The whole system runs jobs (issue 5, end to end): the Serve API takes a MANUAL run, the relay
publishes, the scheduler dispatches, the real execution worker runs it (HEARTBEAT against a local
HTTP server, CONTAINER with the offline busybox image), settles it under its lease, the joblogs
processor stores its lines, the analytics processor counts it, the workflow worker terminates a
workflow after its consecutive-failure limit and tells the user.

Everything runs on the shared local Ray cluster (``tests/e2e/system_support.py``); intervals are
shrunk through Settings so nothing waits a production interval.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import pytest
import pytest_asyncio
from system_support import (
    HttpTarget,
    System,
    eventually,
    http_target,
    job_containers,
    refused_endpoint,
    running_system,
)

from domain.enums import LogStream

pytestmark = pytest.mark.slow

NAMESPACE = "system-exec-e2e"
BUSYBOX = "local/busybox:1"


@pytest_asyncio.fixture(scope="module")
async def system(serve_api: Any) -> AsyncIterator[System]:
    async with running_system(serve_api, NAMESPACE) as running:
        yield running


@pytest_asyncio.fixture(scope="module")
async def target() -> AsyncIterator[HttpTarget]:
    async with http_target() as served:
        yield served


@pytest.fixture
def busybox(stack: Any) -> str:
    """The offline busybox image (skips with the reason when there is no Docker engine)."""
    return str(stack.busybox_image())


#: Minutes between AUTOMATIC runs: the longest allowed.  A build schedules the first AUTOMATIC run
#: one interval ahead; at 5 minutes a slow module would see it run beside the MANUAL runs a test
#: counts (an extra job in the analytics, an extra failure towards termination).
NO_AUTOMATIC_RUN = 10080


def heartbeat(api: Any, endpoint: str, **overrides: Any) -> dict[str, Any]:
    payload = json.dumps({"endpoint": endpoint, "expected_status_code": 200})
    return dict(api.heartbeat_body(payload=payload, **{"interval": NO_AUTOMATIC_RUN, **overrides}))


def container(api: Any, cmd: list[str], **extra: Any) -> dict[str, Any]:
    return dict(api.container_body(payload=json.dumps({"image": BUSYBOX, "cmd": cmd, **extra}),
                                   interval=NO_AUTOMATIC_RUN))


async def ready_workflow(api: Any, user: Any, db: Any, body: dict[str, Any]) -> UUID:
    workflow_id = await api.create_workflow(user, body)
    await System.built(db, workflow_id)
    return UUID(str(workflow_id))


# ---------------------------------------------------------------------- HEARTBEAT


async def test_heartbeat_jobs_complete_on_the_expected_status_and_fail_user_otherwise(
    system: System, target: HttpTarget, api: Any, api_user: Any, db: Any
) -> None:
    ok_wf = await ready_workflow(api, api_user, db, heartbeat(api, f"{target.base_url}/ok"))
    teapot_wf = await ready_workflow(api, api_user, db, heartbeat(api, f"{target.base_url}/teapot"))

    ok_job = await system.run_now(api_user, ok_wf)
    teapot_job = await system.run_now(api_user, teapot_wf)
    ok = await system.finished(db, ok_job)
    teapot = await system.finished(db, teapot_job)

    assert ok["status"] == "COMPLETED" and ok["failure_kind"] is None and ok["attempts"] == 1
    assert ok["trigger"] == "MANUAL"
    assert teapot["status"] == "FAILED" and teapot["failure_kind"] == "USER"
    assert teapot["attempts"] == 1  # a USER failure is never retried
    assert "418" in teapot["last_error_message"]
    assert target.hits.get("/ok", 0) >= 1 and target.hits.get("/teapot", 0) >= 1

    # The API shows the same outcome.
    response = await api_user.client.get(f"/workflows/{ok_wf}/jobs/{ok_job}")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "COMPLETED"


async def test_a_refused_connection_is_retried_as_system_failure_with_backoff_then_fails(
    system: System, api: Any, api_user: Any, db: Any
) -> None:
    workflow_id = await ready_workflow(api, api_user, db, heartbeat(api, refused_endpoint()))
    job_id = await system.run_now(api_user, workflow_id)

    # Between attempts the job waits PENDING with a backoff; attempts only grow.
    seen: list[dict[str, Any]] = []

    async def released() -> dict[str, Any] | None:
        row = await System.job(db, job_id)
        seen.append(row)
        return row if row["status"] == "PENDING" and row["attempts"] >= 1 else None

    waiting = await eventually(released, "the first system retry to be scheduled")
    assert waiting["next_attempt_at"] is not None
    assert waiting["last_error_code"] is not None

    final = await system.finished(db, job_id)
    assert final["status"] == "FAILED" and final["failure_kind"] == "SYSTEM"
    assert final["attempts"] == system.settings.execution.system_retry_limit
    message = final["last_error_message"].lower()
    assert "refused" in message or "connect" in message
    attempts = [row["attempts"] for row in seen]
    assert attempts == sorted(attempts)


# ---------------------------------------------------------------------- CONTAINER


async def test_container_jobs_complete_fail_with_the_exit_code_time_out_and_run_out_of_memory(
    system: System, busybox: str, api: Any, api_user: Any, db: Any
) -> None:
    assert busybox == BUSYBOX
    bodies = {
        "echo": container(api, ["sh", "-c", "echo line-1; echo line-2; echo line-3"]),
        "exit3": container(api, ["sh", "-c", "echo bye; exit 3"]),
        "timeout": container(api, ["sleep", "60"], timeout="2s"),
        # dd touches a 64 MiB buffer; the worker's limit is 16 MiB (memory = memory + swap).
        "oom": container(api, ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=4"]),
    }
    workflows = {name: await ready_workflow(api, api_user, db, body) for name, body in bodies.items()}
    jobs = {name: await system.run_now(api_user, wf) for name, wf in workflows.items()}
    rows = {name: await system.finished(db, job_id) for name, job_id in jobs.items()}  # one connection

    assert rows["echo"]["status"] == "COMPLETED", rows["echo"]
    assert rows["exit3"]["status"] == "FAILED" and rows["exit3"]["failure_kind"] == "USER"
    assert "3" in rows["exit3"]["last_error_message"]
    assert rows["timeout"]["status"] == "FAILED" and rows["timeout"]["failure_kind"] == "USER"
    assert "timed out" in rows["timeout"]["last_error_message"]
    assert rows["oom"]["status"] == "FAILED", rows["oom"]
    assert "memory" in rows["oom"]["last_error_message"].lower(), rows["oom"]

    # The echo job's lines reach the log store through job_logs → joblogs processor.
    logs = system.logs
    echo_job, echo_wf = jobs["echo"], workflows["echo"]

    async def stored() -> Any:
        return await logs.count(api_user.user_id, echo_wf, echo_job) >= 3

    await eventually(stored, "the echo job's lines in the log store")
    page = await logs.page(api_user.user_id, echo_wf, echo_job, stream=None, ascending=True)
    assert [entry.message.strip() for entry in page.logs] == ["line-1", "line-2", "line-3"]
    assert {entry.stream for entry in page.logs} == {LogStream.STDOUT}
    assert await logs.count(api_user.user_id, echo_wf, echo_job) == 3

    # Every container is removed, whatever the outcome.
    for name, job_id in jobs.items():
        async def gone(job_id: UUID = job_id) -> bool:
            return not await asyncio.to_thread(job_containers, system.settings, job_id)

        await eventually(gone, f"the {name} job's container to be removed")


# ---------------------------------------------------------------------- failures → termination


async def test_three_consecutive_failures_terminate_the_workflow_with_a_web_alert(
    system: System, target: HttpTarget, api: Any, api_user: Any, db: Any
) -> None:
    response = await api_user.client.put(
        "/users", json={"notification_preference": "ALL"}, headers=api_user.mutating())
    assert response.status_code in (200, 204), response.text
    workflow_id = await ready_workflow(
        api, api_user, db,
        heartbeat(api, f"{target.base_url}/teapot", max_consecutive_job_failures_allowed=3))

    for _ in range(3):
        job_id = await system.run_now(api_user, workflow_id)
        row = await system.finished(db, job_id)
        assert row["status"] == "FAILED"

    async def terminated() -> Any:
        return await db.fetchrow(
            "SELECT terminated_at, consecutive_job_failures_count FROM workflows"
            " WHERE id = $1 AND terminated_at IS NOT NULL", workflow_id)

    await eventually(terminated, "the workflow to be terminated")
    body = (await api_user.client.get(f"/workflows/{workflow_id}")).json()
    assert body.get("terminated_at")

    async def alert() -> Any:
        notes = (await api_user.client.get("/notifications")).json()["notifications"]
        return [n for n in notes if n["kind"] == "WEB_ALERT"
                and json.loads(n["payload"])["title"] == "Workflow Terminated"
                and str(workflow_id) in n["payload"]] if notes else None

    found = await eventually(alert, "the 'Workflow Terminated' WEB_ALERT notification")
    assert len(found) == 1


# ---------------------------------------------------------------------- analytics


async def test_analytics_count_exactly_what_ran(
    system: System, target: HttpTarget, api: Any, api_user: Any, db: Any
) -> None:
    ok_wf = await ready_workflow(api, api_user, db, heartbeat(api, f"{target.base_url}/ok"))
    bad_wf = await ready_workflow(api, api_user, db, heartbeat(api, f"{target.base_url}/teapot"))
    rows = []
    for workflow_id in (ok_wf, ok_wf, bad_wf):
        rows.append(await system.finished(db, await system.run_now(api_user, workflow_id)))
    assert [r["status"] for r in rows] == ["COMPLETED", "COMPLETED", "FAILED"]

    def seconds(row: dict[str, Any]) -> int:
        return max(0, int((row["completed_at"] - row["started_at"]).total_seconds()))

    expected_totals = {
        "total_workflows": 2,
        "total_jobs": 3,
        "total_joblogs": 0,  # a HEARTBEAT probe writes no lines
        "total_job_execution_duration": sum(seconds(r) for r in rows),
    }

    async def totals() -> Any:
        body = (await api_user.client.get("/analytics")).json()
        return body if body == expected_totals else None

    try:
        await eventually(totals, "the user's analytics to match the jobs that ran", within_s=120)
    except AssertionError:
        body = (await api_user.client.get("/analytics")).json()
        raise AssertionError(f"analytics {body} != expected {expected_totals}") from None

    one = (await api_user.client.get(f"/analytics/{ok_wf}")).json()
    assert one["total_jobs"] == 2
    assert one["total_job_execution_duration"] == sum(seconds(r) for r in rows[:2])
    assert one["total_joblogs"] == 0
    other = (await api_user.client.get(f"/analytics/{bad_wf}")).json()
    assert other["total_jobs"] == 1
