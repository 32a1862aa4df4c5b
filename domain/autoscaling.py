"""The pool autoscaling policy: pure, deterministic, unit-tested without Ray.

Inputs are the live signals of one pool (consumer lag, queue depth, busy ratio, actor CPU) and the
pool's :class:`~domain.topology.ScalingPolicySpec`; the output is a target size with a reason.
The same function drives the live controller (:mod:`cluster.autoscaler`) and the simulator, so a
policy tuned offline behaves the same in production.

Rules:

* Signals are smoothed with an exponentially weighted moving average, so one noisy sample
  neither starts nor resets a timer.
* **Up** when any smoothed signal is above its high threshold continuously for
  ``upscale_delay_s``: grow in proportion to the worst pressure, at most ``max_step_up`` at once.
* **Down** only when *every* smoothed signal is below ``low_fraction`` of its threshold
  continuously for ``downscale_delay_s`` (hysteresis band between low and high), one
  ``max_step_down`` step at a time.
* After any change both timers restart (cool-down), and the target is clamped to ``[min, max]``;
  a pool outside its bounds is brought back at once.
"""

from __future__ import annotations

import math
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from domain.topology import ScalingPolicySpec


class Direction(StrEnum):
    UP = "up"
    DOWN = "down"
    HOLD = "hold"


class PoolSignals(BaseModel):
    """One observation of a pool."""

    model_config = ConfigDict(frozen=True)

    size: int = Field(ge=0)
    lag: int = Field(default=0, ge=0)
    queue_depth: int = Field(default=0, ge=0)
    busy_ratio: float = Field(default=0.0, ge=0)
    cpu: float = Field(default=0.0, ge=0)


class PolicyState(BaseModel):
    """What the policy remembers between observations (smoothed signals and timers)."""

    model_config = ConfigDict(frozen=True)

    lag: float | None = None
    queue_depth: float | None = None
    busy_ratio: float | None = None
    cpu: float | None = None
    above_since: float | None = None
    below_since: float | None = None
    last_change_at: float | None = None


class Decision(BaseModel):
    model_config = ConfigDict(frozen=True)

    target: int
    direction: Direction
    reason: str
    pressure: float = 0.0


SMOOTHING = 0.5  # EWMA weight of the newest sample


def _ewma(previous: float | None, sample: float) -> float:
    return sample if previous is None else SMOOTHING * sample + (1 - SMOOTHING) * previous


def pressure(
    spec: ScalingPolicySpec, lag: float, queue_depth: float, busy_ratio: float, cpu: float
) -> tuple[float, str]:
    """The worst signal relative to its threshold (1.0 = at threshold) and which one it is."""
    ratios = {
        "consumer lag": lag / spec.lag_high,
        "queue depth": queue_depth / spec.queue_depth_high,
        "busy ratio": busy_ratio / spec.busy_high,
        "cpu": cpu / spec.cpu_high,
    }
    name = max(ratios, key=lambda k: ratios[k])
    return ratios[name], name


def decide(
    spec: ScalingPolicySpec,
    min_size: int,
    max_size: int,
    signals: PoolSignals,
    state: PolicyState,
    now: float,
) -> tuple[Decision, PolicyState]:
    """Decide the pool's target size for this observation; return the decision and the new state."""
    lag = _ewma(state.lag, signals.lag)
    queue = _ewma(state.queue_depth, signals.queue_depth)
    busy = _ewma(state.busy_ratio, signals.busy_ratio)
    cpu = _ewma(state.cpu, signals.cpu)
    worst, name = pressure(spec, lag, queue, busy, cpu)
    smoothed = state.model_copy(update={"lag": lag, "queue_depth": queue, "busy_ratio": busy, "cpu": cpu})
    size = signals.size

    if size < min_size or size > max_size:
        target = min(max(size, min_size), max_size)
        direction = Direction.UP if target > size else Direction.DOWN
        reason = f"size {size} outside bounds [{min_size}, {max_size}]"
        return (
            Decision(target=target, direction=direction, reason=reason, pressure=worst),
            smoothed.model_copy(update={"above_since": None, "below_since": None, "last_change_at": now}),
        )

    if worst > 1.0:
        above_since = state.above_since if state.above_since is not None else now
        held = now - above_since
        if held >= spec.upscale_delay_s and size < max_size:
            wanted = max(size + 1, math.ceil(max(size, 1) * worst))
            target = min(size + spec.max_step_up, wanted, max_size)
            reason = (
                f"{name} at {worst:.2f}x its threshold for {held:.0f}s "
                f"(>= {spec.upscale_delay_s:.0f}s): {size} -> {target}"
            )
            return (
                Decision(target=target, direction=Direction.UP, reason=reason, pressure=worst),
                smoothed.model_copy(update={"above_since": None, "below_since": None, "last_change_at": now}),
            )
        reason = (
            f"{name} at {worst:.2f}x its threshold for {held:.0f}s, waiting {spec.upscale_delay_s:.0f}s"
            if size < max_size
            else f"{name} at {worst:.2f}x its threshold but already at max {max_size}"
        )
        return (
            Decision(target=size, direction=Direction.HOLD, reason=reason, pressure=worst),
            smoothed.model_copy(update={"above_since": above_since, "below_since": None}),
        )

    if worst < spec.low_fraction:
        below_since = state.below_since if state.below_since is not None else now
        held = now - below_since
        if held >= spec.downscale_delay_s and size > min_size:
            target = max(size - spec.max_step_down, min_size)
            reason = (
                f"every signal below {spec.low_fraction:.0%} of its threshold for {held:.0f}s "
                f"(>= {spec.downscale_delay_s:.0f}s): {size} -> {target}"
            )
            return (
                Decision(target=target, direction=Direction.DOWN, reason=reason, pressure=worst),
                smoothed.model_copy(update={"above_since": None, "below_since": None, "last_change_at": now}),
            )
        reason = (
            f"idle for {held:.0f}s, waiting {spec.downscale_delay_s:.0f}s"
            if size > min_size
            else f"idle at min {min_size}"
        )
        return (
            Decision(target=size, direction=Direction.HOLD, reason=reason, pressure=worst),
            smoothed.model_copy(update={"above_since": None, "below_since": below_since}),
        )

    return (
        Decision(
            target=size,
            direction=Direction.HOLD,
            reason=f"{name} at {worst:.2f}x its threshold: inside the hysteresis band",
            pressure=worst,
        ),
        smoothed.model_copy(update={"above_since": None, "below_since": None}),
    )
