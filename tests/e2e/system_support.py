"""Shared pieces of the whole-system e2e tests (``test_system_execution``, ``test_system_faults``).

:func:`running_system` starts the complete backbone — outbox relay, scheduler, every topic-fed pool
with the **real** execution worker, the joblogs and analytics processors — plus the ``log-store``
actor, in a Ray namespace of its own, with consumer groups and a chdb directory of its own, on the
Serve app's database, and tears all of it down afterwards (the approach of ``test_backbone.py``).
Settings are shrunk (lease 6 s, renew 1 s, recovery 1 s, system retry backoff 2 s, container
memory 16 MiB) so a test never waits a full production interval; the lease still outlasts a few
missed renewals of a worker starved on a loaded machine.

:class:`System` drives it: schedule a MANUAL run over HTTP, wait for a job's terminal state, read a
job's logs through the log store client, replay topic records into the pools.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar
from uuid import UUID

import docker
import ray
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from listen_ports import listen_port

from actors.log_store import start_log_store_actor
from cluster.backbone import start_backbone
from cluster.localstack import free_port
from domain.config import ClickHouseConfig, Settings
from domain.ids import uuid7
from domain.topology import ClusterSpec
from ingest.consumer import ConsumedRecord
from ingest.consumer_actor import consumer_actor_name
from store.logstore.remote import log_store_client

T = TypeVar("T")

#: Pools fed by each replayed topic (their managers are named ``<pool>-pool``).
REPLAY_POOLS = {
    "jobs": "execution-worker-pool",
    "job_logs": "joblogs-processor-pool",
    "analytics": "analytics-processor-pool",
}
TERMINAL = ("COMPLETED", "FAILED", "CANCELED")
#: Label the container runner puts on every job container.
JOB_LABEL = "chronoverse.job_id"


def system_settings(base: Settings, namespace: str) -> Settings:
    """``base`` (the Serve app's settings) with a namespace, a chdb directory and short intervals."""
    chdb = ClickHouseConfig(backend="chdb", chdb_path=tempfile.mkdtemp(prefix="cv-system-chdb-"))
    execution = base.execution.model_copy(
        update={
            "lease_duration": timedelta(seconds=6),
            "lease_renew_interval": timedelta(seconds=1),
            "recovery_interval": timedelta(seconds=1),
            # Wide enough that a probe polling every 0.2 s on a loaded machine sees the job wait
            # PENDING between attempts (2 s, then 4 s).
            "system_retry_backoff": timedelta(seconds=2),
            "system_retry_limit": 3,
            "container_memory": "16m",
            "container_cpus": 0.5,
        }
    )
    joblogs = base.joblogs.model_copy(update={"batch_job_logs_time_interval": timedelta(milliseconds=300)})
    return base.model_copy(
        update={
            "ray": base.ray.model_copy(update={"namespace": namespace}),
            "clickhouse": chdb,
            "execution": execution,
            "joblogs": joblogs,
        }
    )


def system_spec(spec: ClusterSpec, suffix: str) -> ClusterSpec:
    """Every pool, one actor and one consumer each, with consumer groups of our own."""
    pools = {}
    for name, pool in spec.pools.items():
        update: dict[str, Any] = {"min_actors": 1, "consumers": 1}
        if pool.consumer_group:
            update["consumer_group"] = f"{pool.consumer_group}-{suffix}"
        pools[name] = pool.model_copy(update=update)
    return spec.model_copy(update={"pools": pools})


def names(namespace: str) -> list[str]:
    """The named actors of ``namespace``, sorted."""
    entries = ray.util.list_named_actors(all_namespaces=True)
    return sorted(a["name"] for a in entries if a["namespace"] == namespace)


async def tear_down(namespace: str) -> None:
    """Stop consumers (they leave their groups), then pools (they drain), then kill everything."""
    actors = names(namespace)
    for prefix, method in (("consumer-", "stop"), ("", "stop"), ("", "shutdown")):
        for name in actors:
            if not name.startswith(prefix):
                continue
            with contextlib.suppress(Exception):
                handle = ray.get_actor(name, namespace=namespace)
                if hasattr(handle, method):
                    await asyncio.wait_for(getattr(handle, method).remote(), 30)
    for name in actors:
        with contextlib.suppress(Exception):
            ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)


