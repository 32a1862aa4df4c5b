"""The execution worker: claims dispatched jobs, runs them, and settles them under their lease
(reference §5.3, §6.3; SPEC §5).

:class:`ExecutionWorker` is the plain class (tested without Ray); :class:`ExecutionWorkerActor` is
the pool's worker shell (``execution-worker-<i>``, created by :class:`actors.pool.PoolManager`).

Per ``ScheduledJobEntry`` (:meth:`ExecutionWorker.dispatch`):

1. wait for one of the worker's slots — the wait is the pool's backpressure.  Slots are
   ``EXECUTION_WORKER_CONCURRENCY`` runs of any kind; with 0 (the default) :data:`ASYNC_SLOTS` runs,
   of which at most 4 (the seed's 0 → GOMAXPROCS on the production CPU limit) run containers:
   HEARTBEAT and RAY runs are async I/O that cost the worker almost nothing while they wait;
2. claim the lease (dispatch-attempt guard and per-workflow serialisation, :mod:`store.job_leases`);
   ``claimed=False`` is acknowledged and nothing runs;
3. return: the record is acknowledged right after a successful claim and the run continues
   detached (as in the seed), holding the slot;
4. the run: look the workflow up (terminated → ``cancel_claimed``; not built → SYSTEM failure);
   for AUTOMATIC jobs insert the next slot at ``scheduled_at + interval`` (idempotent, generation
   guarded); run the kind's runner while the lease is renewed every
   ``EXECUTION_WORKER_LEASE_RENEW_INTERVAL``.  Losing the lease (renewal refused, or impossible
   before it expires) cancels the runner, which cleans up (the container is removed);
5. settle per :class:`domain.execution.RetryPolicy`: complete, fail, or release for a system retry.

A batch of records (the consumer hands several at once under load) is claimed concurrently; an
undecodable record in it is skipped on its own, any other failure makes the consumer retry the whole
batch (a claim is idempotent: records already claimed answer "not claimed").

A recovery loop (``RECOVERY_INTERVAL``, first pass at start) re-leases RUNNING jobs whose lease
expired — their worker died — and finishes them from the container's real state: an exited
container completes or fails by its exit code, anything else is a SYSTEM failure (released or
failed at the attempt limit).  ``attempts`` is not incremented by recovery.

:meth:`ExecutionWorker.drain` (scale-down) stops taking work, lets running jobs finish for a
while and then hands the rest back: their runs are cancelled (containers removed) and the jobs
released for immediate retry, so another worker picks them up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar
from uuid import UUID

import asyncpg
from pydantic import BaseModel, ConfigDict

from actors.lifecycle import Startup
from actors.log_publisher import JobLogWriter, LogPublisher
from actors.metrics import METRICS, report_db_pool
from actors.runners.container import ContainerRunner, RuntimeUnavailable
from actors.runners.context import RunContext
from actors.runners.heartbeat import HeartbeatRunner
from domain.config import ExecutionWorkerConfig, Settings
from domain.enums import ExecutionErrorCode, JobStatus, JobTrigger, WorkflowBuildStatus, WorkflowKind
from domain.errors import ChronoverseError, Invalid, NotFound, PreconditionFailed, Unavailable
from domain.event_keys import automatic_job_key
from domain.execution import (
    Complete,
    Decision,
    Fail,
    Release,
    RetryPolicy,
    RunOutcome,
    recovered_outcome,
    renew_interval,
    worker_slots,
)
from domain.models import Workflow
from domain.payloads import ContainerPayload, HeartbeatPayload, RayPayload, validate_payload
from domain.schedule import next_run_at
from ingest.consumer import ConsumedRecord
from ingest.events import ScheduledJobEntry
from ingest.producer import EventProducer
from store import jobs as jobs_repo
from store import workflows as workflows_repo
from store.job_leases import ClaimedJob, JobLeases, RecoveredJob
from store.postgres import create_pool
from store.redis import create_redis

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long :meth:`ExecutionWorkerActor.shutdown` lets running jobs finish before handing them back
#: (the pool kills a draining actor 10 s after asking it to shut down).
SHUTDOWN_DRAIN_S = 6.0
#: ``component`` of this worker's database pool metrics.
EXECUTION_COMPONENT = "execution-worker"
#: ``status`` of :meth:`BackboneMetrics.job_outcome` for a run released for a system retry.
RETRY_OUTCOME = "RETRY"
#: Slots of a worker when ``EXECUTION_WORKER_CONCURRENCY`` is 0 (containers stay at ``worker_slots(0)``).
ASYNC_SLOTS = 64


def job_slots(concurrency: int) -> tuple[int, int]:
    """``(runs at once, container runs at once)`` for ``EXECUTION_WORKER_CONCURRENCY``: a set value
    bounds every kind alike; 0 gives :data:`ASYNC_SLOTS` runs, :func:`worker_slots` of them containers."""
    if concurrency > 0:
        return concurrency, concurrency
    return ASYNC_SLOTS, worker_slots(0)


class ExecutionWorkerStats(BaseModel):
    """Counters of one worker (``stats()``; tests and ``chronoverse status``)."""

    model_config = ConfigDict(frozen=True)

    worker_id: str
    slots: int
    running: int
    draining: bool
    claimed: int
    not_claimed: int
    completed: int
    failed: int
    canceled: int
    released: int
    lease_lost: int
    recovered: int
    recovery_passes: int  # recovery passes completed (successful or not)


@dataclass
class _Lease:
    job_id: UUID
    token: str
    lost: bool = False


@dataclass
class _Counters:
    claimed: int = 0
    not_claimed: int = 0
    completed: int = 0
    failed: int = 0
    canceled: int = 0
    released: int = 0
    lease_lost: int = 0
    recovered: int = 0
    recovery_passes: int = 0


class _Runners:
    """The runner of each workflow kind; container runs wait for one of ``container_slots``."""

    def __init__(self, heartbeat: HeartbeatRunner, containers: ContainerRunner | None,
                 ray_tasks: Any | None = None, *, container_slots: int = 4) -> None:
        self.heartbeat = heartbeat
        self.containers = containers
        self.ray_tasks = ray_tasks
        self._container_slots = asyncio.Semaphore(container_slots)

    async def run(self, ctx: RunContext, payload: Any, logs: JobLogWriter) -> RunOutcome:
        if isinstance(payload, HeartbeatPayload):
            return await self.heartbeat.run(ctx, payload, logs)
        if isinstance(payload, ContainerPayload):
            if self.containers is None:
                return RunOutcome.failed(ExecutionErrorCode.CONTAINER_RUNTIME_UNAVAILABLE,
                                         "this execution worker has no container runtime")
            async with self._container_slots:  # waited for under the lease, which keeps renewing
                return await self.containers.run(ctx, payload, logs)
        if isinstance(payload, RayPayload):
            if self.ray_tasks is None:
                return RunOutcome.failed(ExecutionErrorCode.TASK_UNAVAILABLE,
                                         "this execution worker cannot run RAY tasks")
            outcome: RunOutcome = await self.ray_tasks.run(ctx, payload, logs)
            return outcome
        return RunOutcome.failed(ExecutionErrorCode.INVALID_PAYLOAD, f"unsupported payload {type(payload)}")


def worker_identity(configured: str, name: str = "") -> str:
    """The id in lease tokens and ``leased_by``: the actor name (several actors share a host and
    one ``EXECUTION_WORKER_ID``), prefixed by ``EXECUTION_WORKER_ID`` when set; without a name the
    seed's order applies: the configured id → the hostname → ``execution-worker``."""
    if name:
        return f"{configured}/{name}" if configured else name
    return configured or socket.gethostname() or "execution-worker"


