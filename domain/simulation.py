"""A discrete-time queue model of one consumer-fed actor pool, driven by :func:`domain.autoscaling.decide`.

Used by ``chronoverse autoscaler simulate`` to tune a policy before production.  Each tick:
jobs arrive at the trace's rate into the topic (consumer lag); every *ready* actor serves up to
``slots / job_duration`` jobs per second; the policy observes lag, busy ratio and CPU and may
resize the pool; new actors become ready after ``startup_s`` (actor start + possibly a node
launch), removed actors leave at once (drain is modelled as instantaneous).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from domain.autoscaling import Decision, Direction, PolicyState, PoolSignals, decide
from domain.topology import ScalingPolicySpec


class TracePoint(BaseModel):
    """From ``t_s`` on, jobs arrive at ``jobs_per_s`` and each takes ``job_duration_s``."""

    model_config = ConfigDict(frozen=True)

    t_s: float = Field(ge=0)
    jobs_per_s: float = Field(ge=0)
    job_duration_s: float = Field(gt=0)


class Tick(BaseModel):
    t: float
    offered: float
    served: float
    lag: float
    size: int
    ready: int
    busy_ratio: float
    decision: Direction
    reason: str


class SimulationSummary(BaseModel):
    pool: str
    duration_s: float
    jobs_offered: float
    jobs_served: float
    final_lag: float
    max_lag: float
    time_above_lag_threshold_s: float
    actor_seconds: float
    max_size: int
    scale_ups: int
    scale_downs: int


class SimulationResult(BaseModel):
    ticks: list[Tick]
    summary: SimulationSummary


def _segment(trace: list[TracePoint], t: float) -> TracePoint:
    current = trace[0]
    for point in trace:
        if point.t_s <= t:
            current = point
        else:
            break
    return current


def simulate(
    pool: str,
    spec: ScalingPolicySpec,
    min_size: int,
    max_size: int,
    slots_per_actor: int,
    trace: list[TracePoint],
    *,
    tail_s: float = 180.0,
    startup_s: float = 3.0,
    dt: float = 1.0,
) -> SimulationResult:
    """Replay ``trace`` (then ``tail_s`` seconds of silence) through the policy and the queue model."""
    if not trace:
        raise ValueError("trace is empty")
    trace = sorted(trace, key=lambda p: p.t_s)
    end = trace[-1].t_s + tail_s
    state = PolicyState()
    size = max(min_size, 1) if min_size > 0 else 0
    ready_at: list[float] = [0.0] * size  # time each actor becomes ready
    lag = 0.0
    ticks: list[Tick] = []
    offered_total = served_total = actor_seconds = time_above = max_lag = 0.0
    ups = downs = 0
    peak = size
    t = 0.0
    while t < end:
        point = (
            _segment(trace, t)
            if t <= trace[-1].t_s
            else TracePoint(t_s=t, jobs_per_s=0, job_duration_s=trace[-1].job_duration_s)
        )
        offered = point.jobs_per_s * dt
        lag += offered
        ready = sum(1 for r in ready_at if r <= t)
        capacity = ready * slots_per_actor / point.job_duration_s * dt
        served = min(lag, capacity)
        lag -= served
        busy = served / capacity if capacity > 0 else (1.0 if lag > 0 else 0.0)
        signals = PoolSignals(size=size, lag=int(lag), busy_ratio=busy, cpu=busy)
        decision: Decision
        decision, state = decide(spec, min_size, max_size, signals, state, t)
        if decision.target > size:
            ready_at.extend([t + startup_s] * (decision.target - size))
            ups += 1
        elif decision.target < size:
            # Drain the newest actors first (they may not even be ready yet).
            ready_at = sorted(ready_at)[: decision.target]
            downs += 1
        size = decision.target
        peak = max(peak, size)
        offered_total += offered
        served_total += served
        actor_seconds += size * dt
        max_lag = max(max_lag, lag)
        if lag > spec.lag_high:
            time_above += dt
        ticks.append(
            Tick(
                t=t,
                offered=offered / dt,
                served=served / dt,
                lag=lag,
                size=size,
                ready=ready,
                busy_ratio=busy,
                decision=decision.direction,
                reason=decision.reason,
            )
        )
        t += dt
    summary = SimulationSummary(
        pool=pool,
        duration_s=end,
        jobs_offered=offered_total,
        jobs_served=served_total,
        final_lag=lag,
        max_lag=max_lag,
        time_above_lag_threshold_s=time_above,
        actor_seconds=actor_seconds,
        max_size=peak,
        scale_ups=ups,
        scale_downs=downs,
    )
    return SimulationResult(ticks=ticks, summary=summary)
