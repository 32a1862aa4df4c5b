"""Faults of the whole system (issue 5): the execution actor is killed with SIGKILL while a
CONTAINER job runs; Ray restarts it, the expired lease is recovered, the job ends in exactly one
terminal state, its container is removed and no AUTOMATIC slot is duplicated.  Replaying every
``jobs``/``job_logs``/``analytics`` record of the workflow afterwards changes nothing.

The backbone runs with a 6 s lease and a 1 s recovery interval (``tests/e2e/system_support.py``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import pytest
import pytest_asyncio
import ray
from system_support import System, eventually, job_containers, running_system

pytestmark = pytest.mark.slow

NAMESPACE = "system-faults-e2e"
EXECUTION_ACTOR = "execution-worker-0"


@pytest_asyncio.fixture(scope="module")
async def system(serve_api: Any) -> AsyncIterator[System]:
    async with running_system(serve_api, NAMESPACE) as running:
        yield running


async def actor_pid(name: str) -> int:
    """The OS process id of a named actor of the system (asked of the actor itself)."""

    def pid(_actor: Any) -> int:  # nested: pickled by value (workers cannot import this module)
        return os.getpid()

    handle = ray.get_actor(name, namespace=NAMESPACE)
    return int(await handle.__ray_call__.remote(pid))


async def snapshot(system: System, db: Any, user: Any, workflow_id: UUID) -> dict[str, Any]:
    """Job rows, analytics and log counts of one workflow: what a replay must leave alone."""
    jobs = await db.fetch(
        """SELECT id, status::text, "trigger"::text, scheduled_at, attempts, dispatch_attempts,
                  failure_kind, last_error_code, completed_at
             FROM jobs WHERE workflow_id = $1 ORDER BY id""", workflow_id)
    logs = {str(r["id"]): await system.logs.count(user.user_id, workflow_id, r["id"]) for r in jobs}
    return {
        "jobs": [tuple(r) for r in jobs],
        "logs": logs,
        "analytics": (await user.client.get("/analytics")).json(),
        "workflow_analytics": (await user.client.get(f"/analytics/{workflow_id}")).json(),
    }


async def test_a_killed_execution_actor_is_recovered_and_replaying_every_record_changes_nothing(
    system: System, stack: Any, api: Any, api_user: Any, db: Any
) -> None:
    stack.busybox_image()  # skips with the reason when there is no Docker engine
    body = api.container_body(payload=json.dumps(
        {"image": "local/busybox:1", "cmd": ["sh", "-c", "echo started; sleep 5; echo finished"]}))
    workflow_id = await api.create_workflow(api_user, body)
    await System.built(db, workflow_id)

    # The build inserted the first AUTOMATIC slot an interval ahead; make it due now.
    job_id = await db.fetchval(
        """UPDATE jobs SET scheduled_at = (now() AT TIME ZONE 'utc') + interval '1 second'
            WHERE workflow_id = $1 AND "trigger" = 'AUTOMATIC' AND status = 'PENDING'
        RETURNING id""", workflow_id)
    assert job_id is not None

    async def running_in_container() -> Any:
        row = await System.job(db, job_id)
        return row if row["status"] == "RUNNING" and row["container_id"] else None

    await eventually(running_in_container, "the job to run in its container")
    pid = await actor_pid(EXECUTION_ACTOR)
    os.kill(pid, signal.SIGKILL)

    async def restarted() -> Any:
        try:
            return await actor_pid(EXECUTION_ACTOR) != pid
        except Exception:  # still restarting
            return False

    await eventually(restarted, "Ray to restart the execution actor", within_s=120)

    final = await system.finished(db, job_id, within_s=120)
    assert final["status"] in ("COMPLETED", "FAILED"), final
    # The killed actor could not settle it: the restarted one recovered the expired lease.
    stats = await ray.get_actor(EXECUTION_ACTOR, namespace=NAMESPACE).stats.remote()
    assert stats.recovered >= 1, stats

    # Exactly one terminal state: it does not move again, whatever the next recovery passes find.
    async def two_more_passes() -> bool:
        now = await ray.get_actor(EXECUTION_ACTOR, namespace=NAMESPACE).stats.remote()
        return bool(now.recovery_passes >= stats.recovery_passes + 2)

    await eventually(two_more_passes, "two more recovery passes", within_s=60)
    again = await System.job(db, job_id)
    assert (again["status"], again["completed_at"], again["attempts"]) == (
        final["status"], final["completed_at"], final["attempts"])

    async def container_gone() -> bool:
        return not await asyncio.to_thread(job_containers, system.settings, job_id)

    await eventually(container_gone, "the job's container to be removed", within_s=60)

    # The next AUTOMATIC slot exists once, whoever inserted it (the dead run or recovery).
    slots = await db.fetch(
        """SELECT scheduled_at, count(*) AS n FROM jobs
            WHERE workflow_id = $1 AND "trigger" = 'AUTOMATIC' GROUP BY scheduled_at""", workflow_id)
    assert len(slots) == 2 and all(r["n"] == 1 for r in slots), [tuple(r) for r in slots]

    # Let the terminal events settle (analytics, log lines), then replay everything.
    async def settled() -> Any:
        analytics = (await api_user.client.get(f"/analytics/{workflow_id}")).json()
        return analytics.get("total_jobs") == 1

    await eventually(settled, "the job's analytics event to be applied")
    await system.quiet(db)  # every log line and event sent so far is stored and applied
    before = await snapshot(system, db, api_user, workflow_id)
    # Lines published before the kill and replayed from the container by recovery are stored once.
    page = await system.logs.page(api_user.user_id, workflow_id, job_id, stream=None, ascending=True)
    # Each attempt keeps its own lines (a recovery that finds the container killed retries it).
    lines = [(entry.attempt, entry.message.strip()) for entry in page.logs]
    assert (1, "started") in lines, lines
    assert len(lines) == len(set(lines)), lines
    assert {attempt for attempt, _ in lines} <= set(range(1, final["attempts"] + 1)), lines
    assert before["logs"][str(job_id)] == len(lines)

    replayed = await system.replay(str(workflow_id))
    # dispatch; lines; workflow created + job finished (+ log count)
    assert replayed["jobs"] >= 1 and replayed["job_logs"] >= 1 and replayed["analytics"] >= 2, replayed
    await system.quiet(db)  # whatever the replay might have sent on is handled too
    assert await snapshot(system, db, api_user, workflow_id) == before
