"""The scheduler: moves due PENDING jobs to QUEUED and writes their dispatch events (SPEC §5.2).

Event-driven, not polling: after each pass it asks the database for the next moment it has work
(the earliest due head job of a dispatchable workflow, or the moment a QUEUED job goes stale) and
sleeps until then — or until a ``chronoverse_jobs`` notification (a job inserted, made PENDING,
rescheduled, or a job leaving QUEUED/RUNNING, which may unblock its workflow) wakes it, after
``NOTIFY_COALESCE_S`` for the rest of its burst.  Stale QUEUED jobs are looked for at most every
``STALE_CHECK_INTERVAL_S``.
``poll_interval`` only caps the sleep as a safety net; while the LISTEN connection is down the cap
drops to one second.

Every statement is in :mod:`store.scheduling`; several replicas are safe (``FOR UPDATE SKIP
LOCKED``).  :class:`Scheduler` is plain (tested without Ray); :class:`SchedulerActor` is its Ray shell.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
import ray
from pydantic import BaseModel, ConfigDict

from actors.lifecycle import Startup
from actors.metrics import METRICS, BackboneMetrics, report_db_pool
from domain.config import PostgresConfig, SchedulingWorkerConfig, Settings
from store import scheduling
from store.listener import ChannelListener
from store.postgres import create_pool

log = logging.getLogger(__name__)

JOBS_CHANNEL = "chronoverse_jobs"
#: ``component`` of the scheduler's database pool metrics.
SCHEDULER_COMPONENT = "scheduler"
#: Sleep cap while notifications cannot be relied on (listener disconnected).
DEGRADED_POLL_S = 1.0
#: Backoff when something is due but nothing could be dispatched (another replica holds the rows).
CONTENDED_BACKOFF_S = (0.02, 0.5)
#: Stale QUEUED jobs are looked for at most this often: a pass per notification (one per job under
#: load) need not repeat a check whose deadline is ``redispatch_timeout`` away.
STALE_CHECK_INTERVAL_S = 1.0
#: After a notification, how long to let its burst arrive before the pass: under load one pass then
#: queues several jobs (one transaction) instead of one each.
NOTIFY_COALESCE_S = 0.01


class PassResult(BaseModel):
    """What one scheduling pass did."""

    model_config = ConfigDict(frozen=True)

    dispatched: int
    redispatched: int
    latencies_s: list[float]  # due → QUEUED of each first dispatch


class SchedulerStats(BaseModel):
    """Counters since start, for ``chronoverse status`` and tests."""

    name: str
    running: bool
    listening: bool
    listener_reconnects: int
    passes: int
    wakeups: int
    dispatched: int
    redispatched: int
    errors: int
    next_wake_in_s: float | None


class Scheduler:
    """Scheduling passes plus the wake-up loop.  ``pool`` is owned by the caller."""

    def __init__(
        self,
        cfg: SchedulingWorkerConfig,
        pool: asyncpg.Pool,
        *,
        listen: PostgresConfig | None = None,
        name: str = "scheduler",
        metrics: BackboneMetrics = METRICS,
    ) -> None:
        self.cfg = cfg
        self.pool = pool
        self.name = name
        self.metrics = metrics
        self._wake = asyncio.Event()
        self._listener = (
            ChannelListener(listen, [JOBS_CHANNEL], self._on_notify, application_name=f"{name}-listen")
            if listen is not None
            else None
        )
        self._task: asyncio.Task[None] | None = None
        self._passes = 0
        self._wakeups = 0
        self._dispatched = 0
        self._redispatched = 0
        self._errors = 0
        self._next_wake: float | None = None
        self._stale_checked_at = -STALE_CHECK_INTERVAL_S

    def _on_notify(self, _channel: str, _payload: str | None) -> None:
        # Every notification triggers a pass: it is cheap, and a change the payload cannot describe
        # (a workflow becoming COMPLETED unblocks an already-due MANUAL job) is still picked up.
        self._wakeups += 1
        self._wake.set()

    def wake(self) -> None:
        """Run a pass now (tests and operators)."""
        self._wake.set()

    async def run_pass(self, *, check_stale: bool = True) -> PassResult:
        """Dispatch everything due (in batches) and, with ``check_stale``, re-dispatch stale QUEUED
        jobs."""
        dispatched = redispatched = 0
        latencies: list[float] = []
        # The timeout bounds each statement batch, not the pass: a large backlog after downtime
        # drains batch by batch instead of timing out as a whole.
        budget = self.cfg.context_timeout.total_seconds()
        while True:
            async with asyncio.timeout(budget):
                jobs = await scheduling.dispatch_due(self.pool, batch_size=self.cfg.batch_size)
            for job in jobs:
                seconds = job.latency.total_seconds()
                latencies.append(seconds)
                self.metrics.dispatch_latency(seconds)
            dispatched += len(jobs)
            if len(jobs) < self.cfg.batch_size:
                break
        while check_stale:
            async with asyncio.timeout(budget):
                stale = await scheduling.redispatch_stale(
                    self.pool, batch_size=self.cfg.batch_size, stale_after=self.cfg.redispatch_timeout
                )
            redispatched += len(stale)
            for job in stale:
                log.warning("%s: job %s was not claimed within %s; dispatch attempt %d",
                            self.name, job.id, self.cfg.redispatch_timeout, job.dispatch_attempts)
            if len(stale) < self.cfg.batch_size:
                break
        self.metrics.dispatched(dispatched, kind="first")
        self.metrics.dispatched(redispatched, kind="redispatch")
        self._passes += 1
        self._dispatched += dispatched
        self._redispatched += redispatched
        return PassResult(dispatched=dispatched, redispatched=redispatched, latencies_s=latencies)

    def _cap(self) -> float:
        poll = self.cfg.poll_interval.total_seconds()
        if self._listener is None or self._listener.connected:
            return poll
        return min(poll, DEGRADED_POLL_S)

    async def run(self) -> None:
        """Loop until cancelled."""
        listener_task = asyncio.create_task(self._listener.run()) if self._listener is not None else None
        contended = 0
        try:
            while True:
                self._wake.clear()
                delay: float | None
                try:
                    now = asyncio.get_running_loop().time()
                    check_stale = now - self._stale_checked_at >= STALE_CHECK_INTERVAL_S
                    if check_stale:
                        self._stale_checked_at = now
                    result = await self.run_pass(check_stale=check_stale)
                    wake = await scheduling.next_wake(
                        self.pool, redispatch_timeout=self.cfg.redispatch_timeout
                    )
                    delay = wake.delay()
                    if delay == 0.0 and result.dispatched == 0 and not check_stale:
                        # Something is due that this pass did not take: a job that came due since,
                        # or a stale QUEUED job whose check was skipped.  Run a full pass now.
                        self._stale_checked_at = -STALE_CHECK_INTERVAL_S
                    elif delay == 0.0 and result.dispatched == 0 and result.redispatched == 0:
                        # Due work we could not take: rows locked by another replica. Back off a little.
                        contended += 1
                        low, high = CONTENDED_BACKOFF_S
                        delay = min(high, low * 2 ** min(contended - 1, 10))
                    else:
                        contended = 0
                except Exception:
                    self._errors += 1
                    log.exception("%s: scheduling pass failed", self.name)
                    delay = DEGRADED_POLL_S
                cap = self._cap()
                delay = cap if delay is None else min(delay, cap)
                self._next_wake = delay
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), delay)
                        await asyncio.sleep(NOTIFY_COALESCE_S)  # woken, not timed out
        finally:
            if listener_task is not None:
                listener_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener_task

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def stats(self) -> SchedulerStats:
        return SchedulerStats(
            name=self.name,
            running=self._task is not None and not self._task.done(),
            listening=self._listener is not None and self._listener.connected,
            listener_reconnects=self._listener.reconnects if self._listener is not None else 0,
            passes=self._passes,
            wakeups=self._wakeups,
            dispatched=self._dispatched,
            redispatched=self._redispatched,
            errors=self._errors,
            next_wake_in_s=self._next_wake,
        )


@ray.remote
class SchedulerActor:
    """Ray shell: one scheduler replica (``scheduler-<i>``) with its own small connection pool."""

    def __init__(self, settings: Settings, name: str) -> None:
        self.settings = settings
        self.name = name
        self.scheduler: Scheduler | None = None
        self._pool: asyncpg.Pool | None = None
        self._reporter: asyncio.Task[None] | None = None
        self._startup = Startup(self._start)

    async def _start(self) -> None:
        self._pool = await create_pool(
            self.settings.postgres, min_size=1, max_size=3, application_name=self.name
        )
        self.scheduler = Scheduler(
            self.settings.scheduler, self._pool, listen=self.settings.postgres, name=self.name
        )
        self.scheduler.start()
        self._reporter = asyncio.create_task(report_db_pool(SCHEDULER_COMPONENT, self._pool))

    async def ready(self) -> bool:
        await self._startup.wait()
        return True

    async def stats(self) -> SchedulerStats:
        await self._startup.wait()
        assert self.scheduler is not None
        return self.scheduler.stats()

    async def wake(self) -> None:
        if self.scheduler is not None:
            self.scheduler.wake()

    async def shutdown(self) -> None:
        if self._reporter is not None:
            self._reporter.cancel()
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self._pool is not None:
            await self._pool.close()
