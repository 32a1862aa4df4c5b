"""The event backbone end to end on a local Ray cluster: the Serve API writes, the outbox relay
publishes, consumer actors feed the actor pools, the workflow worker builds, the scheduler dispatches.

The backbone runs in its own Ray namespace with its own consumer groups and log-store directory, on
the Serve app's database, and is torn down at the end of the module.  The execution pool runs the
``ExecutionStub`` (the real executor is a later issue): dispatched jobs stay QUEUED.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, TypeVar
from uuid import UUID

import pytest
import pytest_asyncio
import ray
from system_support import eventually, names, read_topic, tear_down

from actors.log_store import start_log_store_actor
from actors.pool import PoolStatus
from cluster.backbone import ConsumerStatus, backbone_status, start_backbone
from domain.config import ClickHouseConfig, RayConfig, SchedulingWorkerConfig, Settings
from domain.enums import LogStream
from domain.errors import Invalid
from domain.ids import uuid7
from domain.topology import ClusterSpec
from ingest.consumer import ConsumedRecord
from ingest.consumer_actor import unwrap_remote_error
from store.logstore import LogRow
from store.logstore.remote import log_store_client

NAMESPACE = "backbone-e2e"
T = TypeVar("T")


def backbone_spec(spec: ClusterSpec, suffix: str) -> ClusterSpec:
    """Only the pools this issue owns, one actor each, with consumer groups of our own."""
    pools = {}
    for name in ("scheduler", "outbox-relay", "workflow-worker", "execution-worker"):
        pool = spec.pools[name]
        update: dict[str, Any] = {"min_actors": 1, "consumers": 1}
        if pool.consumer_group:
            update["consumer_group"] = f"{pool.consumer_group}-{suffix}"
        pools[name] = pool.model_copy(update=update)
    return spec.model_copy(update={"pools": pools})


@pytest.fixture(scope="module")
def backbone_settings(serve_api: Any) -> Settings:
    base: Settings = serve_api.settings
    chdb = ClickHouseConfig(backend="chdb", chdb_path=tempfile.mkdtemp(prefix="cv-backbone-chdb-"))
    return base.model_copy(
        update={
            "ray": RayConfig(namespace=NAMESPACE),
            "clickhouse": chdb,
            "scheduler": SchedulingWorkerConfig(redispatch_timeout=timedelta(minutes=10)),
        }
    )


@pytest_asyncio.fixture(scope="module")
async def backbone(serve_api: Any, backbone_settings: Settings) -> AsyncIterator[ClusterSpec]:
    spec = backbone_spec(serve_api.spec, uuid7().hex[:8])
    start_log_store_actor(backbone_settings.clickhouse, NAMESPACE)
    await start_backbone(backbone_settings, spec, execution_stub=True)
    try:
        yield spec
    finally:
        await tear_down(NAMESPACE)


async def snapshot(db: Any, workflow_id: UUID) -> dict[str, Any]:
    wf = await db.fetchrow(
        """SELECT build_status::text, generation, consecutive_job_failures_count, terminated_at
             FROM workflows WHERE id = $1""", workflow_id)
    jobs = await db.fetch(
        "SELECT id, status::text, scheduled_at, dispatch_attempts FROM jobs"
        " WHERE workflow_id = $1 ORDER BY id",
        workflow_id)
    notes = await db.fetch(
        "SELECT idempotency_key FROM notifications WHERE payload->>'action_url' LIKE $1 ORDER BY 1",
        f"/workflows/{workflow_id}%")
    events = await db.fetch(
        "SELECT topic, event_key FROM outbox_events WHERE kafka_key = $1 ORDER BY 1, 2", str(workflow_id))
    return {"workflow": dict(wf) if wf else None, "jobs": [tuple(r) for r in jobs],
            "notifications": [r[0] for r in notes], "events": [tuple(r) for r in events]}


async def records_for(settings: Settings, topic: str, key: str) -> list[ConsumedRecord]:
    """Every record of ``topic`` keyed ``key``, from the beginning (no consumer group)."""
    return await read_topic(settings, topic, lambda r: r.key is not None and r.key.decode() == key)


async def replay(settings: Settings, workflow_id: UUID) -> int:
    """Hand every record of the workflow again to the pools that consumed it."""
    count = 0
    for topic, pool in (("workflows", "workflow-worker-pool"), ("jobs", "execution-worker-pool")):
        handle = ray.get_actor(pool, namespace=NAMESPACE)
        for record in await records_for(settings, topic, str(workflow_id)):
            await handle.handle.remote(record)
            count += 1
    return count


async def scheduler_passes_after_now() -> None:
    """Return once a scheduling pass that began after this call has ended (the barrier for "the
    scheduler did not dispatch it"): the pass running now, if any, ends, and a woken one follows."""
    scheduler = ray.get_actor("scheduler-0", namespace=NAMESPACE)
    start = (await scheduler.stats.remote()).passes
    await scheduler.wake.remote()

    async def later_pass() -> bool:
        passes = (await scheduler.stats.remote()).passes
        if passes == start + 1:
            # That may have been a pass already under way; a second wake-up is harmless otherwise.
            await scheduler.wake.remote()
        return bool(passes >= start + 2)

    await eventually(later_pass, "two scheduling passes", within_s=60)


async def test_heartbeat_workflow_is_built_scheduled_dispatched_terminated_and_deleted(
    backbone: ClusterSpec, backbone_settings: Settings, api: Any, db: Any
) -> None:
    user = await api.register()
    workflow_id = await api.create_workflow(user, api.heartbeat_body(interval=1))

    # BUILD: relay → Kafka → consumer → workflow-worker pool → COMPLETED + first AUTOMATIC job.
    async def built() -> Any:
        return await db.fetchrow(
            """SELECT w.build_status::text AS status, w.updated_at, j.id AS job_id, j.scheduled_at,
                      j.status::text AS job_status, j."trigger"::text AS trigger
                 FROM workflows w JOIN jobs j ON j.workflow_id = w.id
                WHERE w.id = $1 AND w.build_status = 'COMPLETED'""", workflow_id)

    row = await eventually(built, "the HEARTBEAT build")
    assert row["job_status"] == "PENDING" and row["trigger"] == "AUTOMATIC"
    delta = row["scheduled_at"] - row["updated_at"]
    # Build time + the 1-minute interval (the slot is computed a moment after the status update; a
    # loaded machine may stretch that moment, so the upper bound only rules out a longer interval).
    assert timedelta(seconds=50) < delta <= timedelta(minutes=1, seconds=30)
    response = await user.client.get(f"/workflows/{workflow_id}")
    assert response.json()["build_status"] == "COMPLETED"  # the API sees it (cache invalidated)

    # Dispatch: instead of waiting a minute, move the slot 1.5 s ahead; the scheduler is woken by the
    # change (NOTIFY), sleeps until it is due, queues it and the stub receives the dispatch.
    job_id = row["job_id"]
    due = await db.fetchval(
        """UPDATE jobs SET scheduled_at = (now() AT TIME ZONE 'utc') + interval '1.5 seconds'
            WHERE id = $1 RETURNING scheduled_at""", job_id)

    async def queued() -> Any:
        return await db.fetchrow(
            "SELECT queued_at, dispatch_attempts FROM jobs WHERE id = $1 AND status = 'QUEUED'", job_id)

    dispatched = await eventually(queued, "the dispatch", within_s=60)
    # Not before it is due (how soon after is the machine's business: speed is not asserted).
    assert dispatched["queued_at"] >= due and dispatched["dispatch_attempts"] == 1

    async def delivered() -> Any:
        stats = await ray.get_actor("execution-worker-pool", namespace=NAMESPACE).stats.remote()
        return stats.handled >= 1

    await eventually(delivered, "the dispatch record to reach the execution pool", within_s=60)

    # A manual run while the automatic job is QUEUED stays PENDING (one active job per workflow).
    response = await user.client.post(f"/workflows/{workflow_id}/jobs/schedule", headers=user.keyed())
    assert response.status_code == 201, response.text
    manual_id = UUID(response.json()["id"])
    await scheduler_passes_after_now()
    assert await db.fetchval("SELECT status::text FROM jobs WHERE id = $1", manual_id) == "PENDING"

    # Terminate: the worker cancels the QUEUED and PENDING jobs and tells the user.
    response = await user.client.patch(f"/workflows/{workflow_id}", headers=user.mutating())
    assert response.status_code == 204, response.text

    async def canceled() -> Any:
        statuses = await db.fetch("SELECT status::text FROM jobs WHERE workflow_id = $1", workflow_id)
        return statuses and all(r[0] == "CANCELED" for r in statuses)

    await eventually(canceled, "termination to cancel every job")

    async def terminated_note() -> Any:
        return await db.fetchval(
            """SELECT count(*) FROM notifications
                WHERE payload->>'entity_id' = $1 AND payload->>'title' = 'Workflow Terminated'""",
            str(workflow_id))

    await eventually(terminated_note, "the 'Workflow Terminated' notification")

    # Replaying every Kafka record of the workflow changes nothing.
    before = await snapshot(db, workflow_id)
    replayed = await replay(backbone_settings, workflow_id)
    assert replayed >= 3  # BUILD, dispatch, TERMINATE at least
    assert await snapshot(db, workflow_id) == before

    # Delete after terminate: the row goes, and the worker deletes the workflow's logs.
    logs = log_store_client(backbone_settings.clickhouse, NAMESPACE)
    await logs.insert([
        LogRow(event_id=f"log:{job_id}:stdout:{i}", user_id=user.user_id, workflow_id=workflow_id,
               job_id=job_id, timestamp=dispatched["queued_at"], message=f"line {i}", sequence_num=i,
               stream=LogStream.STDOUT)
        for i in range(3)
    ])
    assert await logs.count(user.user_id, workflow_id, job_id) == 3
    response = await user.client.delete(f"/workflows/{workflow_id}", headers=user.mutating())
    assert response.status_code == 204, response.text

    async def logs_gone() -> Any:
        return await logs.count(user.user_id, workflow_id, job_id) == 0

    await eventually(logs_gone, "the DELETE event to remove the logs")
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE workflow_id = $1", workflow_id) == 0
    await replay(backbone_settings, workflow_id)
    assert await db.fetchval("SELECT count(*) FROM workflows WHERE id = $1", workflow_id) == 0


async def test_status_lists_pools_and_consumer_groups(backbone: ClusterSpec) -> None:
    status = await asyncio.to_thread(backbone_status, NAMESPACE)

    pools = {s.pool: s for s in status if isinstance(s, PoolStatus)}
    consumers = {s.name: s for s in status if isinstance(s, ConsumerStatus)}
    assert set(pools) >= {"scheduler", "outbox-relay", "workflow-worker", "execution-worker"}
    assert pools["workflow-worker"].size == 1
    assert pools["workflow-worker"].worker_class.endswith("WorkflowWorker")
    assert pools["execution-worker"].worker_class.endswith("ExecutionStub")
    assert set(consumers) == {"consumer-workflows-0", "consumer-jobs-0"}
    workflows_consumer = consumers["consumer-workflows-0"]
    assert workflows_consumer.group == backbone.pools["workflow-worker"].consumer_group
    assert workflows_consumer.running and workflows_consumer.partitions
    assert all(lag >= 0 for lag in workflows_consumer.lag.values())


async def test_starting_the_backbone_again_creates_nothing_new(
    backbone: ClusterSpec, backbone_settings: Settings
) -> None:
    before = names(NAMESPACE)
    await start_backbone(backbone_settings, backbone, execution_stub=True)
    assert names(NAMESPACE) == before
    assert {"workflow-worker-0", "execution-worker-0", "scheduler-0", "outbox-relay-0"} <= set(before)


async def test_pool_errors_keep_their_domain_type_across_actors(backbone: ClusterSpec) -> None:
    pool = ray.get_actor("execution-worker-pool", namespace=NAMESPACE)
    garbage = ConsumedRecord(topic="jobs", partition=0, offset=0, key="k", value=b"not json")

    with pytest.raises(Exception) as caught:
        await pool.handle.remote(garbage)

    cause = unwrap_remote_error(caught.value)
    assert isinstance(cause, Invalid) and not cause.retryable  # the consumer commits and skips it


async def test_a_pool_grows_and_shrinks_at_run_time(backbone: ClusterSpec) -> None:
    pool = ray.get_actor("execution-worker-pool", namespace=NAMESPACE)

    assert await pool.resize.remote(2) == 2

    async def grown() -> Any:
        status = await pool.stats.remote()
        return status.size == 2

    await eventually(grown, "a second execution worker", within_s=60)
    assert "execution-worker-1" in names(NAMESPACE)

    assert await pool.resize.remote(1) == 1

    async def shrunk() -> Any:
        status = await pool.stats.remote()
        return status.size == 1 and status.draining == 0 and "execution-worker-1" not in names(NAMESPACE)

    await eventually(shrunk, "the second worker to drain and stop", within_s=60)
    assert "execution-worker-0" in names(NAMESPACE)
