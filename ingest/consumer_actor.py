"""The Ray shell of a Kafka consumer: a small async actor (``consumer-<topic>-<i>``) that runs a
:class:`~ingest.consumer.PartitionedConsumer` and forwards records to a target actor — for a pool,
straight to its workers with the membership its manager publishes (:class:`WorkerRoutes`), else
``await target.handle.remote(record)``.

All consuming logic lives in :mod:`ingest.consumer` (tested without Ray).  What this shell adds:

* forwarding: ``batch_size == 1`` sends each :class:`ConsumedRecord` on its own, a larger
  ``batch_size`` sends the ``list[ConsumedRecord]`` of a batch in one call.  A batch the target
  rejects with a permanent error (one undecodable record fails the whole call) is delivered again
  record by record, so only the offending record is skipped (targets are idempotent);
* error mapping: a Ray task error is unwrapped to the target's own exception, so a domain error's
  ``retryable`` flag decides retry-or-commit exactly as in-process; a dead or unreachable target
  becomes :class:`~domain.errors.Unavailable` (retried in place until the pool is back);
* lifecycle: the consumer starts in ``__init__`` (so an actor restarted by Ray rejoins its group
  on its own), retrying while the broker is unreachable; ``stop()`` drains and leaves the group.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from datetime import timedelta
from typing import Any

import ray
from pydantic import BaseModel, ConfigDict, Field, model_validator

from domain.commit_policy import RetryBackoff, is_retryable
from domain.config import KafkaConfig
from domain.errors import Unavailable
from ingest.consumer import ConsumedRecord, ConsumerStats, PartitionedConsumer
from ingest.routing import PoolRouter

log = logging.getLogger(__name__)

#: Logical CPUs a consumer actor asks for: it only moves bytes between Kafka and the pool.
CONSUMER_NUM_CPUS = 0.05
#: How old a pool membership may get before a consumer routing to its workers re-reads it.
MEMBERSHIP_TTL_S = 1.0


class ConsumerSpec(BaseModel):
    """What one consumer actor reads and how it feeds its target."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    topic: str
    group_id: str
    method: str = "handle"  # the target actor's method that takes a record (or a batch)
    batch_size: int = Field(default=1, ge=1)  # > 1: the target gets list[ConsumedRecord]
    batch_wait_s: float = Field(default=0.0, ge=0)
    lane_capacity: int = Field(default=1024, ge=1)
    resume_at: int = Field(default=512, ge=0)
    max_in_flight_per_lane: int = Field(default=1, ge=1)
    # > 0: the target is a pool manager; records go straight to its workers (see
    # :class:`WorkerRoutes`), at most this many calls in flight per worker from this consumer.
    worker_in_flight: int = Field(default=0, ge=0)
    # Overrides KAFKA_FETCH_MAX_WAIT for this group: tansu answers an empty fetch only when the wait
    # is over, so an idle consumer polls once per wait — a longer one for groups off the latency-
    # critical path saves that polling's CPU (consumer and broker) at the cost of delivery delay.
    fetch_max_wait_s: float | None = Field(default=None, gt=0)
    drain_timeout_s: float = Field(default=30.0, ge=0)
    retry_initial_s: float = Field(default=1.0, gt=0)  # reference backoff: 1 s doubling …
    retry_max_s: float = Field(default=30.0, gt=0)  # … up to 30 s

    @model_validator(mode="after")
    def _resume_below_capacity(self) -> ConsumerSpec:
        if self.resume_at >= self.lane_capacity:
            raise ValueError("resume_at must be below lane_capacity")
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError("retry_max_s must not be below retry_initial_s")
        return self


def consumer_actor_name(topic: str, index: int) -> str:
    """``consumer-jobs-0``: how consumer actors appear in the Ray dashboard."""
    return f"consumer-{topic}-{index}"


def unwrap_remote_error(err: BaseException) -> BaseException:
    """The target's own exception behind a Ray error (so ``retryable`` keeps its meaning); a dead
    or unreachable actor becomes :class:`Unavailable`, which is retried in place."""
    if isinstance(err, ray.exceptions.RayTaskError):
        cause = err.cause
        return cause if isinstance(cause, BaseException) else err
    if isinstance(err, ray.exceptions.RayActorError | ray.exceptions.ActorUnavailableError):
        return Unavailable(f"target actor unavailable: {err}")
    return err


class RoutingStats(BaseModel):
    """What a consumer routing straight to a pool's workers has in flight (for the pool's stats)."""

    model_config = ConfigDict(frozen=True)

    in_flight: dict[int, int]  # calls in flight per worker index
    queue_depth: int  # calls waiting for a worker with a free slot
    handled: int
    failed: int


