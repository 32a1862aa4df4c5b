"""The backbone's metric helpers without Ray: the DB pool sampler reads in-use/size from the pool,
and every recording method is a no-op (never an error) when Ray is not initialised."""

from __future__ import annotations

import asyncio
from typing import Any

from actors.metrics import BackboneMetrics, report_db_pool


class FakePool:
    """The three asyncpg.Pool size methods the sampler uses: 3 of 10 connections checked out."""

    def get_max_size(self) -> int:
        return 10

    def get_size(self) -> int:
        return 5

    def get_idle_size(self) -> int:
        return 2


class Recording(BackboneMetrics):
    def __init__(self) -> None:
        super().__init__()
        self.gauges: list[tuple[str, float, dict[str, str]]] = []

    def _gauge(self, name: str, value: float, tags: dict[str, str]) -> None:
        self.gauges.append((name, value, tags))


async def test_db_pool_sampler_reports_connections_in_use_and_pool_size() -> None:
    metrics = Recording()
    pool: Any = FakePool()
    task = asyncio.create_task(report_db_pool("scheduler", pool, every_s=0.01, metrics=metrics))
    await asyncio.sleep(0.05)
    task.cancel()
    assert ("db_pool_in_use", 3, {"component": "scheduler"}) in metrics.gauges
    assert ("db_pool_size", 10, {"component": "scheduler"}) in metrics.gauges


def test_recording_without_ray_is_a_no_op() -> None:
    metrics = BackboneMetrics()
    metrics.job_outcome("HEARTBEAT", "COMPLETED")
    pool: Any = FakePool()
    metrics.db_pool("execution-worker", pool)
    metrics.dispatch_latency(0.1, stage="running")
