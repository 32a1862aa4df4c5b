"""The pool autoscaler: every few seconds, for every pool of the cluster file, read its live signals,
ask :func:`domain.autoscaling.decide` for a target size and resize the pool (ADR 0002).

* :class:`PoolAutoscaler` is the plain controller (unit-tested with fake adapters, no Ray).  It
  reads a pool through three small interfaces: :class:`PoolControl` (the pool manager's
  ``stats()``/``resize(n)``), :class:`LagSource` (the consumer group's lag per partition) and
  :class:`CpuSource` (the workers' process CPU).  It keeps, per pool, the policy state and the last
  :class:`PoolExplanation` (inputs + decision) for ``chronoverse autoscaler explain``.
* :class:`PoolAutoscalerActor` is the thin Ray shell, the detached actor ``pool-autoscaler``: it
  wires the Ray adapters (:class:`RayPools`, :class:`RayLags`, :class:`ProcessCpu`), runs the loop,
  logs every decision with its reason and exports metrics (decisions by direction, target size,
  pressure, consumer lag per group/partition).

The size the policy sees is the pool's *target* (what was last asked for), not the routable count:
workers that wait for a node are already paid for, and counting them as missing would grow the
pool again on every tick while a node launches.  Scale-down is the pool's business: ``resize``
drains (a draining worker takes no new work, finishes or hands back its jobs, then exits).

Actor CPU: a worker's process CPU (``psutil``) divided by its CPU reservation, averaged over the
pool — measurable for workers on this controller's machine (every node of the local fake
cluster).  Where no worker's CPU can be read (remote nodes), the pool's busy ratio stands in for it
and the explanation says so (``cpu_measured: false``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from actors.pool import PoolStatus, pool_manager_name, worker_name
from domain.autoscaling import Decision, Direction, PolicyState, PoolSignals, decide
from domain.errors import Unavailable
from domain.topology import ClusterSpec, PoolSpec

log = logging.getLogger(__name__)

#: The controller actor's name (one per namespace).
AUTOSCALER_ACTOR_NAME = "pool-autoscaler"
#: Seconds between two observations of every pool.
DEFAULT_INTERVAL_S = 2.0
#: How long one pool/consumer call may take before the pool is skipped for this tick.
CALL_TIMEOUT_S = 5.0
#: Logical CPUs of the controller: it only reads stats and sends resize calls.
AUTOSCALER_NUM_CPUS = 0.05


# -- what the controller reads through ----------------------------------------------------------


class PoolControl(Protocol):
    """A pool manager: its status and its size."""

    async def stats(self, pool: str) -> PoolStatus | None:
        """The pool's status, or ``None`` when the pool has no manager (fixed replicas, not started)."""
        ...

    async def resize(self, pool: str, size: int) -> int:
        """Ask the pool for ``size`` workers; returns the new target."""
        ...


class LagSource(Protocol):
    """A consumer group's uncommitted records per partition."""

    async def lag(self, pool: str, spec: PoolSpec) -> dict[int, int] | None:
        """Lag per partition of the pool's group, or ``None`` when no member could be asked."""
        ...


class CpuSource(Protocol):
    """The mean CPU of a pool's workers as a fraction of their CPU reservation."""

    async def cpu(self, pool: str, spec: PoolSpec, status: PoolStatus) -> float | None:
        """``None`` when no worker's CPU can be read."""
        ...


# -- what the controller remembers ---------------------------------------------------------------


class PoolExplanation(BaseModel):
    """The last observation and decision for one pool (``chronoverse autoscaler explain``)."""

    model_config = ConfigDict(frozen=True)

    pool: str
    observed_at: datetime
    managed: bool
    note: str = ""
    min_actors: int
    max_actors: int
    signals: PoolSignals | None = None
    lag_by_partition: dict[int, int] = {}
    cpu_measured: bool = False
    ready: int = 0
    starting: int = 0
    draining: int = 0
    state: PolicyState | None = None
    decision: Decision | None = None
    applied: bool = False


