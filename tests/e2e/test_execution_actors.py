"""The pool worker shells on a real local Ray: ``ExecutionWorkerActor`` runs a dispatched HEARTBEAT
job to COMPLETED, ``JoblogsProcessorActor`` stores a log batch through the ``log-store`` actor and
``AnalyticsProcessorActor`` applies an analytics event — each built only from ``Settings``, as
:class:`actors.pool.PoolManager` creates them."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
import pytest
import ray
from aiohttp import web
from system_support import eventually

from actors.analytics_processor import AnalyticsProcessorActor
from actors.execution_worker import ExecutionWorkerActor
from actors.joblogs_processor import JoblogsProcessorActor
from actors.log_store import start_log_store_actor
from domain.config import ClickHouseConfig, Settings
from domain.enums import LogStream
from domain.event_keys import dispatch_event_key, log_event_key
from domain.ids import uuid7
from ingest.consumer import ConsumedRecord
from ingest.events import AnalyticEvent, JobLogEvent, ScheduledJobEntry
from store.logstore.remote import log_store_client
from store.postgres import create_pool


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def settings(stack: Any, ray_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    namespace = ray.get_runtime_context().namespace
    clickhouse = ClickHouseConfig(backend="chdb", chdb_path=str(tmp_path_factory.mktemp("chdb-exec")))
    handle = start_log_store_actor(clickhouse, namespace, detached=False, num_cpus=0.1)
    yield stack.settings.model_copy(
        update={
            "clickhouse": clickhouse,
            "ray": stack.settings.ray.model_copy(update={"namespace": namespace}),
        }
    )
    ray.kill(handle, no_restart=True)


@pytest.fixture(scope="module")
async def db(stack: Any) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(stack.settings.postgres, min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture(scope="module")
async def target() -> AsyncIterator[str]:
    async def ok(_: web.Request) -> web.Response:
        return web.Response(status=200)

    app = web.Application()
    app.router.add_get("/", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/"
    await runner.cleanup()


async def make_workflow(db: asyncpg.Pool, kind: str, payload: str) -> tuple[UUID, UUID]:
    user_id, workflow_id = uuid7(), uuid7()
    await db.execute(
        "INSERT INTO users (id, email, password) VALUES ($1, $2, 'x')", user_id, f"{user_id}@example.com"
    )
    await db.execute(
        """INSERT INTO workflows (id, user_id, name, payload, kind, build_status, "interval")
           VALUES ($1, $2, 'wf', $3::text::jsonb, $4, 'COMPLETED', 5)""",
        workflow_id,
        user_id,
        payload,
        kind,
    )
    return user_id, workflow_id


def record(topic: str, key: str, value: bytes) -> ConsumedRecord:
    return ConsumedRecord(topic=topic, partition=0, offset=0, key=key, value=value)


async def test_execution_worker_actor_runs_a_dispatched_job(
    settings: Settings, db: asyncpg.Pool, target: str
) -> None:
    user_id, workflow_id = await make_workflow(db, "HEARTBEAT", f'{{"endpoint": "{target}"}}')
    job_id = uuid7()
    await db.execute(
        """INSERT INTO jobs (id, workflow_id, user_id, status, scheduled_at, dispatch_attempts, "trigger")
           VALUES ($1, $2, $3, 'QUEUED', now() AT TIME ZONE 'utc', 1, 'MANUAL')""",
        job_id,
        workflow_id,
        user_id,
    )
    entry = ScheduledJobEntry(
        event_key=dispatch_event_key(job_id, 1),
        job_id=str(job_id),
        workflow_id=str(workflow_id),
        scheduled_at=datetime.now(UTC),
        dispatch_attempt=1,
    )
    actor = (
        ray.remote(ExecutionWorkerActor)
        .options(num_cpus=0.1)
        .remote(settings=settings, name="execution-worker-e2e")
    )
    try:
        assert await actor.ready.remote()
        assert await actor.handle.remote(record("jobs", str(workflow_id), entry.to_bytes())) == ["claimed"]
        async def completed() -> bool:
            return await db.fetchval("SELECT status::text FROM jobs WHERE id = $1", job_id) == "COMPLETED"

        await eventually(completed, "the dispatched job to complete", within_s=60)
        stats = await actor.stats.remote()
        assert stats.claimed == 1 and stats.completed == 1 and stats.worker_id == "execution-worker-e2e"
        await actor.shutdown.remote()
    finally:
        ray.kill(actor)


async def test_joblogs_processor_actor_stores_a_batch_through_the_log_store_actor(
    settings: Settings, db: asyncpg.Pool
) -> None:
    user_id, workflow_id = await make_workflow(db, "CONTAINER", '{"image": "x"}')
    job_id = uuid7()
    batch = [
        record(
            "job_logs",
            str(job_id),
            JobLogEvent(
                event_key=log_event_key(job_id, 1, LogStream.STDOUT, seq),
                job_id=str(job_id),
                workflow_id=str(workflow_id),
                user_id=str(user_id),
                message=f"line {seq}",
                timestamp=datetime.now(UTC),
                sequence_num=seq,
                stream=LogStream.STDOUT,
                retention=True,
                live_published=True,
            ).to_bytes(),
        )
        for seq in range(3)
    ]
    actor = (
        ray.remote(JoblogsProcessorActor)
        .options(num_cpus=0.1)
        .remote(settings=settings, name="joblogs-processor-e2e")
    )
    try:
        assert await actor.ready.remote()
        result = await actor.handle.remote(batch)
        assert (result.stored, result.counted) == (3, 3)
        replay = await actor.handle.remote(batch)
        assert (replay.stored, replay.counted) == (0, 0)
        store = log_store_client(settings.clickhouse, settings.ray.namespace)
        assert await store.count(user_id, workflow_id, job_id) == 3
        await actor.shutdown.remote()
    finally:
        ray.kill(actor)


async def test_analytics_processor_actor_applies_an_event_once(settings: Settings, db: asyncpg.Pool) -> None:
    user_id, workflow_id = await make_workflow(db, "HEARTBEAT", '{"endpoint": "http://x"}')
    event = AnalyticEvent.workflow_built(user_id=str(user_id), workflow_id=str(workflow_id), kind="HEARTBEAT")
    actor = (
        ray.remote(AnalyticsProcessorActor)
        .options(num_cpus=0.1)
        .remote(settings=settings, name="analytics-processor-e2e")
    )
    try:
        assert await actor.ready.remote()
        assert await actor.handle.remote(record("analytics", str(workflow_id), event.to_bytes())) == [True]
        assert await actor.handle.remote(record("analytics", str(workflow_id), event.to_bytes())) == [False]
        kind = await db.fetchval("SELECT kind FROM analytics WHERE workflow_id = $1", workflow_id)
        assert kind == "HEARTBEAT"
        await actor.shutdown.remote()
    finally:
        ray.kill(actor)
