"""Actor pools: N named Ray actors of one worker class behind one ``handle`` entry point.

A pool is a small manager actor (:class:`PoolManager`, named ``<pool>-pool``) owning its workers
``<pool>-0``, ``<pool>-1``, … (so the Ray dashboard reads like the architecture).  Workers are created
with the pool's resource class (``ResourceClassSpec.ray_options()``: reservation CPUs and memory plus
one unit of the ``low``/``high`` custom resource), ``max_restarts`` from the pool spec, in the
configured namespace.  The Kafka consumer actors of the pool's group route their records straight
to the workers, with the membership the manager publishes (:meth:`PoolManager.members`,
:class:`ingest.consumer_actor.WorkerRoutes`): one Ray call per batch, not two.  ``PoolManager.handle``
is the pool's own entry point for other callers (replays, tools).

Routing and capacity are plain code (:class:`PoolRouter`, unit-tested without Ray):

* each worker takes at most ``max_in_flight`` records at once; ``handle`` picks the least loaded
  worker and, when every worker is full, *waits* — that wait is the pool's backpressure and its
  length is the queue depth;
* ``resize(n)`` grows by creating actors (routable once they answer ``ready``) and shrinks by
  *draining*: a draining worker leaves the published membership, takes no new work, finishes its
  in-flight records (the manager's and every consumer's), is asked to ``shutdown`` and is then killed;
* ``stats()`` reports size, starting/draining actors, busy actors, queue depth and in-flight records,
  counting the consumers' direct calls as they last reported them (every 2 s).

Worker classes follow one small contract: ``__init__(self, settings: Settings, name: str)``,
``async handle(self, record)`` (raise :mod:`domain.errors` errors; ``retryable`` decides whether
the consumer retries), ``async ready(self) -> bool`` and optionally ``async shutdown(self)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import uuid
from typing import Any

import ray
from pydantic import BaseModel, ConfigDict

from actors.metrics import METRICS
from domain.config import Settings
from domain.topology import PoolSpec, ResourceClassSpec
from ingest.consumer_actor import MEMBERSHIP_TTL_S, RoutingStats, consumer_actor_name, unwrap_remote_error
from ingest.routing import Member, PoolRouter

log = logging.getLogger(__name__)


#: Extra actor concurrency above ``max_in_flight`` for control calls (ready, stats, shutdown).
CONTROL_CONCURRENCY = 4
#: How long a draining worker gets for ``shutdown`` before it is killed anyway.
SHUTDOWN_GRACE_S = 10.0


def pool_manager_name(pool: str) -> str:
    """Name of the manager actor of ``pool``."""
    return f"{pool}-pool"


def worker_name(pool: str, index: int) -> str:
    """Name of worker ``index`` of ``pool`` (``workflow-worker-0``)."""
    return f"{pool}-{index}"


class PoolStatus(BaseModel):
    """A pool's state for ``chronoverse status``, metrics and the pool autoscaler."""

    model_config = ConfigDict(frozen=True)

    pool: str
    worker_class: str
    size: int  # routable workers
    starting: int  # created, not yet ready (e.g. waiting for resources)
    draining: int  # finishing in-flight work before being killed
    target: int  # the size last asked for
    busy: int  # routable workers with at least one record in flight
    queue_depth: int  # handle() calls waiting for a free slot
    in_flight: int
    max_in_flight: int
    handled: int
    failed: int
    consumer_lag: int = 0  # records not yet committed by the pool's consumer group (all partitions)


def import_worker_class(path: str) -> Any:
    """``"package.module:ClassName"`` → the class (a plain class or a ``@ray.remote`` one)."""
    module_name, _, attr = path.partition(":")
    if not attr:
        raise ValueError(f"worker class path {path!r} must look like 'package.module:ClassName'")
    return getattr(importlib.import_module(module_name), attr)


