"""The pool autoscaler controller (:class:`cluster.autoscaler.PoolAutoscaler`) with fake pools and
consumer groups: what it reads, when it resizes, what it remembers for ``autoscaler explain``."""

from __future__ import annotations

import pytest

from actors.pool import PoolStatus
from cluster.autoscaler import PoolAutoscaler, PoolExplanation
from domain.autoscaling import Direction
from domain.errors import Unavailable
from domain.topology import ClusterSpec, PoolSpec, ScalingPolicySpec

POLICY = ScalingPolicySpec(lag_high=100, queue_depth_high=50, cpu_high=0.7, busy_high=0.8, low_fraction=0.3,
                           upscale_delay_s=4, downscale_delay_s=10, max_step_up=2, max_step_down=1)


def cluster_spec() -> ClusterSpec:
    return ClusterSpec(pools={
        "scheduler": PoolSpec(resource_class="low", min_actors=1, max_actors=2),
        "execution-worker": PoolSpec(resource_class="high", min_actors=1, max_actors=4, topic="jobs",
                                     consumer_group="execution-worker", consumers=2, scaling=POLICY),
    })


class FakePools:
    """Pool managers that resize at once (workers ready immediately) unless told to fail."""

    def __init__(self, sizes: dict[str, int]) -> None:
        self.sizes = dict(sizes)
        self.busy: dict[str, int] = {}
        self.queue: dict[str, int] = {}
        self.resizes: list[tuple[str, int]] = []
        self.fail_resize = False
        self.broken: set[str] = set()

    async def stats(self, pool: str) -> PoolStatus | None:
        if pool in self.broken:
            raise Unavailable(f"{pool}-pool does not answer")
        if pool not in self.sizes:
            return None
        size = self.sizes[pool]
        return PoolStatus(pool=pool, worker_class="x:Y", size=size, starting=0, draining=0, target=size,
                          busy=self.busy.get(pool, 0), queue_depth=self.queue.get(pool, 0), in_flight=0,
                          max_in_flight=8, handled=0, failed=0)

    async def resize(self, pool: str, size: int) -> int:
        if self.fail_resize:
            raise Unavailable("pool manager restarting")
        self.resizes.append((pool, size))
        self.sizes[pool] = size
        return size


class FakeLags:
    def __init__(self) -> None:
        self.by_partition: dict[int, int] | None = {0: 0, 1: 0}

    async def lag(self, pool: str, spec: PoolSpec) -> dict[int, int] | None:
        return self.by_partition


class FixedCpu:
    def __init__(self, value: float | None) -> None:
        self.value = value

    async def cpu(self, pool: str, spec: PoolSpec, status: PoolStatus) -> float | None:
        return self.value


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def run_ticks(scaler: PoolAutoscaler, clock: Clock, seconds: int) -> list[PoolExplanation]:
    """One step per second; return the execution pool's explanations."""
    out = []
    for _ in range(seconds):
        out += [e for e in await scaler.step() if e.pool == "execution-worker"]
        clock.now += 1.0
    return out


async def test_lag_above_threshold_grows_the_pool_after_the_upscale_delay(clock: Clock) -> None:
    pools, lags = FakePools({"execution-worker": 1}), FakeLags()
    lags.by_partition = {0: 400, 1: 400}
    scaler = PoolAutoscaler(cluster_spec(), pools, lags, FixedCpu(0.1), clock=clock)
    explained = await run_ticks(scaler, clock, 6)
    assert pools.resizes == [("execution-worker", 3)]
    first_up = next(e for e in explained if e.applied)
    assert first_up.decision is not None and first_up.decision.direction is Direction.UP
    assert first_up.signals is not None and first_up.signals.lag == 800
    assert first_up.lag_by_partition == {0: 400, 1: 400}
    assert "consumer lag" in first_up.decision.reason
    assert explained.index(first_up) == 4


async def test_an_idle_pool_shrinks_one_step_after_the_downscale_delay(clock: Clock) -> None:
    pools = FakePools({"execution-worker": 3})
    scaler = PoolAutoscaler(cluster_spec(), pools, FakeLags(), FixedCpu(0.0), clock=clock)
    await run_ticks(scaler, clock, 12)
    assert pools.resizes == [("execution-worker", 2)]


async def test_hold_decisions_never_resize(clock: Clock) -> None:
    pools, lags = FakePools({"execution-worker": 2}), FakeLags()
    lags.by_partition = {0: 30, 1: 30}  # 60 % of lag_high: inside the hysteresis band
    scaler = PoolAutoscaler(cluster_spec(), pools, lags, FixedCpu(0.3), clock=clock)
    explained = await run_ticks(scaler, clock, 30)
    assert pools.resizes == []
    assert all(e.decision is not None and e.decision.direction is Direction.HOLD for e in explained)
    assert not any(e.applied for e in explained)