async def read_topic(settings: Settings, topic: str, keep: Callable[[Any], bool]) -> list[ConsumedRecord]:
    """Every record of ``topic`` that ``keep`` accepts, read from the beginning without a consumer
    group (so nothing is committed); stops after ~1 s without new records."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or {0}]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        out: list[ConsumedRecord] = []
        idle = 0
        while idle < 5:
            batches = await consumer.getmany(timeout_ms=200)
            if not any(batches.values()):
                idle += 1
                continue
            idle = 0
            for batch in batches.values():
                out.extend(ConsumedRecord.from_kafka(r) for r in batch if keep(r))
        return out
    finally:
        await consumer.stop()


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str, within_s: float = 90.0) -> T:
    """Poll ``probe`` until it returns something truthy (generous: the machine is shared)."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        value = await probe()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {within_s:.0f}s waiting for {what}")
        await asyncio.sleep(0.2)


@dataclass
class System:
    """The running system of one test module."""

    settings: Settings
    spec: ClusterSpec
    namespace: str

    @property
    def logs(self) -> Any:
        """A client of this system's ``log-store`` actor."""
        return log_store_client(self.settings.clickhouse, self.namespace)

    # ------------------------------------------------------------------ driving

    @staticmethod
    async def run_now(user: Any, workflow_id: UUID) -> UUID:
        """Schedule a MANUAL run over HTTP (due now) and return its job id."""
        response = await user.client.post(
            f"/workflows/{workflow_id}/jobs/schedule", headers=user.keyed(secrets.token_hex(8)))
        assert response.status_code == 201, response.text
        return UUID(response.json()["id"])

    @staticmethod
    async def built(db: Any, workflow_id: UUID, within_s: float = 120.0) -> None:
        """Wait for the workflow's build to complete."""
        async def probe() -> Any:
            return await db.fetchval(
                "SELECT build_status::text FROM workflows WHERE id = $1", workflow_id) == "COMPLETED"

        await eventually(probe, f"the build of workflow {workflow_id}", within_s)

    @staticmethod
    async def job(db: Any, job_id: UUID) -> dict[str, Any]:
        row = await db.fetchrow(
            """SELECT id, status::text AS status, "trigger"::text AS trigger, attempts, next_attempt_at,
                      failure_kind, last_error_code, last_error_message, container_id, started_at,
                      completed_at, workflow_id
                 FROM jobs WHERE id = $1""", job_id)
        assert row is not None, f"job {job_id} does not exist"
        return dict(row)

    async def finished(self, db: Any, job_id: UUID, within_s: float = 120.0) -> dict[str, Any]:
        """Wait for ``job_id`` to reach a terminal status; its row."""
        async def probe() -> dict[str, Any] | None:
            row = await self.job(db, job_id)
            return row if row["status"] in TERMINAL else None

        return await eventually(probe, f"job {job_id} to finish", within_s)

    async def backlog(self, db: Any, topics: tuple[str, ...]) -> dict[str, int]:
        """Per topic, what this system has still to handle: outbox rows not yet published to it,
        plus records its consumer group has not committed (the consumers' own fetch-high-watermark
        lag; tansu's ListOffsets end offsets are wrong, infra-notes §1a)."""
        unpublished = await db.fetch(
            "SELECT topic, count(*) AS n FROM outbox_events WHERE topic = ANY($1::text[]) "
            "AND status IN ('PENDING', 'PROCESSING', 'FAILED') GROUP BY topic", list(topics))
        out = {topic: 0 for topic in topics}
        out.update({r["topic"]: r["n"] for r in unpublished})
        for pool in self.spec.pools.values():
            if pool.topic not in topics:
                continue
            for index in range(pool.consumers):
                consumer = ray.get_actor(consumer_actor_name(pool.topic, index), namespace=self.namespace)
                out[pool.topic] += sum((await consumer.lag.remote()).values())
        return out

    async def quiet(
        self, db: Any, topics: tuple[str, ...] = ("job_logs", "analytics"), within_s: float = 120.0
    ) -> None:
        """Wait until everything sent so far to ``topics`` is published, handled and committed by
        this system's consumers, twice in a row (the barrier before comparing snapshots: nothing
        sent earlier can still change the stored logs and analytics afterwards)."""
        last: dict[str, int] = {}
        streak = [0]

        async def probe() -> bool:
            last.update(await self.backlog(db, topics))
            streak[0] = 0 if any(last.values()) else streak[0] + 1
            return streak[0] >= 2

        try:
            await eventually(probe, "the system's consumers to handle every record", within_s)
        except AssertionError as err:
            raise AssertionError(f"{err}; left per topic: {last}") from None

    # ------------------------------------------------------------------ replay

    async def records(self, topic: str, needle: str) -> list[ConsumedRecord]:
        """Every record of ``topic`` whose value mentions ``needle``, from the beginning."""
        return await read_topic(self.settings, topic,
                                lambda r: r.value is not None and needle.encode() in r.value)

    async def replay(self, needle: str) -> dict[str, int]:
        """Hand every ``jobs``/``job_logs``/``analytics`` record mentioning ``needle`` again to the
        pool that consumed it (one record at a time, awaited); how many per topic."""
        counts: dict[str, int] = {}
        for topic, pool in REPLAY_POOLS.items():
            handle = ray.get_actor(pool, namespace=self.namespace)
            records = await self.records(topic, needle)
            for record in records:
                await handle.handle.remote([record] if topic == "job_logs" else record)
            counts[topic] = len(records)
        return counts