class ExecutionWorker:
    """Runs jobs (see the module docstring).  Construct with its dependencies; :meth:`start`
    launches the recovery loop; :meth:`close` releases what it owns."""

    def __init__(
        self,
        *,
        cfg: ExecutionWorkerConfig,
        worker_id: str,
        db: asyncpg.Pool,
        logs: LogPublisher,
        heartbeat: HeartbeatRunner,
        containers: ContainerRunner | None,
        ray_tasks: Any | None = None,
    ) -> None:
        self.cfg = cfg
        self.worker_id = worker_id
        self.db = db
        self.leases = JobLeases(db)
        self.logs = logs
        self.slots, container_slots = job_slots(cfg.concurrency)
        self.runners = _Runners(heartbeat, containers, ray_tasks, container_slots=container_slots)
        self.policy = RetryPolicy.from_config(cfg)
        self._slots = asyncio.Semaphore(self.slots)
        self._renew_every = renew_interval(cfg.lease_duration, cfg.lease_renew_interval).total_seconds()
        self._running: dict[UUID, asyncio.Task[None]] = {}
        self._draining = False
        self._recovery: asyncio.Task[None] | None = None
        self.counters = _Counters()

    # ------------------------------------------------------------------ lifecycle

    def start(self, *, recovery: bool = True) -> None:
        """Start the log publisher and (unless disabled) the recovery loop; call on the event loop."""
        self.logs.start()
        if recovery and self._recovery is None:
            self._recovery = asyncio.create_task(self._recovery_loop())

    async def drain(self, grace_s: float) -> int:
        """Stop taking work; wait up to ``grace_s`` seconds for running jobs, then hand the rest back
        (runs cancelled and cleaned up, jobs released for immediate retry).  Returns how many jobs
        were handed back."""
        self._draining = True
        if self._recovery is not None:
            self._recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recovery
            self._recovery = None
        pending = list(self._running.values())
        if pending:
            _, still = await asyncio.wait(pending, timeout=max(0.0, grace_s))
        else:
            still = set()
        for task in still:
            task.cancel()
        if still:
            await asyncio.gather(*still, return_exceptions=True)
        return len(still)

    async def close(self) -> None:
        """Drain immediately and stop the log publisher (does not close the injected pool)."""
        await self.drain(0)
        await self.logs.stop()

    def stats(self) -> ExecutionWorkerStats:
        c = self.counters
        return ExecutionWorkerStats(
            worker_id=self.worker_id, slots=self.slots, running=len(self._running), draining=self._draining,
            claimed=c.claimed, not_claimed=c.not_claimed, completed=c.completed, failed=c.failed,
            canceled=c.canceled, released=c.released, lease_lost=c.lease_lost, recovered=c.recovered,
            recovery_passes=c.recovery_passes,
        )

    async def wait_idle(self) -> None:
        """Return once no job is running (tests)."""
        while self._running:
            await asyncio.gather(*list(self._running.values()), return_exceptions=True)

    # ------------------------------------------------------------------ dispatch

    async def handle(self, records: ConsumedRecord | list[ConsumedRecord]) -> list[str]:
        """Pool entry point: one or more ``jobs`` records, claimed concurrently.  Returns one word per
        record; raises the first failure (after every claim settled) so the batch is retried."""
        batch = records if isinstance(records, list) else [records]
        if len(batch) == 1:
            return [await self._handle_one(batch[0])]
        results = await asyncio.gather(*(self._handle_one(record) for record in batch),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [str(result) for result in results]

    async def _handle_one(self, record: ConsumedRecord) -> str:
        try:
            entry = record.decode(ScheduledJobEntry)
        except Invalid as err:  # skipped alone: the rest of its batch is still claimed
            log.warning("%s: skipping an undecodable dispatch: %s", self.worker_id, err)
            return "undecodable"
        return await self.dispatch(entry)

    async def dispatch(self, entry: ScheduledJobEntry) -> str:
        """Claim and start one dispatched job; ``"claimed"`` or the reason it was not.  Raises
        :class:`Unavailable` while draining so the record is redelivered elsewhere."""
        if self._draining:
            raise Unavailable(f"execution worker {self.worker_id} is draining")
        await self._slots.acquire()
        started = False
        try:
            if self._draining:
                raise Unavailable(f"execution worker {self.worker_id} is draining")
            result = await self.leases.claim(
                job_id=UUID(entry.job_id), dispatch_attempt=entry.dispatch_attempt, worker_id=self.worker_id,
                lease_duration=self.cfg.lease_duration,
            )
            if not result.claimed or result.job is None:
                self.counters.not_claimed += 1
                log.info("%s: dispatch %s not claimed: %s", self.worker_id, entry.event_key, result.reason)
                return result.reason
            job = result.job
            self.counters.claimed += 1
            if job.attempts == 1:
                METRICS.dispatch_latency((job.started_at - job.scheduled_at).total_seconds(), stage="running")
            task = asyncio.create_task(self._execute(job, entry.workflow_generation, result.workflow),
                                       name=f"job-{job.id}")
            self._running[job.id] = task
            task.add_done_callback(self._finisher(job.id))
            started = True
            return "claimed"
        finally:
            if not started:
                self._slots.release()

    def _finisher(self, job_id: UUID) -> Callable[[asyncio.Task[None]], None]:
        def finished(_: asyncio.Task[None]) -> None:
            self._running.pop(job_id, None)
            self._slots.release()

        return finished

    # ------------------------------------------------------------------ one run

    async def _execute(self, job: ClaimedJob, generation: int, workflow: Workflow | None) -> None:
        """Run a claimed job; ``workflow`` is as its claim read it (``None``: deleted)."""
        lease = _Lease(job.id, job.lease_token)
        writer: JobLogWriter | None = None
        try:
            if workflow is None:
                return  # deleted: the job row went with it
            if workflow.terminated:
                await self._settle_cancel(lease, workflow.kind)
                return
            writer = self.logs.writer(job_id=job.id, workflow_id=job.workflow_id, user_id=job.user_id,
                                      attempt=job.attempts, retention=workflow.log_retention)
            outcome = await self._with_lease(lease, self._run(job, workflow, generation, lease, writer))
            if outcome is None:
                await self._lease_lost(job.id, writer)
                return
            await writer.flush()
            await self._settle(lease, self.policy.decide(outcome, attempts=job.attempts), writer,
                               workflow.kind)
        except asyncio.CancelledError:
            # Drained: hand the job back for an immediate retry elsewhere.
            if not lease.lost:
                await asyncio.shield(self._hand_back(lease, writer))
        except Exception:
            log.exception("%s: job %s crashed; its lease will expire and recovery finishes it",
                          self.worker_id, job.id)

    async def _run(self, job: ClaimedJob, workflow: Workflow, generation: int, lease: _Lease,
                   writer: JobLogWriter) -> RunOutcome:
        if workflow.build_status is not WorkflowBuildStatus.COMPLETED:
            return RunOutcome.failed(ExecutionErrorCode.WORKFLOW_NOT_READY,
                                     f"workflow build status is {workflow.build_status}, not COMPLETED")
        if job.trigger is JobTrigger.AUTOMATIC:
            failure = await self._schedule_next(job.workflow_id, job.user_id, job.scheduled_at, workflow,
                                                generation)
            if failure is not None:
                return failure
        try:
            payload = validate_payload(workflow.kind, workflow.payload)
        except ChronoverseError as err:
            return RunOutcome.failed(ExecutionErrorCode.INVALID_PAYLOAD, f"invalid payload: {err.message}")

        async def attach(container_id: str) -> None:
            await self.leases.attach_container(job.id, lease.token, container_id)

        ctx = RunContext(job_id=job.id, workflow_id=job.workflow_id, user_id=job.user_id,
                         attempt=job.attempts, attach=attach)
        try:
            return await self.runners.run(ctx, payload, writer)
        except PreconditionFailed:
            raise  # the lease is gone (attach refused): abort without settling
        except Exception as err:
            log.exception("%s: runner crashed on job %s", self.worker_id, job.id)
            return RunOutcome.failed(ExecutionErrorCode.INTERNAL,
                                     f"execution failed: {type(err).__name__}: {err}")

    async def _schedule_next(self, workflow_id: UUID, user_id: UUID, scheduled_at: Any, workflow: Workflow,
                             generation: int) -> RunOutcome | None:
        """Insert the AUTOMATIC job of the next slot (idempotent); a failure is a SYSTEM failure."""
        slot = next_run_at(scheduled_at, workflow.interval)
        try:
            await jobs_repo.schedule_automatic(
                self.db, workflow_id=workflow_id, user_id=user_id, scheduled_at=slot,
                idempotency_key=automatic_job_key(workflow_id, slot),
                workflow_generation=generation or workflow.generation,
            )
            return None
        except Exception as err:
            return RunOutcome.failed(ExecutionErrorCode.SCHEDULE_FAILED,
                                     f"failed to schedule the next automatic job: {err}")

    async def _workflow(self, workflow_id: UUID) -> Workflow | None:
        try:
            return await workflows_repo.get_by_id(self.db, workflow_id)
        except NotFound:
            return None

    # ------------------------------------------------------------------ leases

    async def _with_lease(self, lease: _Lease, body: Coroutine[Any, Any, T]) -> T | None:
        """Run ``body`` while renewing the lease; ``None`` if the lease was lost (body cancelled).
        A :class:`PreconditionFailed` from the body (attach refused) also means the lease is gone."""
        task = asyncio.create_task(body)
        keeper = asyncio.create_task(self._keep_lease(lease))
        try:
            await asyncio.wait({task, keeper}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                try:
                    return task.result()
                except PreconditionFailed:
                    lease.lost = True
                    return None
            lease.lost = True
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            return None
        finally:
            keeper.cancel()
            if not task.done():
                task.cancel()
            await asyncio.gather(task, keeper, return_exceptions=True)

    async def _keep_lease(self, lease: _Lease) -> None:
        """Renew until cancelled; return when the lease is lost (refused, or would expire before
        the next renewal could succeed)."""
        duration = self.cfg.lease_duration
        expires = time.monotonic() + duration.total_seconds()
        while True:
            await asyncio.sleep(self._renew_every)
            try:
                await self.leases.renew(lease.job_id, lease.token, duration)
                expires = time.monotonic() + duration.total_seconds()
            except PreconditionFailed:
                return
            except Exception as err:
                if time.monotonic() + self._renew_every >= expires:
                    log.warning("%s: cannot renew lease of job %s before it expires: %s", self.worker_id,
                                lease.job_id, err)
                    return
                log.warning("%s: lease renewal of job %s failed, retrying: %s", self.worker_id,
                            lease.job_id, err)

    async def _lease_lost(self, job_id: UUID, writer: JobLogWriter | None) -> None:
        self.counters.lease_lost += 1
        log.warning("%s: lost the lease of job %s; run aborted", self.worker_id, job_id)
        if writer is None:
            return
        await writer.flush()
        with contextlib.suppress(Exception):
            current = await jobs_repo.get_by_id(self.db, job_id)
            if current.status.terminal:
                await writer.end(current.status)

    # ------------------------------------------------------------------ settling

    async def _settle(self, lease: _Lease, decision: Decision, writer: JobLogWriter | None,
                      kind: WorkflowKind) -> None:
        try:
            if isinstance(decision, Complete):
                await self.leases.complete(lease.job_id, lease.token)
                self.counters.completed += 1
                status = JobStatus.COMPLETED
            elif isinstance(decision, Fail):
                await self.leases.fail(lease.job_id, lease.token, failure_kind=decision.failure_kind,
                                       error_code=decision.error_code, error_message=decision.error_message)
                self.counters.failed += 1
                status = JobStatus.FAILED
            else:
                assert isinstance(decision, Release)
                await self.leases.release_for_retry(
                    lease.job_id, lease.token, retry_after=decision.retry_after,
                    error_code=decision.error_code, error_message=decision.error_message)
                self.counters.released += 1
                METRICS.job_outcome(kind, RETRY_OUTCOME)
                return
            METRICS.job_outcome(kind, status)
        except PreconditionFailed:
            lease.lost = True
            await self._lease_lost(lease.job_id, writer)
            return
        if writer is not None:
            await writer.end(status)

    async def _settle_cancel(self, lease: _Lease, kind: WorkflowKind) -> None:
        try:
            await self.leases.cancel_claimed(lease.job_id, lease.token)
            self.counters.canceled += 1
            METRICS.job_outcome(kind, JobStatus.CANCELED)
        except PreconditionFailed:
            self.counters.lease_lost += 1

    async def _hand_back(self, lease: _Lease, writer: JobLogWriter | None) -> None:
        try:
            if writer is not None:
                await writer.flush()
            await self.leases.release_for_retry(
                lease.job_id, lease.token, retry_after=timedelta(0), error_code=ExecutionErrorCode.CANCELED,
                error_message=f"execution worker {self.worker_id} stopped before the run finished",
            )
            self.counters.released += 1
        except Exception as err:  # its lease expires and recovery takes over
            log.warning("%s: could not hand back job %s: %s", self.worker_id, lease.job_id, err)

    # ------------------------------------------------------------------ recovery

    async def _recovery_loop(self) -> None:
        interval = self.cfg.recovery_interval.total_seconds()
        while True:
            try:
                await self.recover_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: recovery pass failed", self.worker_id)
            self.counters.recovery_passes += 1
            await asyncio.sleep(interval)

    async def recover_once(self) -> int:
        """One recovery pass: re-lease expired RUNNING jobs in waves of ``min(batch, slots)`` up to
        ``RECOVERY_BATCH_SIZE`` and finish each.  Returns how many were recovered."""
        batch = self.cfg.recovery_batch_size
        wave = max(1, min(batch, self.slots))
        total = 0
        while total < batch and not self._draining:
            jobs = await self.leases.recover_expired(worker_id=self.worker_id,
                                                     lease_duration=self.cfg.lease_duration,
                                                     batch_size=min(wave, batch - total))
            if not jobs:
                break
            await asyncio.gather(*(self._recover(job) for job in jobs))
            total += len(jobs)
        return total

    async def _recover(self, job: RecoveredJob) -> None:
        lease = _Lease(job.id, job.lease_token)
        writer = self.logs.writer(job_id=job.id, workflow_id=job.workflow_id, user_id=job.user_id,
                                  attempt=max(job.attempts, 1), retention=job.log_retention)
        try:
            log.warning("%s: recovering job %s (lease of %s expired)", self.worker_id, job.id,
                        job.previous_leased_by)
            outcome = await self._with_lease(lease, self._recovered_outcome(job, writer))
            if outcome is None:
                await self._lease_lost(job.id, writer)
                return
            await writer.flush()
            self.counters.recovered += 1
            await self._settle(lease, self.policy.decide(outcome, attempts=job.attempts), writer, job.kind)
        except Exception:
            log.exception("%s: recovery of job %s failed; it is retried next pass", self.worker_id, job.id)

    async def _recovered_outcome(self, job: RecoveredJob, writer: JobLogWriter) -> RunOutcome:
        if job.trigger is JobTrigger.AUTOMATIC:
            # The dead worker may have died before inserting the next slot; the insert is idempotent.
            workflow = await self._workflow(job.workflow_id)
            if workflow is not None and not workflow.terminated:
                await self._schedule_next(job.workflow_id, job.user_id, job.scheduled_at, workflow, 0)
        containers = self.runners.containers
        if job.kind is not WorkflowKind.CONTAINER or containers is None:
            return recovered_outcome(None, had_container_id=bool(job.container_id))
        try:
            state = await containers.inspect(container_id=job.container_id, job_id=job.id,
                                             attempt=max(job.attempts, 1))
        except RuntimeUnavailable as err:
            return RunOutcome.failed(ExecutionErrorCode.CONTAINER_RUNTIME_UNAVAILABLE, str(err))
        if state is None:
            return recovered_outcome(None, had_container_id=bool(job.container_id))
        try:
            if state.running:
                await containers.stop(state.container_id)
            if state.started:
                await containers.replay_logs(state.container_id, writer)
        finally:
            await containers.remove(state.container_id)
        return recovered_outcome(state, had_container_id=True)


class ExecutionWorkerActor:
    """Pool worker shell (``execution-worker-<i>``): builds the connections, the log publisher and
    the runners from :class:`Settings` and hands records to :class:`ExecutionWorker`.

    Pool contract (:mod:`actors.pool`): ``__init__(settings, name)``, ``handle(record)``,
    ``ready()``, ``shutdown()`` (drain: finish or hand back running jobs), plus ``stats()``.
    A start that failed (a service down) is retried by the next call.
    """

    def __init__(self, settings: Settings, name: str) -> None:
        self.settings = settings
        self.name = name
        self.worker: ExecutionWorker | None = None
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._startup = Startup(self._start)

    async def _start(self) -> None:
        s = self.settings
        cfg = s.execution
        slots, container_slots = job_slots(cfg.concurrency)
        closers: list[Callable[[], Awaitable[None]]] = []
        try:
            # Runs hold a connection only per statement, so POSTGRES_MAX_CONNS serves many slots.
            db_size = min(slots + 2, max(4, s.postgres.max_conns))
            db = await create_pool(s.postgres, min_size=1, max_size=db_size, application_name=self.name)
            closers.append(db.close)
            reporter = asyncio.create_task(report_db_pool(EXECUTION_COMPONENT, db))
            closers.append(lambda: _cancel(reporter))
            redis = create_redis(s.redis, client_name=self.name)
            closers.append(redis.aclose)
            producer = EventProducer(s.kafka, client_id=self.name)
            await producer.start()
            closers.append(producer.stop)
            heartbeat = HeartbeatRunner()
            closers.append(heartbeat.aclose)
            containers = ContainerRunner(s.docker, cfg, max_parallel=container_slots)
            closers.append(lambda: asyncio.to_thread(containers.close))
        except BaseException:
            for close in reversed(closers):
                with contextlib.suppress(Exception):
                    await close()
            raise
        self._closers = closers
        self.worker = ExecutionWorker(cfg=cfg, worker_id=worker_identity(cfg.id, self.name), db=db,
                                      logs=LogPublisher(producer, redis, cfg), heartbeat=heartbeat,
                                      containers=containers, ray_tasks=_ray_task_runner())
        self.worker.start()

    async def _ready_worker(self) -> ExecutionWorker:
        await self._startup.wait()
        assert self.worker is not None
        return self.worker

    async def ready(self) -> bool:
        await self._ready_worker()
        return True

    async def handle(self, records: ConsumedRecord | list[ConsumedRecord]) -> list[str]:
        return await (await self._ready_worker()).handle(records)

    async def stats(self) -> ExecutionWorkerStats:
        return (await self._ready_worker()).stats()

    async def shutdown(self) -> None:
        """Drain: finish running jobs for a few seconds, hand back the rest, close connections."""
        await self._startup.settle()
        if self.worker is not None:
            await self.worker.drain(SHUTDOWN_DRAIN_S)
            await self.worker.logs.stop()
        for close in reversed(self._closers):
            with contextlib.suppress(Exception):
                await close()
        self._closers = []


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _ray_task_runner() -> Any | None:
    """The RAY-kind runner when running inside a Ray worker (it submits tasks to the cluster)."""
    try:
        import ray

        if not ray.is_initialized():
            return None
        from actors.runners.ray_task import RayTaskRunner

        return RayTaskRunner()
    except ImportError:
        return None