class PoolManager:
    """Owns the workers of one pool and routes records to them (use as a Ray actor)."""

    def __init__(
        self,
        settings: Settings,
        pool: str,
        spec: PoolSpec,
        resources: ResourceClassSpec,
        worker_class: str,
        *,
        size: int | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.spec = spec
        self.resources = resources
        self.worker_class = worker_class
        self.router: PoolRouter[Any] = PoolRouter(spec.max_in_flight)
        self.target = spec.min_actors if size is None else size
        self._tasks: set[asyncio.Task[Any]] = set()
        self._resize_lock = asyncio.Lock()
        self._first_ready = asyncio.Event()
        self._consumer_lag = 0
        self._consumers: dict[str, Any] = {}
        self._incarnation = uuid.uuid4().hex[:12]
        #: Latest routing stats of each consumer calling the workers directly, by consumer name.
        self._routing: dict[str, RoutingStats] = {}
        self._drains: set[asyncio.Task[Any]] = set()
        self._metrics_task = self._spawn(self._report_metrics())
        self._spawn(self.resize(self.target))

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_event_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(self._drains.discard)
        return task

    def _worker_options(self, index: int) -> dict[str, Any]:
        return {
            **self.resources.ray_options(),
            "name": worker_name(self.pool, index),
            "namespace": self.settings.ray.namespace,
            "max_restarts": self.spec.max_restarts,
            "max_concurrency": self.spec.max_in_flight + CONTROL_CONCURRENCY,
            "get_if_exists": True,
        }

    def _create_worker(self, index: int) -> Any:
        cls = import_worker_class(self.worker_class)
        remote_cls = cls if isinstance(cls, ray.actor.ActorClass) else ray.remote(cls)
        return remote_cls.options(**self._worker_options(index)).remote(
            settings=self.settings, name=worker_name(self.pool, index)
        )

    async def _await_ready(self, index: int, handle: Any) -> None:
        while True:
            try:
                await handle.ready.remote()
                self.router.mark_ready(index)
                self._first_ready.set()
                log.info("%s: worker %s ready", self.pool, worker_name(self.pool, index))
                return
            except Exception as err:
                member = self.router.members.get(index)
                if member is None or member.draining:
                    return
                log.warning("%s: worker %d not ready yet: %s", self.pool, index, err)
                await asyncio.sleep(2.0)

    async def members(self, known_version: str = "") -> tuple[str, dict[int, Any] | None]:
        """``(version, workers)``: the workers callers may route to directly (index → handle: ready
        and not draining), or ``None`` when the caller's ``known_version`` is still current (no
        handles to send and deserialise again).  Consumers ask every ``MEMBERSHIP_TTL_S``
        (:class:`ingest.consumer_actor.WorkerRoutes`)."""
        version = f"{self._incarnation}:{self.router.version}"  # unique across manager restarts
        if version == known_version:
            return version, None
        return version, {m.index: m.handle for m in self.router.members.values() if m.routable}

    async def _wait_consumers_idle(self, index: int) -> None:
        """Wait until no consumer is likely to still route to worker ``index``: every consumer
        refreshes the membership in the background every ``MEMBERSHIP_TTL_S`` (allow two rounds and
        a slow answer), and the calls it already has in flight to the worker finish (bounded by the
        shutdown grace).  A call that still reaches the stopped worker fails over: the consumer
        retries it in place and re-reads the membership."""
        await asyncio.sleep(2 * MEMBERSHIP_TTL_S + 0.5)
        deadline = asyncio.get_running_loop().time() + SHUTDOWN_GRACE_S
        while asyncio.get_running_loop().time() < deadline:
            await self._refresh_consumers()
            if not any(stats.in_flight.get(index) for stats in self._routing.values()):
                return
            await asyncio.sleep(0.2)

    async def _drain(self, member: Member[Any]) -> None:
        await self.router.wait_idle(member.index)
        await self._wait_consumers_idle(member.index)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(member.handle.shutdown.remote(), SHUTDOWN_GRACE_S)
        with contextlib.suppress(Exception):
            ray.kill(member.handle, no_restart=True)
        self.router.remove(member.index)
        log.info("%s: worker %s drained and stopped", self.pool, worker_name(self.pool, member.index))

    async def ready(self) -> bool:
        """True once at least one worker is routable (or the pool is sized 0)."""
        if self.target > 0:
            await self._first_ready.wait()
        return True

    async def resize(self, n: int) -> int:
        """Grow or shrink to ``n`` workers (never below 0).  Returns the new target.  Growing returns
        once the actors are created (they become routable when ready); shrinking drains."""
        async with self._resize_lock:
            self.target = max(0, n)
            active = self.router.active()
            if len(active) < self.target:
                for index in self.router.free_indexes(self.target - len(active)):
                    handle = self._create_worker(index)
                    self.router.add(index, handle, ready=False)
                    self._spawn(self._await_ready(index, handle))
            elif len(active) > self.target:
                for member in self.router.start_drain(len(active) - self.target):
                    self._drains.add(self._spawn(self._drain(member)))
            return self.target

    async def handle(self, record: Any) -> Any:
        """Hand ``record`` to a worker with a free slot, waiting for one (backpressure)."""
        member = await self.router.acquire()
        ok = False
        try:
            result = await member.handle.handle.remote(record)
            ok = True
            return result
        except Exception as err:
            unwrapped = unwrap_remote_error(err)
            if unwrapped is err:
                raise
            raise unwrapped from None
        finally:
            self.router.release(member, ok=ok)

    def _counts(self) -> dict[str, int]:
        """The router's counts plus the calls the consumers route to the workers themselves."""
        counts = self.router.counts()
        routed = list(self._routing.values())
        load = self.router.load()
        for stats in routed:
            for index, calls in stats.in_flight.items():
                load[index] = load.get(index, 0) + calls
        members = self.router.members
        counts["busy"] = sum(1 for i, calls in load.items() if calls and i in members and members[i].routable)
        counts["in_flight"] = sum(load.values())
        counts["queue_depth"] += sum(stats.queue_depth for stats in routed)
        return counts

    def status(self) -> PoolStatus:
        routed = self._routing.values()
        return PoolStatus(
            pool=self.pool,
            worker_class=self.worker_class,
            target=self.target,
            max_in_flight=self.router.max_in_flight,
            handled=self.router.handled + sum(stats.handled for stats in routed),
            failed=self.router.failed + sum(stats.failed for stats in routed),
            consumer_lag=self._consumer_lag,
            **self._counts(),
        )

    async def stats(self) -> PoolStatus:
        return self.status()

    async def _refresh_consumers(self) -> None:
        """Read the lag and the direct-routing load of the consumer group feeding this pool (and
        export the lag per partition)."""
        topic, group = self.spec.topic, self.spec.consumer_group
        if topic is None or group is None:
            return
        total = 0
        for index in range(self.spec.consumers):
            name = consumer_actor_name(topic, index)
            try:
                consumer = self._consumers.get(name)
                if consumer is None:
                    consumer = ray.get_actor(name, namespace=self.settings.ray.namespace)
                    self._consumers[name] = consumer
                lag: dict[int, int]
                routing: RoutingStats | None
                lag, routing = await asyncio.wait_for(
                    asyncio.gather(consumer.lag.remote(), consumer.routing.remote()), 5.0)
            except Exception:  # not started yet, restarting, or gone: it reports next time
                self._consumers.pop(name, None)
                self._routing.pop(name, None)
                continue
            if routing is not None:
                self._routing[name] = routing
            for partition, behind in lag.items():
                METRICS.consumer_lag(group, topic, partition, behind)
                total += behind
        self._consumer_lag = total

    async def _report_metrics(self) -> None:
        while True:
            counts = self._counts()
            METRICS.pool(
                self.pool,
                size=counts["size"],
                busy=counts["busy"],
                queue_depth=counts["queue_depth"],
                in_flight=counts["in_flight"],
            )
            await self._refresh_consumers()
            await asyncio.sleep(2.0)

    async def stop(self) -> None:
        """Drain every worker (finishing in-flight work) and stop."""
        await self.resize(0)
        await asyncio.gather(*self._drains, return_exceptions=True)