@contextlib.asynccontextmanager
async def running_system(serve_api: Any, namespace: str) -> AsyncIterator[System]:
    """Start the whole backbone (real execution worker) for a module; tear it down afterwards."""
    settings = system_settings(serve_api.settings, namespace)
    spec = system_spec(serve_api.spec, uuid7().hex[:8])
    start_log_store_actor(settings.clickhouse, namespace)
    try:
        await start_backbone(settings, spec, execution_stub=False)
        yield System(settings=settings, spec=spec, namespace=namespace)
    finally:
        await tear_down(namespace)


# ---------------------------------------------------------------------- heartbeat target


@dataclass
class HttpTarget:
    """A local HTTP server: ``/ok`` answers 200, ``/teapot`` 418."""

    base_url: str
    hits: dict[str, int]


@contextlib.asynccontextmanager
async def http_target() -> AsyncIterator[HttpTarget]:
    """Serve :class:`HttpTarget` on a free port of the test's event loop."""
    hits: dict[str, int] = {}

    async def answer(request: web.Request) -> web.Response:
        hits[request.path] = hits.get(request.path, 0) + 1
        return web.Response(status=418 if request.path == "/teapot" else 200)

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield HttpTarget(base_url=f"http://127.0.0.1:{port}", hits=hits)
    finally:
        await runner.cleanup()


def refused_endpoint() -> str:
    """An address nothing listens on: a free port below the ephemeral range, so no outgoing
    connection or port-0 bind takes it while the test expects a refusal (tests/listen_ports.py)."""
    return f"http://127.0.0.1:{listen_port()}/health"


# ---------------------------------------------------------------------- docker


def job_containers(settings: Settings, job_id: UUID) -> list[str]:
    """Ids of every container (any state) labelled with ``job_id`` (``docker ps -a`` by label)."""
    client = docker.DockerClient(base_url=settings.docker.host) if settings.docker.host else docker.from_env()
    try:
        return [c.id for c in client.containers.list(all=True, filters={"label": f"{JOB_LABEL}={job_id}"})]
    finally:
        client.close()
