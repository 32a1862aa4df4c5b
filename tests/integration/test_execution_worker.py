"""ExecutionWorker without Ray, against real PostgreSQL, Kafka, Redis, a local HTTP target and (when
available) Docker: claim → run → settle, system-retry backoff, lease loss, drain, and recovery of a
worker that died (reference §5.3, §6.3; checklist items 21-28)."""

from __future__ import annotations

import asyncio
import base64
import os
import pickle
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from aiohttp import web

from actors.execution_worker import ExecutionWorker
from actors.log_publisher import LogPublisher
from actors.runners.container import ContainerRunner
from actors.runners.heartbeat import HeartbeatRunner
from domain.config import ExecutionWorkerConfig, Settings
from domain.event_keys import dispatch_event_key
from domain.ids import uuid7
from ingest.events import ScheduledJobEntry
from ingest.producer import EventProducer
from store.job_leases import JobLeases
from store.postgres import create_pool
from store.redis import create_redis

IMAGE = "local/busybox:1"
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Target:
    """A local HTTP target that records slow requests that were abandoned by the client."""

    def __init__(self) -> None:
        self.url = ""
        self.abandoned = 0
        self.slow_started = asyncio.Event()


@pytest.fixture(scope="module")
async def target() -> AsyncIterator[Target]:
    state = Target()

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]))

    async def slow(_: web.Request) -> web.Response:
        state.slow_started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            state.abandoned += 1
            raise
        return web.Response(status=200)

    app = web.Application(handler_args={"handler_cancellation": True})
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    state.url = f"http://127.0.0.1:{port}"
    yield state
    await runner.cleanup()


@pytest.fixture(scope="module")
async def db(stack: Any) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(stack.settings.postgres, min_size=1, max_size=10)
    yield pool
    await pool.close()


@pytest.fixture(scope="module")
async def producer(stack: Any) -> AsyncIterator[EventProducer]:
    producer = EventProducer(stack.settings.kafka, client_id="test-execution-worker")
    await producer.start()
    yield producer
    await producer.stop()


@pytest.fixture(scope="module")
async def redis(stack: Any) -> AsyncIterator[Any]:
    client = create_redis(stack.settings.redis)
    yield client
    await client.aclose()


WorkerFactory = Callable[..., Awaitable[ExecutionWorker]]


@pytest.fixture
async def make_worker(
    stack: Any, db: asyncpg.Pool, producer: EventProducer, redis: Any
) -> AsyncIterator[WorkerFactory]:
    made: list[tuple[ExecutionWorker, HeartbeatRunner, ContainerRunner | None]] = []

    async def make(worker_id: str = "worker-a", **overrides: Any) -> ExecutionWorker:
        cfg = ExecutionWorkerConfig(
            **{
                "concurrency": 4,
                "lease_duration": timedelta(seconds=30),
                "lease_renew_interval": timedelta(seconds=10),
                **overrides,
            }
        )
        heartbeat = HeartbeatRunner()
        containers = ContainerRunner(stack.settings.docker, cfg) if stack.docker_available else None
        worker = ExecutionWorker(
            cfg=cfg,
            worker_id=worker_id,
            db=db,
            logs=LogPublisher(producer, redis, cfg),
            heartbeat=heartbeat,
            containers=containers,
        )
        worker.start(recovery=False)
        made.append((worker, heartbeat, containers))
        return worker

    yield make
    for worker, heartbeat, containers in made:
        await worker.close()
        await heartbeat.aclose()
        if containers is not None:
            containers.close()


@pytest.fixture
def docker_settings(stack: Any) -> Any:
    stack.busybox_image()  # skips, with the reason, when no Docker engine answers
    return stack.settings.docker


# ------------------------------------------------------------------------------------------- rows


async def make_workflow(
    db: asyncpg.Pool, kind: str, payload: str, *, interval: int = 5, terminated: bool = False
) -> tuple[UUID, UUID]:
    user_id, workflow_id = uuid7(), uuid7()
    await db.execute(
        "INSERT INTO users (id, email, password) VALUES ($1, $2, 'x')", user_id, f"{user_id}@example.com"
    )
    await db.execute(
        """INSERT INTO workflows (id, user_id, name, payload, kind, build_status, "interval", log_retention,
                                  terminated_at)
           VALUES ($1, $2, 'wf', $3::text::jsonb, $4, 'COMPLETED', $5, $6,
                   CASE WHEN $7 THEN now() AT TIME ZONE 'utc' END)""",
        workflow_id,
        user_id,
        payload,
        kind,
        interval,
        kind == "CONTAINER",
        terminated,
    )
    return user_id, workflow_id