class PoolAutoscaler:
    """Observes every pool of ``spec``, decides with the pure policy and resizes (see module doc)."""

    def __init__(
        self,
        spec: ClusterSpec,
        pools: PoolControl,
        lags: LagSource,
        cpu: CpuSource | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_decision: Callable[[PoolExplanation], None] | None = None,
    ) -> None:
        self.spec = spec
        self._pools = pools
        self._lags = lags
        self._cpu = cpu
        self._clock = clock
        self._on_decision = on_decision
        self._states: dict[str, PolicyState] = {name: PolicyState() for name in spec.pools}
        self._last: dict[str, PoolExplanation] = {}

    async def step(self) -> list[PoolExplanation]:
        """Observe and decide for every pool once (a failing pool never stops the others)."""
        out = []
        for name, pool in self.spec.pools.items():
            try:
                explanation = await self._step_pool(name, pool)
            except Exception as err:  # one broken pool must not freeze the autoscaling of the rest
                log.warning("autoscaler: %s: observation failed: %s", name, err)
                explanation = self._unmanaged(name, pool, f"observation failed: {err}")
            self._last[name] = explanation
            out.append(explanation)
        return out

    def explain(self) -> list[PoolExplanation]:
        """The last explanation of every pool (in the cluster file's order)."""
        return [self._last[name] for name in self.spec.pools if name in self._last]

    def _unmanaged(self, name: str, pool: PoolSpec, note: str) -> PoolExplanation:
        return PoolExplanation(pool=name, observed_at=datetime.now(UTC), managed=False, note=note,
                               min_actors=pool.min_actors, max_actors=pool.max_actors)

    async def _step_pool(self, name: str, pool: PoolSpec) -> PoolExplanation:
        status = await self._pools.stats(name)
        if status is None:
            return self._unmanaged(name, pool, f"no pool manager {pool_manager_name(name)!r} "
                                   "(fixed replicas or not started): not autoscaled")
        notes: list[str] = []
        lag_by_partition: dict[int, int] = {}
        if pool.topic is not None:
            found = await self._lags.lag(name, pool)
            if found is None:
                notes.append("consumer lag unavailable (no consumer answered): counted as 0")
            else:
                lag_by_partition = found
        busy_ratio = status.busy / status.size if status.size else 0.0
        cpu = await self._cpu.cpu(name, pool, status) if self._cpu is not None else None
        cpu_measured = cpu is not None
        if cpu is None:
            notes.append("actor CPU unavailable: busy ratio stands in for it")
            cpu = busy_ratio
        signals = PoolSignals(size=status.target, lag=sum(lag_by_partition.values()),
                              queue_depth=status.queue_depth, busy_ratio=busy_ratio, cpu=cpu)
        previous = self._states[name]
        decision, state = decide(pool.scaling, pool.min_actors, pool.max_actors, signals, previous,
                                 self._clock())
        applied = False
        if decision.target != status.target:
            try:
                await self._pools.resize(name, decision.target)
                applied = True
            except Exception as err:
                # Keep the old state: the same evidence decides again on the next tick.
                notes.append(f"resize to {decision.target} failed: {err}")
                state = previous
                log.warning("autoscaler: %s: resize %d -> %d failed: %s", name, status.target,
                            decision.target, err)
        self._states[name] = state
        explanation = PoolExplanation(
            pool=name, observed_at=datetime.now(UTC), managed=True, note="; ".join(notes),
            min_actors=pool.min_actors, max_actors=pool.max_actors, signals=signals,
            lag_by_partition=lag_by_partition, cpu_measured=cpu_measured, ready=status.size,
            starting=status.starting, draining=status.draining, state=state, decision=decision,
            applied=applied,
        )
        level = logging.DEBUG if decision.direction is Direction.HOLD else logging.INFO
        log.log(level, "autoscaler: %s: %s -> %d (%s)%s", name, decision.direction.value, decision.target,
                decision.reason, "" if applied or decision.direction is Direction.HOLD else " [not applied]")
        if self._on_decision is not None:
            self._on_decision(explanation)
        return explanation