class WorkerRoutes:
    """Direct routing from a consumer to the workers of a pool.

    The pool manager stays the owner of its workers (creates, resizes, drains them) and publishes
    who may be called (``members()``: index → handle of every routable worker); this consumer
    reads it at start, refreshes it in the background every :data:`MEMBERSHIP_TTL_S` (and re-reads
    it before the next call after a worker error), then
    picks the least loaded worker itself with at most ``limit`` calls in flight per worker — a
    full pool makes the call wait (backpressure).  One Ray call per batch instead of two
    (consumer → manager → worker); the manager learns the load from :meth:`stats`.  A worker
    being drained leaves the membership first and is stopped only once no consumer has a call in
    flight to it (:meth:`actors.pool.PoolManager.members`).
    """

    def __init__(self, manager: str, namespace: str | None, limit: int) -> None:
        self._manager_name = manager
        self._namespace = namespace
        self.router: PoolRouter[Any] = PoolRouter(limit)
        self._manager: Any = None
        self._version = ""
        self._fetched_at = -math.inf
        self._refresh: asyncio.Task[None] | None = None

    def stale(self) -> None:
        """Re-read the whole membership before the next call (a worker failed or vanished)."""
        self._fetched_at = -math.inf
        self._version = ""

    async def _fetch(self) -> None:
        if self._manager is None:
            try:
                self._manager = ray.get_actor(self._manager_name, namespace=self._namespace)
            except ValueError as err:  # not created yet (or gone): retried in place
                raise Unavailable(f"pool manager {self._manager_name!r} not found") from err
        try:
            version, members = await self._manager.members.remote(self._version)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
            self._manager = None  # look it up again: it may have been re-created
            raise
        if members is not None:
            self.router.sync(members)
        self._version = version
        self._fetched_at = time.monotonic()

    async def _membership(self) -> None:
        """A current enough membership.  Only the first one (and one after :meth:`stale`) is waited
        for; an aged one is refreshed in the background, because the manager may take a while to
        answer on a busy machine (measured: up to 0.5 s) and calls must not wait on it.  A call
        routed meanwhile to a worker that has just left fails over (retried in place, then
        re-read)."""
        if self._refresh is None or self._refresh.done():  # one fetch for every waiting caller
            if self._version and time.monotonic() - self._fetched_at < MEMBERSHIP_TTL_S:
                return
            self._refresh = asyncio.get_running_loop().create_task(self._fetch())
            self._refresh.add_done_callback(self._refreshed)
        if not self._version:
            await asyncio.shield(self._refresh)

    async def warm_up(self) -> None:
        """Read the membership now (at consumer start), so the first records do not wait for it:
        the first read resolves the manager and every worker handle (measured 0.25 to 0.5 s)."""
        try:
            await self._fetch()
        except Exception as err:  # the first call reads it again (and retries in place)
            log.warning("pool %s: no membership yet: %s", self._manager_name, err)

    def _refreshed(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.warning("pool %s: reading its membership failed: %s", self._manager_name, task.exception())

    async def call(self, method: str, payload: Any) -> Any:
        """``worker.<method>.remote(payload)`` on the least loaded worker with a free slot."""
        while True:
            await self._membership()
            if not any(member.routable for member in self.router.members.values()):
                raise Unavailable(f"pool {self._manager_name!r} has no ready worker")
            free = self.router.try_acquire()  # the usual case: no waiting, no wait_for task
            if free is not None:
                member = free
                break
            try:
                # Bounded so a caller never waits on a membership that has gone stale.
                member = await asyncio.wait_for(self.router.acquire(), MEMBERSHIP_TTL_S)
                break
            except TimeoutError:
                continue
        ok = False
        try:
            result = await getattr(member.handle, method).remote(payload)
            ok = True
            return result
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
            self.stale()
            raise
        finally:
            self.router.release(member, ok=ok)

    def stats(self) -> RoutingStats:
        return RoutingStats(in_flight=self.router.load(), queue_depth=self.router.queue_depth,
                            handled=self.router.handled, failed=self.router.failed)


class RecordForwarder:
    """The consumer's handler: calls ``target.<method>.remote(...)`` and maps its errors.

    ``target`` is an actor handle or an actor *name* (resolved in ``namespace`` on first use and
    again after the actor died, so a re-created pool is found).  Prefer the name for actors that
    Ray may restart: a handle among the constructor arguments cannot be restored reliably
    (ray-project/ray#53727).  With ``routes`` the target is a pool manager's name and the calls
    go straight to its workers (:class:`WorkerRoutes`).
    """

    def __init__(self, target: Any, method: str, *, batched: bool, namespace: str | None = None,
                 routes: WorkerRoutes | None = None) -> None:
        self._target = target
        self._namespace = namespace
        self._method_name = method
        self._batched = batched
        self.routes = routes
        self._method: Any = None if isinstance(target, str) else getattr(target, method)

    def _resolve(self) -> Any:
        if self._method is None:
            try:
                handle = ray.get_actor(self._target, namespace=self._namespace)
            except ValueError as err:  # not created yet (or gone): retried in place
                raise Unavailable(f"target actor {self._target!r} not found") from err
            self._method = getattr(handle, self._method_name)
        return self._method

    async def _invoke(self, payload: Any) -> Any:
        if self.routes is not None:
            return await self.routes.call(self._method_name, payload)
        return await self._resolve().remote(payload)

    async def __call__(self, records: list[ConsumedRecord]) -> None:
        try:
            if self._batched:
                await self._forward_batch(records)
            else:
                for record in records:
                    await self._invoke(record)
        except Exception as err:
            mapped = unwrap_remote_error(err)
            if mapped is err:
                raise
            if isinstance(err, ray.exceptions.RayActorError) and isinstance(self._target, str):
                self._method = None  # look the name up again next time
            raise mapped from err

    async def _forward_batch(self, records: list[ConsumedRecord]) -> None:
        try:
            await self._invoke(records)
            return
        except Exception as err:
            if len(records) == 1 or is_retryable(unwrap_remote_error(err)):
                raise
            log.warning("batch of %d %s records failed permanently (%s); delivering them one by one",
                        len(records), records[0].topic, unwrap_remote_error(err))
        for record in records:
            try:
                await self._invoke([record])
            except Exception as err:
                mapped = unwrap_remote_error(err)
                if is_retryable(mapped):
                    raise
                log.warning("skipping %s %d:%d after a permanent error: %s",
                            record.topic, record.partition, record.offset, mapped)


@ray.remote(num_cpus=CONSUMER_NUM_CPUS, max_restarts=-1)
class ConsumerActor:
    """One member of a consumer group, feeding ``target`` (an actor handle).  Create it with
    :func:`create_consumer_actor`, or ``ConsumerActor.options(name=...).remote(...)``."""

    def __init__(
        self, cfg: KafkaConfig, spec: ConsumerSpec, target: Any, name: str = "", namespace: str | None = None
    ) -> None:
        self._spec = spec
        self._name = name or spec.group_id
        self._routes = (WorkerRoutes(target, namespace, spec.worker_in_flight)
                        if spec.worker_in_flight and isinstance(target, str) else None)
        if spec.fetch_max_wait_s is not None:
            cfg = cfg.model_copy(update={"fetch_max_wait": timedelta(seconds=spec.fetch_max_wait_s)})
        self._consumer = PartitionedConsumer(
            cfg,
            spec.topic,
            spec.group_id,
            RecordForwarder(target, spec.method, batched=spec.batch_size > 1, namespace=namespace,
                            routes=self._routes),
            lane_capacity=spec.lane_capacity,
            resume_at=spec.resume_at,
            batch_size=spec.batch_size,
            batch_wait=spec.batch_wait_s,
            max_in_flight_per_lane=spec.max_in_flight_per_lane,
            drain_timeout=spec.drain_timeout_s,
            backoff=RetryBackoff(initial_s=spec.retry_initial_s, max_s=spec.retry_max_s),
            client_id=self._name,
        )
        self._stopped = False
        # Async actors run __init__ on their event loop, so the start can begin right away.
        self._starting: asyncio.Task[None] = asyncio.get_event_loop().create_task(self._start())

    async def _start(self) -> None:
        backoff = RetryBackoff()
        attempt = 0
        if self._routes is not None:
            await self._routes.warm_up()
        while not self._stopped:
            try:
                await self._consumer.start()
                log.info("%s: consuming %s as group %s", self._name, self._spec.topic, self._spec.group_id)
                return
            except Exception as err:
                attempt += 1
                delay = backoff.delay(attempt)
                log.warning("%s: cannot start consuming (%s); retrying in %.0fs", self._name, err, delay)
                await asyncio.sleep(delay)

    async def start(self) -> bool:
        """Wait until the consumer has joined its group (it starts on its own at creation)."""
        await asyncio.shield(self._starting)
        return self._consumer.running

    async def stop(self) -> None:
        """Drain in-flight records, commit, leave the group."""
        self._stopped = True
        if not self._starting.done():
            self._starting.cancel()
        await self._consumer.stop()

    async def stats(self) -> ConsumerStats:
        return self._consumer.stats()

    async def lag(self) -> dict[int, int]:
        """Uncommitted records per assigned partition (fetch high-watermark based)."""
        return self._consumer.lag()

    async def routing(self) -> RoutingStats | None:
        """Calls in flight to the pool's workers (``None`` when not routing to workers directly)."""
        return self._routes.stats() if self._routes is not None else None


def create_consumer_actor(
    cfg: KafkaConfig,
    spec: ConsumerSpec,
    target: Any,
    index: int,
    *,
    namespace: str | None = None,
    **options: Any,
) -> Any:
    """Create (or get, if it already runs) consumer actor ``consumer-<topic>-<index>`` feeding
    ``target`` (an actor name — preferred, see :class:`RecordForwarder` — or handle) in
    ``namespace``.  Extra Ray ``options`` (e.g. ``resources``, ``lifetime``) override the defaults."""
    name = consumer_actor_name(spec.topic, index)
    return ConsumerActor.options(  # type: ignore[attr-defined]
        name=name, namespace=namespace, get_if_exists=True, **options
    ).remote(cfg, spec, target, name, namespace)