async def queue_job(
    db: asyncpg.Pool,
    workflow_id: UUID,
    user_id: UUID,
    *,
    trigger: str = "MANUAL",
    scheduled_at: datetime | None = None,
) -> ScheduledJobEntry:
    """Insert a QUEUED job as the scheduler would, and return its dispatch."""
    job_id = uuid7()
    slot = scheduled_at or await db.fetchval("SELECT date_trunc('second', now() AT TIME ZONE 'utc')")
    await db.execute(
        """INSERT INTO jobs (id, workflow_id, user_id, status, scheduled_at, dispatch_attempts, "trigger",
                             queued_at)
           VALUES ($1, $2, $3, 'QUEUED', $4, 1, $5::job_trigger, now() AT TIME ZONE 'utc')""",
        job_id,
        workflow_id,
        user_id,
        slot,
        trigger,
    )
    return ScheduledJobEntry(
        event_key=dispatch_event_key(job_id, 1),
        job_id=str(job_id),
        workflow_id=str(workflow_id),
        scheduled_at=slot,
        dispatch_attempt=1,
        workflow_generation=1,
    )


async def redispatch(db: asyncpg.Pool, entry: ScheduledJobEntry) -> ScheduledJobEntry:
    """PENDING → QUEUED with the next dispatch attempt, as the scheduler does once it is due."""
    attempt = await db.fetchval(
        "UPDATE jobs SET status = 'QUEUED', dispatch_attempts = dispatch_attempts + 1 "
        "WHERE id = $1 AND status = 'PENDING' RETURNING dispatch_attempts",
        UUID(entry.job_id),
    )
    assert attempt is not None
    return entry.model_copy(
        update={"dispatch_attempt": attempt, "event_key": dispatch_event_key(entry.job_id, attempt)}
    )


async def job(db: asyncpg.Pool, job_id: str | UUID) -> asyncpg.Record:
    row = await db.fetchrow("SELECT *, status::text AS state FROM jobs WHERE id = $1", UUID(str(job_id)))
    assert row is not None
    return row


async def terminal_events(db: asyncpg.Pool, job_id: str | UUID) -> list[str]:
    rows = await db.fetch(
        "SELECT event_key FROM outbox_events WHERE event_key LIKE $1 ORDER BY event_key",
        f"workflow:job:{job_id}:%",
    )
    return [r["event_key"] for r in rows]