async def test_a_pool_without_a_manager_is_reported_and_left_alone(clock: Clock) -> None:
    pools = FakePools({"execution-worker": 1})
    scaler = PoolAutoscaler(cluster_spec(), pools, FakeLags(), FixedCpu(0.0), clock=clock)
    await scaler.step()
    scheduler = next(e for e in scaler.explain() if e.pool == "scheduler")
    assert scheduler.managed is False
    assert "scheduler-pool" in scheduler.note
    assert scheduler.decision is None
    assert all(pool != "scheduler" for pool, _ in pools.resizes)


async def test_a_failing_resize_is_retried_on_the_next_tick(clock: Clock) -> None:
    pools, lags = FakePools({"execution-worker": 1}), FakeLags()
    lags.by_partition = {0: 1000}
    scaler = PoolAutoscaler(cluster_spec(), pools, lags, FixedCpu(0.0), clock=clock)
    pools.fail_resize = True
    explained = await run_ticks(scaler, clock, 5)
    failed = explained[-1]
    assert not failed.applied and "resize to 3 failed" in failed.note
    pools.fail_resize = False
    explained = await run_ticks(scaler, clock, 1)
    assert explained[-1].applied
    assert pools.resizes == [("execution-worker", 3)]


async def test_a_broken_pool_does_not_stop_the_others(clock: Clock) -> None:
    pools, lags = FakePools({"execution-worker": 1, "scheduler": 1}), FakeLags()
    pools.broken.add("scheduler")
    lags.by_partition = {0: 1000}
    scaler = PoolAutoscaler(cluster_spec(), pools, lags, FixedCpu(0.0), clock=clock)
    await run_ticks(scaler, clock, 6)
    assert ("execution-worker", 3) in pools.resizes
    scheduler = next(e for e in scaler.explain() if e.pool == "scheduler")
    assert not scheduler.managed and "observation failed" in scheduler.note


async def test_busy_ratio_stands_in_for_unreadable_cpu_and_says_so(clock: Clock) -> None:
    pools = FakePools({"execution-worker": 4})
    pools.busy["execution-worker"] = 3
    scaler = PoolAutoscaler(cluster_spec(), pools, FakeLags(), FixedCpu(None), clock=clock)
    [explained] = await run_ticks(scaler, clock, 1)
    assert explained.cpu_measured is False
    assert explained.signals is not None and explained.signals.cpu == pytest.approx(0.75)
    assert "busy ratio stands in" in explained.note

    measured = PoolAutoscaler(cluster_spec(), pools, FakeLags(), FixedCpu(0.2), clock=clock)
    [explained] = await run_ticks(measured, clock, 1)
    assert explained.cpu_measured is True
    assert explained.signals is not None and explained.signals.cpu == pytest.approx(0.2)


async def test_unreachable_consumers_count_as_no_lag_and_are_noted(clock: Clock) -> None:
    pools, lags = FakePools({"execution-worker": 1}), FakeLags()
    lags.by_partition = None
    scaler = PoolAutoscaler(cluster_spec(), pools, lags, FixedCpu(0.0), clock=clock)
    [explained] = await run_ticks(scaler, clock, 1)
    assert explained.signals is not None and explained.signals.lag == 0
    assert "consumer lag unavailable" in explained.note


async def test_queue_depth_grows_a_pool_without_lag(clock: Clock) -> None:
    pools = FakePools({"execution-worker": 2})
    pools.queue["execution-worker"] = 200
    scaler = PoolAutoscaler(cluster_spec(), pools, FakeLags(), FixedCpu(0.0), clock=clock)
    await run_ticks(scaler, clock, 6)
    assert pools.resizes and pools.resizes[0][1] > 2


async def test_every_managed_decision_reaches_the_sink_and_explain_keeps_the_last(clock: Clock) -> None:
    pools = FakePools({"execution-worker": 1})
    seen: list[PoolExplanation] = []
    scaler = PoolAutoscaler(cluster_spec(), pools, FakeLags(), FixedCpu(0.0), clock=clock,
                            on_decision=seen.append)
    await run_ticks(scaler, clock, 3)
    assert [e.pool for e in seen] == ["execution-worker"] * 3
    last = {e.pool: e for e in scaler.explain()}
    assert last["execution-worker"] == seen[-1]
    assert last["execution-worker"].state is not None and last["execution-worker"].state.lag == 0.0


async def test_a_pool_outside_its_bounds_is_brought_back_at_once(clock: Clock) -> None:
    pools = FakePools({"execution-worker": 0})
    scaler = PoolAutoscaler(cluster_spec(), pools, FakeLags(), FixedCpu(0.0), clock=clock)
    await run_ticks(scaler, clock, 1)
    assert pools.resizes == [("execution-worker", 1)]
