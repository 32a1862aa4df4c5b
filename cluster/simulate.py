"""``chronoverse autoscaler simulate``: replay a load trace through a pool's policy and plot it."""

from __future__ import annotations

import csv
from pathlib import Path

from domain.simulation import SimulationResult, TracePoint, simulate
from domain.topology import ClusterSpec


class TraceError(Exception):
    """The trace file is missing or malformed; the message names the file and the line."""


def read_trace(path: str | Path) -> list[TracePoint]:
    """Read a CSV with the header ``t_s,jobs_per_s,job_duration_s`` (piecewise-constant load)."""
    file = Path(path)
    points: list[TracePoint] = []
    try:
        with file.open(newline="") as handle:
            reader = csv.DictReader(handle)
            missing = {"t_s", "jobs_per_s", "job_duration_s"} - set(reader.fieldnames or [])
            if missing:
                raise TraceError(
                    f"{file}: missing columns {sorted(missing)} (need t_s,jobs_per_s,job_duration_s)"
                )
            for line_no, row in enumerate(reader, start=2):
                try:
                    points.append(
                        TracePoint(
                            t_s=float(row["t_s"]),
                            jobs_per_s=float(row["jobs_per_s"]),
                            job_duration_s=float(row["job_duration_s"]),
                        )
                    )
                except (ValueError, TypeError) as err:
                    raise TraceError(f"{file}:{line_no}: {err}") from None
    except FileNotFoundError:
        raise TraceError(f"trace file not found: {file}") from None
    if not points:
        raise TraceError(f"{file}: no rows")
    return points


def run(
    spec: ClusterSpec, pool: str, trace: list[TracePoint], *, startup_s: float = 3.0, tail_s: float = 180.0
) -> SimulationResult:
    if pool not in spec.pools:
        raise TraceError(f"unknown pool {pool!r}; the cluster file has {', '.join(sorted(spec.pools))}")
    p = spec.pools[pool]
    return simulate(
        pool,
        p.scaling,
        p.min_actors,
        p.max_actors,
        p.max_in_flight,
        trace,
        startup_s=startup_s,
        tail_s=tail_s,
    )


def plot(result: SimulationResult, lag_threshold: int, out: str | Path) -> None:
    """Write a PNG timeline: offered/served load, consumer lag, pool size with decisions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [tick.t for tick in result.ticks]
    fig, (ax_load, ax_lag, ax_size) = plt.subplots(3, 1, sharex=True, figsize=(10, 8))
    ax_load.plot(t, [x.offered for x in result.ticks], label="offered jobs/s")
    ax_load.plot(t, [x.served for x in result.ticks], label="served jobs/s", alpha=0.8)
    ax_load.set_ylabel("jobs/s")
    ax_load.legend(loc="upper right")
    ax_lag.plot(t, [x.lag for x in result.ticks], color="tab:red", label="consumer lag")
    ax_lag.axhline(lag_threshold, color="grey", linestyle="--", label=f"lag_high={lag_threshold}")
    ax_lag.set_ylabel("messages")
    ax_lag.legend(loc="upper right")
    ax_size.step(t, [x.size for x in result.ticks], where="post", label="target actors")
    ax_size.step(t, [x.ready for x in result.ticks], where="post", label="ready actors", alpha=0.7)
    ups = [x for x in result.ticks if x.decision == "up"]
    downs = [x for x in result.ticks if x.decision == "down"]
    ax_size.scatter(
        [x.t for x in ups], [x.size for x in ups], marker="^", color="tab:green", label="scale up"
    )
    ax_size.scatter(
        [x.t for x in downs], [x.size for x in downs], marker="v", color="tab:orange", label="scale down"
    )
    ax_size.set_ylabel("actors")
    ax_size.set_xlabel("seconds")
    ax_size.legend(loc="upper right")
    s = result.summary
    fig.suptitle(
        f"{s.pool}: max lag {s.max_lag:.0f}, {s.time_above_lag_threshold_s:.0f}s above threshold, "
        f"{s.actor_seconds:.0f} actor-seconds"
    )
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
