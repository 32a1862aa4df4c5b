"""Actor pools: N named Ray actors of one worker class behind one ``handle`` entry point.

A pool is a small manager actor (:class:`PoolManager`, named ``<pool>-pool``) owning its workers
``<pool>-0``, ``<pool>-1``, … (so the Ray dashboard reads like the architecture).  Workers are created
with the pool's resource class (``ResourceClassSpec.ray_options()``: reservation CPUs and memory plus
one unit of the ``low``/``high`` custom resource), ``max_restarts`` from the pool spec, in the
configured namespace.  The Kafka consumer actors of the pool's group call ``PoolManager.handle``.

Routing and capacity are plain code (:class:`PoolRouter`, unit-tested without Ray):

* each worker takes at most ``max_in_flight`` records at once; ``handle`` picks the least loaded
  worker and, when every worker is full, *waits* — that wait is the pool's backpressure and its
  length is the queue depth;
* ``resize(n)`` grows by creating actors (routable once they answer ``ready``) and shrinks by
  *draining*: a draining worker takes no new work, finishes its in-flight records, is asked to
  ``shutdown`` and is then killed;
* ``stats()`` reports size, starting/draining actors, busy actors, queue depth and in-flight records.

Worker classes follow one small contract: ``__init__(self, settings: Settings, name: str)``,
``async handle(self, record)`` (raise :mod:`domain.errors` errors; ``retryable`` decides whether
the consumer retries), ``async ready(self) -> bool`` and optionally ``async shutdown(self)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import ray
from pydantic import BaseModel, ConfigDict

from actors.metrics import METRICS
from domain.config import Settings
from domain.topology import PoolSpec, ResourceClassSpec
from ingest.consumer_actor import consumer_actor_name, unwrap_remote_error

log = logging.getLogger(__name__)

H = TypeVar("H")

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


@dataclass(eq=False)
class Member(Generic[H]):
    """One worker as the router sees it."""

    index: int
    handle: H
    ready: bool = False
    draining: bool = False
    in_flight: int = 0

    @property
    def routable(self) -> bool:
        return self.ready and not self.draining


class PoolRouter(Generic[H]):
    """Least-loaded routing with bounded in-flight work per member and FIFO waiting (pure logic)."""

    def __init__(self, max_in_flight: int) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.max_in_flight = max_in_flight
        self.members: dict[int, Member[H]] = {}
        self._waiters: deque[asyncio.Future[Member[H]]] = deque()
        self._idle: dict[int, asyncio.Event] = {}
        self.handled = 0
        self.failed = 0

    # ---------------------------------------------------------------- membership

    def add(self, index: int, handle: H, *, ready: bool = True) -> Member[H]:
        if index in self.members:
            raise ValueError(f"member {index} exists")
        member = Member(index=index, handle=handle, ready=ready)
        self.members[index] = member
        self._idle[index] = asyncio.Event()
        self._idle[index].set()
        self._serve_waiters()
        return member

    def mark_ready(self, index: int) -> None:
        member = self.members.get(index)
        if member is not None:
            member.ready = True
            self._serve_waiters()

    def remove(self, index: int) -> Member[H] | None:
        self._idle.pop(index, None)
        return self.members.pop(index, None)

    def free_indexes(self, count: int) -> list[int]:
        """The ``count`` lowest indexes not in use (so names stay compact: -0, -1, …)."""
        out: list[int] = []
        candidate = 0
        while len(out) < count:
            if candidate not in self.members:
                out.append(candidate)
            candidate += 1
        return out

    def active(self) -> list[Member[H]]:
        """Members that are or will become routable (not draining), lowest index first."""
        return sorted((m for m in self.members.values() if not m.draining), key=lambda m: m.index)

    def start_drain(self, count: int) -> list[Member[H]]:
        """Stop routing to the ``count`` members that are least useful to keep: not-yet-ready ones
        first, then the highest indexes.  Returns them; wait for :meth:`wait_idle` before killing."""
        active = self.active()
        starting = [m for m in active if not m.ready]
        ready = sorted((m for m in active if m.ready), key=lambda m: m.index, reverse=True)
        chosen = (starting + ready)[:count]
        for member in chosen:
            member.draining = True
        return chosen

    async def wait_idle(self, index: int) -> None:
        event = self._idle.get(index)
        if event is not None:
            await event.wait()

    # ---------------------------------------------------------------- routing

    def _pick(self) -> Member[H] | None:
        best: Member[H] | None = None
        for member in self.members.values():
            if not member.routable or member.in_flight >= self.max_in_flight:
                continue
            if best is None or (member.in_flight, member.index) < (best.in_flight, best.index):
                best = member
        return best

    def _take(self, member: Member[H]) -> Member[H]:
        member.in_flight += 1
        self._idle[member.index].clear()
        return member

    def _serve_waiters(self) -> None:
        while self._waiters:
            waiter = self._waiters[0]
            if waiter.done():  # cancelled while waiting
                self._waiters.popleft()
                continue
            member = self._pick()
            if member is None:
                return
            self._waiters.popleft()
            waiter.set_result(self._take(member))

    def try_acquire(self) -> Member[H] | None:
        """A slot right now, or ``None`` (never jumps the queue of waiting callers)."""
        if any(not w.done() for w in self._waiters):
            return None
        member = self._pick()
        return self._take(member) if member is not None else None

    async def acquire(self) -> Member[H]:
        """Wait for a slot on the least loaded routable member (FIFO among waiters)."""
        member = self.try_acquire()
        if member is not None:
            return member
        waiter: asyncio.Future[Member[H]] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(waiter.result(), ok=True, counted=False)  # granted as we were cancelled
            raise

    def release(self, member: Member[H], *, ok: bool, counted: bool = True) -> None:
        member.in_flight -= 1
        if counted:
            if ok:
                self.handled += 1
            else:
                self.failed += 1
        if member.in_flight == 0 and member.index in self._idle:
            self._idle[member.index].set()
        self._serve_waiters()

    # ---------------------------------------------------------------- observation

    @property
    def queue_depth(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    @property
    def in_flight(self) -> int:
        return sum(m.in_flight for m in self.members.values())

    def counts(self) -> dict[str, int]:
        members = list(self.members.values())
        return {
            "size": sum(1 for m in members if m.routable),
            "starting": sum(1 for m in members if not m.ready and not m.draining),
            "draining": sum(1 for m in members if m.draining),
            "busy": sum(1 for m in members if m.routable and m.in_flight > 0),
            "queue_depth": self.queue_depth,
            "in_flight": self.in_flight,
        }


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

    async def _drain(self, member: Member[Any]) -> None:
        await self.router.wait_idle(member.index)
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

    def status(self) -> PoolStatus:
        counts = self.router.counts()
        return PoolStatus(
            pool=self.pool,
            worker_class=self.worker_class,
            target=self.target,
            max_in_flight=self.router.max_in_flight,
            handled=self.router.handled,
            failed=self.router.failed,
            consumer_lag=self._consumer_lag,
            **counts,
        )

    async def stats(self) -> PoolStatus:
        return self.status()

    async def _refresh_consumer_lag(self) -> None:
        """Sum the lag of the consumer group feeding this pool (and export it per partition)."""
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
                lag: dict[int, int] = await asyncio.wait_for(consumer.lag.remote(), 5.0)
            except Exception:  # not started yet, restarting, or gone: it reports next time
                self._consumers.pop(name, None)
                continue
            for partition, behind in lag.items():
                METRICS.consumer_lag(group, topic, partition, behind)
                total += behind
        self._consumer_lag = total

    async def _report_metrics(self) -> None:
        while True:
            counts = self.router.counts()
            METRICS.pool(
                self.pool,
                size=counts["size"],
                busy=counts["busy"],
                queue_depth=counts["queue_depth"],
                in_flight=counts["in_flight"],
            )
            await self._refresh_consumer_lag()
            await asyncio.sleep(2.0)

    async def stop(self) -> None:
        """Drain every worker (finishing in-flight work) and stop."""
        await self.resize(0)
        await asyncio.gather(*self._drains, return_exceptions=True)

