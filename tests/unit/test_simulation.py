"""The pool queue model: a burst grows the pool, lag drains, the pool shrinks back."""

from __future__ import annotations

from domain.autoscaling import Direction
from domain.simulation import TracePoint, simulate
from domain.topology import ScalingPolicySpec

SPEC = ScalingPolicySpec(lag_high=1000, upscale_delay_s=5, downscale_delay_s=30, max_step_up=2)


def test_burst_grows_the_pool_then_drains_and_shrinks() -> None:
    trace = [TracePoint(t_s=0, jobs_per_s=50, job_duration_s=1.0),
             TracePoint(t_s=30, jobs_per_s=400, job_duration_s=1.0),
             TracePoint(t_s=90, jobs_per_s=20, job_duration_s=1.0)]
    result = simulate("execution-worker", SPEC, 1, 6, 64, trace, tail_s=200)
    s = result.summary
    assert s.max_size > 1
    assert s.scale_ups >= 1 and s.scale_downs >= 1
    assert s.final_lag == 0
    assert result.ticks[-1].size == 1
    assert abs(s.jobs_offered - s.jobs_served) < 1e-6


def test_steady_load_within_capacity_never_scales() -> None:
    trace = [TracePoint(t_s=0, jobs_per_s=10, job_duration_s=0.5), TracePoint(t_s=300, jobs_per_s=10,
                                                                               job_duration_s=0.5)]
    result = simulate("execution-worker", SPEC, 1, 4, 32, trace, tail_s=10)
    assert all(t.decision is Direction.HOLD for t in result.ticks)
    assert result.summary.max_lag == 0
