"""Start the event backbone on a connected Ray cluster, and report on it.

:func:`start_backbone` creates, from ``deploy/chronoverse.yaml`` (``spec.pools``):

* the outbox relay replicas ``outbox-relay-<i>`` and scheduler replicas ``scheduler-<i>``
  (``min_actors`` of their pools, their resource class);
* for every pool fed by a topic: its pool manager ``<pool>-pool`` (which creates the workers
  ``<pool>-<i>``) and the consumer group's actors ``consumer-<topic>-<i>`` (``consumers`` of them,
  never more than the topic's partitions), each forwarding records to the pool by name.

Everything is created detached with ``get_if_exists``, so calling it again (``chronoverse up`` after
a restart of the driver, ``chronoverse deploy``) finds what runs and starts only what is missing.
The execution pool's worker is the real executor when installed; ``execution_stub=True`` uses
:class:`actors.execution_stub.ExecutionStub` instead (acknowledges dispatches, runs nothing).

:func:`backbone_status` lists every pool (size/busy/queue) and consumer group member (lag) for
``chronoverse status``; :func:`redrive` re-queues DEAD outbox rows (``chronoverse outbox redrive``).
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import ray
from pydantic import BaseModel, ConfigDict

from actors.outbox_relay import OutboxRelayActor
from actors.pool import PoolManager, PoolStatus, import_worker_class, pool_manager_name
from actors.scheduler import SchedulerActor
from domain.config import Settings
from domain.topology import ClusterSpec, PoolSpec
from ingest.consumer import ConsumerStats
from ingest.consumer_actor import ConsumerSpec, consumer_actor_name, create_consumer_actor
from ingest.topics import ensure_topics
from store import outbox
from store.postgres import connect

log = logging.getLogger(__name__)

#: Worker class of each topic-fed pool, as ``module:Class`` (imported inside the pool manager).
WORKER_CLASSES: dict[str, str] = {
    "workflow-worker": "actors.workflow_worker:WorkflowWorker",
    "execution-worker": "actors.execution_worker:ExecutionWorkerActor",
    "joblogs-processor": "actors.joblogs_processor:JoblogsProcessorActor",
    "analytics-processor": "actors.analytics_processor:AnalyticsProcessorActor",
}
EXECUTION_POOL = "execution-worker"
JOBLOGS_POOL = "joblogs-processor"
EXECUTION_STUB = "actors.execution_stub:ExecutionStub"
SCHEDULER_POOL = "scheduler"
RELAY_POOL = "outbox-relay"
#: The pool managers only route; their workers carry the resource reservations.
MANAGER_NUM_CPUS = 0.05
#: How long start-up waits for each actor to answer ``ready``.
READY_TIMEOUT_S = 120.0
#: Records a consumer lane hands its pool in one call (whatever is queued, up to this many).
ROUTED_BATCH = 16
#: Calls a consumer lane keeps in flight (per partition), keys never overlapping.
LANE_UNITS = 8
#: The execution pool claims a batch concurrently, so fewer, larger calls serve it best: records
#: queue up behind the calls in flight and travel together (measured: ~8% less CPU per job).
EXECUTION_BATCH = 32
EXECUTION_LANE_UNITS = 2
#: Fetch wait of the groups off the dispatch path (workflow events, job logs, analytics): an idle
#: consumer polls tansu once per wait, and at the 50 ms default the five idle consumers of a local
#: stack cost about 0.2 CPU between them and the broker.  Dispatch (``jobs``) keeps
#: ``KAFKA_FETCH_MAX_WAIT``: it is on the due → RUNNING path.
BACKGROUND_FETCH_MAX_WAIT_S = 0.25


class ConsumerStatus(BaseModel):
    """One consumer-group member for ``chronoverse status``."""

    model_config = ConfigDict(frozen=True)

    name: str
    group: str
    topic: str
    running: bool
    partitions: list[int]
    lag: dict[int, int]
    total_lag: int
    processed: int
    retries: int
    skipped: int


class BackboneError(Exception):
    """The backbone could not be started; the message names the actor and the reason."""


def worker_class_for(pool: str, *, execution_stub: bool) -> str | None:
    """The worker class path of ``pool``, or ``None`` when its module is not installed."""
    path = EXECUTION_STUB if (pool == EXECUTION_POOL and execution_stub) else WORKER_CLASSES.get(pool)
    if path is None:
        return None
    module = path.partition(":")[0]
    try:
        import_worker_class(path)  # a module that exists without the class is a bug: it raises
    except ModuleNotFoundError as err:
        if err.name != module:  # the module exists but one of its own imports is broken: say so
            raise
        return None
    return path


def consumer_spec_for(
    settings: Settings, pool: str, topic: str, group: str, *, pool_spec: PoolSpec | None = None
) -> ConsumerSpec:
    """How a pool's consumers feed it.

    * The joblogs processor takes batches of up to ``JOBLOGS_PROCESSOR_BATCH_JOB_LOGS_SIZE_LIMIT``
      lines gathered for at most ``…_TIME_INTERVAL`` (reference §6.5, §8).
    * Every other pool gets what its lane has queued (up to :data:`ROUTED_BATCH`, never waiting for
      more) in one call, with up to :data:`LANE_UNITS` calls in flight per partition (the execution
      pool: :data:`EXECUTION_BATCH` and :data:`EXECUTION_LANE_UNITS`).  One record
      at a time per partition, one Ray round trip each, capped the pipeline at a few dozen jobs per
      second.  Per-key order holds: a lane never runs two units that share a key, the workflow
      worker and the processors handle a batch in order (the execution worker claims a batch
      concurrently: its claim serialises a workflow's jobs by itself); commits cover only the
      finished prefix; a
      batch failing on one bad record is re-delivered record by record
      (:class:`ingest.consumer_actor.RecordForwarder`), so only that record is skipped.
    """
    # With ``pool_spec``, each consumer routes to the pool's workers itself (ingest.consumer_actor.
    # WorkerRoutes); together they keep the pool's per-worker bound.  Without, it calls the target.
    worker_in_flight = 0
    if pool_spec is not None:
        worker_in_flight = max(1, math.ceil(pool_spec.max_in_flight / max(1, pool_spec.consumers)))
    if pool == JOBLOGS_POOL:
        cfg = settings.joblogs
        return ConsumerSpec(
            topic=topic,
            group_id=group,
            batch_size=cfg.batch_job_logs_size_limit,
            batch_wait_s=cfg.batch_job_logs_time_interval.total_seconds(),
            worker_in_flight=worker_in_flight,
            fetch_max_wait_s=BACKGROUND_FETCH_MAX_WAIT_S,
        )
    if pool == EXECUTION_POOL:
        return ConsumerSpec(topic=topic, group_id=group, batch_size=EXECUTION_BATCH, batch_wait_s=0.0,
                            max_in_flight_per_lane=EXECUTION_LANE_UNITS, worker_in_flight=worker_in_flight)
    return ConsumerSpec(topic=topic, group_id=group, batch_size=ROUTED_BATCH, batch_wait_s=0.0,
                        max_in_flight_per_lane=LANE_UNITS, worker_in_flight=worker_in_flight,
                        fetch_max_wait_s=BACKGROUND_FETCH_MAX_WAIT_S)


def _detached(settings: Settings, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": settings.ray.namespace,
        "lifetime": "detached",
        "get_if_exists": True,
    }


async def _await_ready(name: str, ref: Any) -> None:
    try:
        await asyncio.wait_for(ref, READY_TIMEOUT_S)
    except TimeoutError:
        raise BackboneError(f"{name}: not ready after {READY_TIMEOUT_S:.0f}s (pending resources?)") from None
    except Exception as err:
        raise BackboneError(f"{name}: failed to start: {err}") from err


async def _start_replicas(settings: Settings, spec: ClusterSpec, pool: str, actor_cls: Any) -> list[str]:
    pool_spec = spec.pools.get(pool)
    if pool_spec is None:
        return []
    options = spec.pool_class(pool).ray_options()
    names = [f"{pool}-{i}" for i in range(max(1, pool_spec.min_actors))]
    refs = []
    for name in names:
        handle = actor_cls.options(
            **options, **_detached(settings, name), max_restarts=pool_spec.max_restarts
        ).remote(settings, name)
        refs.append((name, handle.ready.remote()))
    for name, ref in refs:
        await _await_ready(name, ref)
    return names


async def _start_pool(settings: Settings, spec: ClusterSpec, pool: str, worker_class: str) -> None:
    pool_spec = spec.pools[pool]
    assert pool_spec.topic is not None and pool_spec.consumer_group is not None
    manager_name = pool_manager_name(pool)
    manager_cls: Any = ray.remote(PoolManager)
    manager = manager_cls.options(
        **_detached(settings, manager_name), num_cpus=MANAGER_NUM_CPUS, max_restarts=-1
    ).remote(settings, pool, pool_spec, spec.pool_class(pool), worker_class)
    await _await_ready(manager_name, manager.ready.remote())
    consumer_spec = consumer_spec_for(settings, pool, pool_spec.topic, pool_spec.consumer_group,
                                      pool_spec=pool_spec)
    consumers = [
        create_consumer_actor(
            settings.kafka,
            consumer_spec,
            manager_name,
            index,
            namespace=settings.ray.namespace,
            lifetime="detached",
        )
        for index in range(pool_spec.consumers)
    ]
    for index, consumer in enumerate(consumers):
        await _await_ready(consumer_actor_name(pool_spec.topic, index), consumer.start.remote())


async def start_backbone(settings: Settings, spec: ClusterSpec, *, execution_stub: bool) -> None:
    """Create (or find) the relay, scheduler, pools and consumer groups on the connected cluster.

    Pools whose worker module is not installed yet are skipped with a warning (their topics keep
    their records until a later ``start_backbone`` starts them).  Raises :class:`BackboneError`.
    """
    if not ray.is_initialized():
        raise BackboneError("not connected to a Ray cluster")
    await ensure_topics(settings.kafka, spec.topics)
    await _start_replicas(settings, spec, RELAY_POOL, OutboxRelayActor)
    await _start_replicas(settings, spec, SCHEDULER_POOL, SchedulerActor)
    for pool, pool_spec in spec.pools.items():
        if pool_spec.topic is None:
            continue
        worker_class = worker_class_for(pool, execution_stub=execution_stub)
        if worker_class is None:
            log.warning("pool %s: worker %s is not installed; not starting it or its consumers",
                        pool, WORKER_CLASSES.get(pool, "?"))
            continue
        await _start_pool(settings, spec, pool, worker_class)


def _replica_status(pool: str, names: list[str], worker_class: str) -> PoolStatus:
    return PoolStatus(pool=pool, worker_class=worker_class, size=len(names), starting=0, draining=0,
                      target=len(names), busy=0, queue_depth=0, in_flight=0, max_in_flight=1, handled=0,
                      failed=0)


def backbone_status(namespace: str) -> list[PoolStatus | ConsumerStatus]:
    """Every pool and consumer actor running in ``namespace`` (sync; needs a connected driver)."""
    names = sorted(
        entry["name"]
        for entry in ray.util.list_named_actors(all_namespaces=True)
        if entry.get("namespace") == namespace
    )
    out: list[PoolStatus | ConsumerStatus] = []
    for pool, cls_name in ((RELAY_POOL, "OutboxRelayActor"), (SCHEDULER_POOL, "SchedulerActor")):
        replicas = [n for n in names if n.startswith(f"{pool}-") and n[len(pool) + 1 :].isdigit()]
        if replicas:
            out.append(_replica_status(pool, replicas, cls_name))
    for name in names:
        if name.endswith("-pool"):
            handle = ray.get_actor(name, namespace=namespace)
            pool_status: Any = ray.get(handle.stats.remote(), timeout=10)
            out.append(PoolStatus.model_validate(pool_status))
    for name in names:
        if not name.startswith("consumer-"):
            continue
        handle = ray.get_actor(name, namespace=namespace)
        stats: ConsumerStats
        lag: dict[int, int]
        stats, lag = ray.get([handle.stats.remote(), handle.lag.remote()], timeout=10)
        out.append(
            ConsumerStatus(
                name=name,
                group=stats.group_id,
                topic=stats.topic,
                running=stats.running,
                partitions=stats.assigned,
                lag=lag,
                total_lag=sum(lag.values()),
                processed=stats.processed,
                retries=stats.retries,
                skipped=stats.skipped,
            )
        )
    return out


async def redrive(settings: Settings, topic: str | None, key: str | None) -> int:
    """Re-queue DEAD outbox rows (all, or of one topic and/or key); return how many."""
    conn = await connect(settings.postgres, application_name="chronoverse-redrive")
    try:
        return await outbox.redrive_dead(conn, topic=topic, kafka_key=key)
    finally:
        await conn.close()