# -- Ray adapters ---------------------------------------------------------------------------------


class RayPools:
    """:class:`PoolControl` over the named pool manager actors ``<pool>-pool``."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def _manager(self, pool: str) -> Any | None:
        import ray

        try:
            return ray.get_actor(pool_manager_name(pool), namespace=self.namespace)
        except ValueError:
            return None

    async def stats(self, pool: str) -> PoolStatus | None:
        manager = self._manager(pool)
        if manager is None:
            return None
        status: PoolStatus = await asyncio.wait_for(manager.stats.remote(), CALL_TIMEOUT_S)
        return status

    async def resize(self, pool: str, size: int) -> int:
        manager = self._manager(pool)
        if manager is None:
            raise Unavailable(f"pool manager {pool_manager_name(pool)!r} is gone")
        target: int = await asyncio.wait_for(manager.resize.remote(size), CALL_TIMEOUT_S)
        return target


class RayLags:
    """:class:`LagSource` over the consumer actors ``consumer-<topic>-<i>`` of a pool's group."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    async def lag(self, pool: str, spec: PoolSpec) -> dict[int, int] | None:
        import ray

        from ingest.consumer_actor import consumer_actor_name

        assert spec.topic is not None
        calls: list[Any] = []
        for index in range(spec.consumers):
            try:
                member = ray.get_actor(consumer_actor_name(spec.topic, index), namespace=self.namespace)
            except ValueError:
                continue
            calls.append(asyncio.wait_for(member.lag.remote(), CALL_TIMEOUT_S))
        answers = await asyncio.gather(*calls, return_exceptions=True)
        found = [answer for answer in answers if isinstance(answer, dict)]
        if not found:
            return None
        merged: dict[int, int] = {}
        for partitions in found:  # members of one group own disjoint partitions
            merged.update({int(p): int(v) for p, v in partitions.items()})
        return merged


class ProcessCpu:
    """:class:`CpuSource` from the worker processes' CPU time (``psutil``) on this machine.

    Workers are the named actors ``<pool>-<i>``; their pid and node address come from the GCS actor
    table.  ``psutil``'s CPU percentage is measured between two calls, so a worker's first
    observation primes it and yields nothing.
    """

    def __init__(self, namespace: str, spec: ClusterSpec) -> None:
        self.namespace = namespace
        self.spec = spec
        self._procs: dict[str, dict[int, Any]] = {}

    def _worker_pids(self, pool: str, count: int) -> list[int]:
        import ray
        from ray._private.state import actors as actor_table

        here = ray.util.get_node_ip_address()
        pids: list[int] = []
        for index in range(count):
            try:
                handle = ray.get_actor(worker_name(pool, index), namespace=self.namespace)
            except ValueError:
                continue
            info = actor_table(handle._actor_id.hex())
            local = info.get("Address", {}).get("IPAddress") == here
            if info.get("State") == "ALIVE" and local and info.get("Pid"):
                pids.append(int(info["Pid"]))
        return pids

    def _sample(self, pool: str, pids: list[int]) -> list[float]:
        import psutil

        # Per pool: a pid missing from this pool's list is gone (and must be primed again if it
        # ever comes back), but says nothing about the other pools' workers.
        procs = self._procs.setdefault(pool, {})
        percents = []
        for pid in pids:
            proc = procs.get(pid)
            try:
                if proc is None:
                    proc = procs[pid] = psutil.Process(pid)
                    proc.cpu_percent(None)  # primes the measurement
                    continue
                percents.append(proc.cpu_percent(None))
            except psutil.Error:
                procs.pop(pid, None)
        for gone in set(procs) - set(pids):
            procs.pop(gone, None)
        return percents

    async def cpu(self, pool: str, spec: PoolSpec, status: PoolStatus) -> float | None:
        count = status.size + status.starting + status.draining
        pids = await asyncio.to_thread(self._worker_pids, pool, max(count, status.target))
        percents = self._sample(pool, pids)
        if not percents:
            return None
        reservation = self.spec.pool_class(pool).cpu_reservation or 1.0
        return sum(percents) / len(percents) / 100.0 / reservation


