"""The pool autoscaling policy: thresholds, delays, hysteresis, bounds, no flapping."""

from __future__ import annotations

import itertools
import random

from domain.autoscaling import Direction, PolicyState, PoolSignals, decide
from domain.topology import ScalingPolicySpec

SPEC = ScalingPolicySpec(lag_high=1000, queue_depth_high=100, cpu_high=0.7, busy_high=0.8,
                         low_fraction=0.3, upscale_delay_s=5, downscale_delay_s=60,
                         max_step_up=2, max_step_down=1)


def run(samples: list[PoolSignals], *, start: float = 0.0, step: float = 1.0,
        min_size: int = 1, max_size: int = 8, spec: ScalingPolicySpec = SPEC):
    """Feed samples one second apart, applying each decision to the size; return the decisions."""
    state = PolicyState()
    size = samples[0].size
    decisions = []
    for i, sample in enumerate(samples):
        decision, state = decide(spec, min_size, max_size, sample.model_copy(update={"size": size}), state,
                                 start + i * step)
        decisions.append(decision)
        size = decision.target
    return decisions


def test_lag_above_threshold_scales_up_only_after_the_upscale_delay() -> None:
    decisions = run([PoolSignals(size=1, lag=5000)] * 8)
    first_up = next(i for i, d in enumerate(decisions) if d.direction is Direction.UP)
    assert first_up == 5
    assert all(d.direction is Direction.HOLD for d in decisions[:5])
    assert "consumer lag" in decisions[first_up].reason


def test_scale_up_is_limited_by_the_step_and_the_max() -> None:
    decisions = run([PoolSignals(size=1, lag=50_000)] * 30, max_size=4)
    sizes = [d.target for d in decisions]
    assert max(b - a for a, b in itertools.pairwise(sizes)) <= SPEC.max_step_up
    assert sizes[-1] == 4
    assert max(sizes) == 4


def test_queue_depth_and_cpu_are_triggers_too() -> None:
    assert run([PoolSignals(size=2, queue_depth=500)] * 7)[-1].target > 2
    assert run([PoolSignals(size=2, cpu=0.95)] * 7)[-1].target > 2


def test_idle_pool_scales_down_one_step_after_the_downscale_delay() -> None:
    decisions = run([PoolSignals(size=4, lag=0)] * 62)
    downs = [i for i, d in enumerate(decisions) if d.direction is Direction.DOWN]
    assert downs == [60]
    assert decisions[60].target == 3


def test_never_below_min_or_above_max() -> None:
    decisions = run([PoolSignals(size=2)] * 400, min_size=2)
    assert min(d.target for d in decisions) == 2
    out_of_bounds = decide(SPEC, 1, 3, PoolSignals(size=6), PolicyState(), 0.0)[0]
    assert out_of_bounds.target == 3 and out_of_bounds.direction is Direction.DOWN
    below = decide(SPEC, 2, 3, PoolSignals(size=0), PolicyState(), 0.0)[0]
    assert below.target == 2 and below.direction is Direction.UP


def test_signal_inside_the_hysteresis_band_holds() -> None:
    # 50 % of the lag threshold: neither above it nor below the 30 % low-water mark.
    decisions = run([PoolSignals(size=3, lag=500)] * 200)
    assert {d.target for d in decisions} == {3}


def test_noisy_signal_around_the_threshold_does_not_flap() -> None:
    rng = random.Random(7)
    samples = [PoolSignals(size=3, lag=max(0, int(rng.gauss(700, 250)))) for _ in range(600)]
    decisions = run(samples)
    changes = [d for d in decisions if d.direction is not Direction.HOLD]
    assert len(changes) <= 1


def test_a_change_restarts_the_timers() -> None:
    decisions = run([PoolSignals(size=1, lag=50_000)] * 20, max_size=8)
    ups = [i for i, d in enumerate(decisions) if d.direction is Direction.UP]
    assert ups[0] == 5
    assert all(b - a >= 6 for a, b in itertools.pairwise(ups))


def test_every_decision_has_a_reason() -> None:
    for d in run([PoolSignals(size=1, lag=lag) for lag in (0, 3000, 3000, 0, 600)]):
        assert d.reason