async def eventually(probe: Callable[[], Awaitable[Any]], what: str, within_s: float = 60.0) -> Any:
    """Poll ``probe`` until it returns something truthy (generous: the machine may be loaded)."""
    deadline = asyncio.get_running_loop().time() + within_s
    while not (value := await probe()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {within_s:.0f}s waiting for {what}")
        await asyncio.sleep(0.1)
    return value


def heartbeat_payload(url: str, *, timeout: str = "10s", expected: int = 200) -> str:
    return f'{{"endpoint": "{url}", "timeout": "{timeout}", "expected_status_code": {expected}}}'


# ------------------------------------------------------------------------------------------- tests


async def test_heartbeat_job_completes_and_schedules_the_next_automatic_slot(
    db: asyncpg.Pool, target: Target, make_worker: WorkerFactory
) -> None:
    worker = await make_worker()
    user_id, workflow_id = await make_workflow(db, "HEARTBEAT", heartbeat_payload(f"{target.url}/status/200"))
    entry = await queue_job(db, workflow_id, user_id, trigger="AUTOMATIC")
    assert await worker.dispatch(entry) == "claimed"
    await worker.wait_idle()
    row = await job(db, entry.job_id)
    assert row["state"] == "COMPLETED" and row["attempts"] == 1
    assert await terminal_events(db, entry.job_id) == [f"workflow:job:{entry.job_id}:JOB_COMPLETED"]
    slots = await db.fetch(
        "SELECT scheduled_at FROM jobs WHERE workflow_id = $1 AND id <> $2", workflow_id, UUID(entry.job_id)
    )
    assert [r["scheduled_at"] for r in slots] == [row["scheduled_at"] + timedelta(minutes=5)]


async def test_replayed_dispatch_is_acknowledged_without_running_again(
    db: asyncpg.Pool, target: Target, make_worker: WorkerFactory
) -> None:
    worker = await make_worker()
    user_id, workflow_id = await make_workflow(db, "HEARTBEAT", heartbeat_payload(f"{target.url}/status/200"))
    entry = await queue_job(db, workflow_id, user_id, trigger="AUTOMATIC")
    assert await worker.dispatch(entry) == "claimed"
    await worker.wait_idle()
    assert await worker.dispatch(entry) != "claimed"
    await worker.wait_idle()
    assert (await job(db, entry.job_id))["attempts"] == 1
    count = await db.fetchval("SELECT count(*) FROM jobs WHERE workflow_id = $1", workflow_id)
    assert count == 2  # the job and exactly one next slot


async def test_wrong_status_fails_as_user_without_retry(
    db: asyncpg.Pool, target: Target, make_worker: WorkerFactory
) -> None:
    worker = await make_worker()
    user_id, workflow_id = await make_workflow(db, "HEARTBEAT", heartbeat_payload(f"{target.url}/status/500"))
    entry = await queue_job(db, workflow_id, user_id)
    await worker.dispatch(entry)
    await worker.wait_idle()
    row = await job(db, entry.job_id)
    assert row["state"] == "FAILED" and row["failure_kind"] == "USER"
    assert row["last_error_code"] == "unexpected_status"
    assert await terminal_events(db, entry.job_id) == [f"workflow:job:{entry.job_id}:JOB_FAILED"]


async def test_system_failure_backs_off_then_fails_as_system_at_the_limit(
    db: asyncpg.Pool, make_worker: WorkerFactory
) -> None:
    worker = await make_worker(system_retry_backoff=timedelta(seconds=100))
    refused = f"http://127.0.0.1:{free_port()}/"
    user_id, workflow_id = await make_workflow(db, "HEARTBEAT", heartbeat_payload(refused))
    entry = await queue_job(db, workflow_id, user_id)
    delays = []
    for _ in range(2):
        await worker.dispatch(entry)
        await worker.wait_idle()
        row = await job(db, entry.job_id)
        assert row["state"] == "PENDING" and row["failure_kind"] == "SYSTEM"
        assert row["last_error_code"] == "endpoint_unreachable"
        # The release set both in one statement: their difference is exactly the backoff.
        delays.append((row["next_attempt_at"] - row["updated_at"]).total_seconds())
        entry = await redispatch(db, entry)
    assert delays == [100, 200]
    await worker.dispatch(entry)
    await worker.wait_idle()
    row = await job(db, entry.job_id)
    assert row["state"] == "FAILED" and row["failure_kind"] == "SYSTEM" and row["attempts"] == 3
    assert await terminal_events(db, entry.job_id) == [f"workflow:job:{entry.job_id}:JOB_FAILED"]


async def test_job_of_a_terminated_workflow_is_canceled_at_claim(
    db: asyncpg.Pool, target: Target, make_worker: WorkerFactory
) -> None:
    worker = await make_worker()
    user_id, workflow_id = await make_workflow(
        db, "HEARTBEAT", heartbeat_payload(f"{target.url}/status/200"), terminated=True
    )
    entry = await queue_job(db, workflow_id, user_id)
    await worker.dispatch(entry)
    await worker.wait_idle()
    assert (await job(db, entry.job_id))["state"] == "CANCELED"
    assert await terminal_events(db, entry.job_id) == []


async def test_losing_the_lease_aborts_the_run(
    db: asyncpg.Pool, target: Target, make_worker: WorkerFactory
) -> None:
    worker = await make_worker(
        lease_duration=timedelta(seconds=3), lease_renew_interval=timedelta(milliseconds=200)
    )
    user_id, workflow_id = await make_workflow(
        db, "HEARTBEAT", heartbeat_payload(f"{target.url}/slow", timeout="60s")
    )
    entry = await queue_job(db, workflow_id, user_id)
    abandoned = target.abandoned
    target.slow_started.clear()
    await worker.dispatch(entry)
    await asyncio.wait_for(target.slow_started.wait(), 60)
    # What a terminate does (reference §5.4): cancel the RUNNING job and clear its lease.
    await db.execute(
        "UPDATE jobs SET status = 'CANCELED', lease_token = NULL WHERE id = $1", UUID(entry.job_id)
    )
    # Well before the probe's own 60 s timeout: the renewal (every 200 ms) finds the lease gone.
    await asyncio.wait_for(worker.wait_idle(), 30)

    async def cut_off() -> bool:
        return target.abandoned > abandoned

    await eventually(cut_off, "the target to see the probe abandoned", within_s=20)
    assert target.abandoned == abandoned + 1  # the probe was cut off, not waited for
    assert worker.counters.lease_lost == 1
    assert (await job(db, entry.job_id))["state"] == "CANCELED"
    assert await terminal_events(db, entry.job_id) == []


async def test_drain_hands_running_jobs_back_for_immediate_retry(
    db: asyncpg.Pool, target: Target, make_worker: WorkerFactory
) -> None:
    worker = await make_worker()
    user_id, workflow_id = await make_workflow(
        db, "HEARTBEAT", heartbeat_payload(f"{target.url}/slow", timeout="60s")
    )
    entry = await queue_job(db, workflow_id, user_id)
    target.slow_started.clear()
    await worker.dispatch(entry)
    await asyncio.wait_for(target.slow_started.wait(), 60)
    assert await worker.drain(0.1) == 1
    row = await job(db, entry.job_id)
    assert row["state"] == "PENDING" and row["lease_token"] is None
    assert row["next_attempt_at"] <= await db.fetchval("SELECT now() AT TIME ZONE 'utc'")
    other = await queue_job(db, *(await make_workflow(db, "HEARTBEAT", heartbeat_payload(target.url)))[::-1])
    with pytest.raises(Exception, match="draining"):
        await worker.dispatch(other)


async def expire_lease(db: asyncpg.Pool, job_id: str | UUID) -> None:
    await db.execute(
        "UPDATE jobs SET lease_expires_at = (now() AT TIME ZONE 'utc') - interval '1 minute' WHERE id = $1",
        UUID(str(job_id)),
    )


async def test_recovery_releases_an_expired_heartbeat_job_without_incrementing_attempts(
    db: asyncpg.Pool, target: Target, make_worker: WorkerFactory
) -> None:
    user_id, workflow_id = await make_workflow(db, "HEARTBEAT", heartbeat_payload(f"{target.url}/status/200"))
    entry = await queue_job(db, workflow_id, user_id)
    leases = JobLeases(db)
    claim = await leases.claim(
        job_id=UUID(entry.job_id),
        dispatch_attempt=1,
        worker_id="dead-worker",
        lease_duration=timedelta(seconds=30),
    )
    assert claim.claimed
    await expire_lease(db, entry.job_id)
    rescuer = await make_worker("rescuer")
    assert await rescuer.recover_once() >= 1
    row = await job(db, entry.job_id)
    assert row["state"] == "PENDING" and row["attempts"] == 1
    assert row["last_error_code"] == "lease_expired"


async def test_recovery_finishes_a_job_from_its_exited_container(
    db: asyncpg.Pool, docker_settings: Any, make_worker: WorkerFactory
) -> None:
    rescuer = await make_worker("rescuer")
    assert rescuer.runners.containers is not None
    outcomes = {}
    for exit_code in (0, 4):
        user_id, workflow_id = await make_workflow(
            db, "CONTAINER", f'{{"image": "{IMAGE}", "cmd": ["sh", "-c", "echo hi; exit {exit_code}"]}}'
        )
        entry = await queue_job(db, workflow_id, user_id)
        leases = JobLeases(db)
        claim = await leases.claim(
            job_id=UUID(entry.job_id),
            dispatch_attempt=1,
            worker_id="dead-worker",
            lease_duration=timedelta(seconds=30),
        )
        assert claim.job is not None
        client = rescuer.runners.containers._docker()
        container = client.containers.run(
            IMAGE,
            ["sh", "-c", f"echo hi; exit {exit_code}"],
            detach=True,
            network_mode="none",
            labels=ContainerRunner.labels(UUID(entry.job_id), workflow_id, 1),
        )
        await leases.attach_container(UUID(entry.job_id), claim.job.lease_token, container.id)
        await asyncio.to_thread(container.wait)
        await expire_lease(db, entry.job_id)
        published = rescuer.logs.stats.published
        await rescuer.recover_once()
        row = await job(db, entry.job_id)
        outcomes[exit_code] = (row["state"], row["failure_kind"], row["attempts"])
        assert rescuer.logs.stats.published > published  # the container's line was replayed
        assert client.containers.list(all=True, filters={"id": container.id}) == []
    assert outcomes == {0: ("COMPLETED", None, 1), 4: ("FAILED", "USER", 1)}


_CHILD = """
import asyncio, base64, pickle, sys
from actors.execution_worker import ExecutionWorker
from actors.log_publisher import LogPublisher
from actors.runners.container import ContainerRunner
from actors.runners.heartbeat import HeartbeatRunner
from ingest.producer import EventProducer
from store.postgres import create_pool
from store.redis import create_redis

async def main():
    settings, entry, docker = pickle.loads(base64.b64decode(sys.argv[1]))
    cfg = settings.execution
    db = await create_pool(settings.postgres, min_size=1, max_size=4)
    producer = EventProducer(settings.kafka)
    await producer.start()
    worker = ExecutionWorker(cfg=cfg, worker_id="doomed", db=db,
                             logs=LogPublisher(producer, create_redis(settings.redis), cfg),
                             heartbeat=HeartbeatRunner(),
                             containers=ContainerRunner(settings.docker, cfg) if docker else None)
    worker.start(recovery=False)
    print(await worker.dispatch(entry), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def run_doomed_worker(
    stack: Any, entry: ScheduledJobEntry, tmp_path: Path, settings: Settings
) -> subprocess.Popen[str]:
    script = tmp_path / "doomed_worker.py"
    script.write_text(_CHILD)
    arg = base64.b64encode(pickle.dumps((settings, entry, stack.docker_available))).decode()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(  # noqa: ASYNC220 - spawning is instant; reading is off the loop below
        [sys.executable, str(script), arg], stdout=subprocess.PIPE, text=True, env=env, cwd=str(REPO)
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
    assert line.strip() == "claimed"
    return proc


async def test_a_killed_workers_job_ends_in_exactly_one_terminal_state(
    stack: Any, db: asyncpg.Pool, target: Target, make_worker: WorkerFactory, tmp_path: Path
) -> None:
    lease = timedelta(seconds=2)
    settings = stack.settings.model_copy(
        update={
            "execution": ExecutionWorkerConfig(
                lease_duration=lease, lease_renew_interval=timedelta(milliseconds=500)
            )
        }
    )
    if stack.docker_available:
        stack.busybox_image()
        payload = f'{{"image": "{IMAGE}", "cmd": ["sh", "-c", "echo working; sleep 2; echo done"]}}'
        user_id, workflow_id = await make_workflow(db, "CONTAINER", payload)
    else:
        user_id, workflow_id = await make_workflow(
            db, "HEARTBEAT", heartbeat_payload(f"{target.url}/slow", timeout="60s")
        )
    entry = await queue_job(db, workflow_id, user_id, trigger="AUTOMATIC")
    proc = await run_doomed_worker(stack, entry, tmp_path, settings)
    try:
        if stack.docker_available:
            async def under_way() -> Any:  # the run's container exists (it may not have started yet)
                return (await job(db, entry.job_id))["container_id"]

            await eventually(under_way, "the doomed worker's container")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    rescuer = await make_worker("rescuer")
    row = await job(db, entry.job_id)
    if row["container_id"]:
        # Recovery of a still running container stops it (a different outcome): let it end first.
        # A container created but never started counts as ended (Docker's "not-running").
        containers = rescuer.runners.containers
        assert containers is not None
        await asyncio.to_thread(containers._docker().containers.get(row["container_id"]).wait, timeout=120)

    async def lease_expired() -> bool:  # by the database's clock, which recovery uses
        return bool(await db.fetchval(
            "SELECT lease_expires_at < now() AT TIME ZONE 'utc' FROM jobs WHERE id = $1", UUID(entry.job_id)
        ))

    await eventually(lease_expired, "the dead worker's lease to run out")
    assert await rescuer.recover_once() >= 1
    row = await job(db, entry.job_id)
    recovered_directly = row["state"] != "PENDING"
    if not recovered_directly:  # released for retry: nothing to finish from, so it runs again
        entry = await redispatch(db, entry)
        if not stack.docker_available:
            await db.execute(
                "UPDATE workflows SET payload = $2::text::jsonb WHERE id = $1",
                workflow_id,
                heartbeat_payload(f"{target.url}/status/200"),
            )
        assert await rescuer.dispatch(entry) == "claimed"
        await rescuer.wait_idle()
        row = await job(db, entry.job_id)
    assert row["state"] == "COMPLETED"
    assert await terminal_events(db, entry.job_id) == [f"workflow:job:{entry.job_id}:JOB_COMPLETED"]
    next_slots = await db.fetchval(
        "SELECT count(*) FROM jobs WHERE workflow_id = $1 AND id <> $2", workflow_id, UUID(entry.job_id)
    )
    assert next_slots == 1
    # Finished from the exited container's state, recovery did not count an attempt.
    assert row["attempts"] == (1 if recovered_directly else 2)
    if stack.docker_available:
        containers = rescuer.runners.containers
        assert containers is not None
        label = f"chronoverse.job_id={entry.job_id}"
        assert containers._docker().containers.list(all=True, filters={"label": label}) == []