class AutoscalerMetrics:
    """``ray.util.metrics`` of the controller: decisions by direction, target size, pressure, and the
    consumer lag per group/partition it reads (Ray exports them as ``ray_chronoverse_*``)."""

    def __init__(self, spec: ClusterSpec) -> None:
        from ray.util.metrics import Counter, Gauge

        #: pool -> (consumer group, topic), to tag the lag it reads.
        self._groups = {name: (pool.consumer_group, pool.topic) for name, pool in spec.pools.items()
                        if pool.consumer_group is not None and pool.topic is not None}
        self.decisions = Counter("chronoverse_autoscaler_decisions", "Pool autoscaler decisions",
                                 tag_keys=("pool", "direction"))
        self.target = Gauge("chronoverse_autoscaler_target_size", "Pool size the autoscaler asks for",
                            tag_keys=("pool",))
        self.pressure = Gauge("chronoverse_autoscaler_pressure",
                              "Worst smoothed signal relative to its threshold (1 = at threshold)",
                              tag_keys=("pool",))

    def record(self, explanation: PoolExplanation) -> None:
        from actors.metrics import METRICS

        if explanation.decision is None:
            return
        tags = {"pool": explanation.pool}
        self.decisions.inc(1.0, tags={**tags, "direction": explanation.decision.direction.value})
        self.target.set(explanation.decision.target, tags=tags)
        self.pressure.set(explanation.decision.pressure, tags=tags)
        group_topic = self._groups.get(explanation.pool)
        if group_topic is not None:
            group, topic = group_topic
            for partition, lag in explanation.lag_by_partition.items():
                METRICS.consumer_lag(group, topic, partition, lag)


class PoolAutoscalerActor:
    """The Ray shell (``pool-autoscaler``): runs :class:`PoolAutoscaler` every ``interval_s``."""

    def __init__(self, spec: ClusterSpec, namespace: str, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        logging.basicConfig(level=logging.INFO)
        metrics = AutoscalerMetrics(spec)
        self.controller = PoolAutoscaler(spec, RayPools(namespace), RayLags(namespace),
                                         ProcessCpu(namespace, spec), on_decision=metrics.record)
        self.interval_s = interval_s
        self._loop = asyncio.get_event_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.controller.step()
            except Exception:
                log.exception("autoscaler: step failed")
            await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))

    async def ready(self) -> bool:
        return True

    async def explain(self) -> list[dict[str, Any]]:
        """The last explanation of every pool, as JSON-ready dicts."""
        return [e.model_dump(mode="json") for e in self.controller.explain()]

    async def stop(self) -> None:
        self._loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._loop


def start_pool_autoscaler(spec: ClusterSpec, namespace: str, *, interval_s: float = DEFAULT_INTERVAL_S,
                          detached: bool = True) -> Any:
    """Create (or find) the ``pool-autoscaler`` actor in ``namespace`` on the connected cluster."""
    import ray

    options: dict[str, Any] = {"name": AUTOSCALER_ACTOR_NAME, "namespace": namespace, "get_if_exists": True,
                               "num_cpus": AUTOSCALER_NUM_CPUS, "max_restarts": -1}
    if detached:
        options["lifetime"] = "detached"
    return ray.remote(PoolAutoscalerActor).options(**options).remote(spec, namespace, interval_s)


def explain(namespace: str) -> list[dict[str, Any]]:
    """The autoscaler's last decision and its inputs per pool, read from the running actor (needs a
    connected driver).  Raises :class:`~domain.errors.Unavailable` when no autoscaler runs."""
    import ray

    try:
        actor = ray.get_actor(AUTOSCALER_ACTOR_NAME, namespace=namespace)
    except ValueError:
        raise Unavailable(
            f"no pool autoscaler ({AUTOSCALER_ACTOR_NAME!r}) runs in namespace {namespace!r}"
        ) from None
    rows: list[dict[str, Any]] = ray.get(actor.explain.remote(), timeout=30)
    return rows
