"""The workflow worker: handles ``workflows`` topic events (reference §5.1 to §5.4, §6.4, §8).

BUILD, RESCHEDULE, TERMINATE, DELETE, JOB_COMPLETED and JOB_FAILED, exactly as the reference:

* stale generations are acknowledged with no effect (generation 0 is never stale);
* BUILD / RESCHEDULE / TERMINATE / DELETE run under the Redis lock ``workflow:<ACTION>:<id>`` (5 min;
  DELETE 15 min).  A lock held elsewhere raises :class:`~domain.errors.Conflict` — retryable, so the
  consumer retries the record in place;
* a build cancels the workflow's QUEUED then PENDING jobs ("Job Canceled"), emits the analytics
  WORKFLOWS event through the outbox, then: HEARTBEAT/RAY QUEUED→COMPLETED ("Workflow Build
  Skipped"); CONTAINER QUEUED→STARTED ("Workflow Build Started") → the image is made present on the
  Docker host (pulled only when missing, under the herd lock) → COMPLETED ("Workflow Build
  Completed") or, on a permanent pull error, FAILED ("Workflow Build Failed").  A transient error
  re-raises (still STARTED; the redelivery resumes).  COMPLETED schedules the first AUTOMATIC job at
  build time + interval with key ``<event key>:automatic-job``;
* job outcomes reset or count consecutive failures (deduped per job); reaching the threshold
  terminates the workflow with a WEB_ALERT "Workflow Terminated".

Every effect is idempotent, so a replayed event changes nothing.  Decisions are pure
(:mod:`domain.workflow_events`); :class:`WorkflowEventHandler` does the I/O and is tested without
Ray; :class:`WorkflowWorker` is the pool worker shell (``workflow-worker-<i>``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol
from uuid import UUID

import asyncpg
from redis.asyncio import Redis

from actors.container_runtime import LABEL_JOB_ID, ContainerRuntime, DockerRuntime, ImageEnsurer
from actors.lifecycle import Startup
from domain import notifications as notes
from domain.config import Settings
from domain.enums import JobStatus, WorkflowAction, WorkflowBuildStatus
from domain.errors import ChronoverseError, Invalid, NotFound, PreconditionFailed
from domain.event_keys import followup_job_key
from domain.models import Job, Workflow
from domain.notifications import NotificationDraft
from domain.schedule import first_run_at
from domain.workflow_events import (
    BUILD_CANCEL_ORDER,
    TERMINATE_CANCEL_ORDER,
    BuildDecision,
    BuildMethod,
    JobOutcomeDecision,
    RescheduleDecision,
    TerminateDecision,
    build_method,
    container_image,
    decide_build,
    decide_job_outcome,
    decide_reschedule,
    decide_terminate,
    lock_key,
    lock_ttl,
)
from ingest.consumer import ConsumedRecord
from ingest.events import AnalyticEvent, WorkflowEvent
from store import jobs, locks, notifications, outbox, workflows
from store.cache import Cache
from store.postgres import create_pool
from store.redis import create_redis

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    """What handling an event did (returned for tests and logs)."""

    IGNORED = "ignored"  # workflow gone, event stale, or nothing applies in the current state
    TERMINATED_WORKFLOW = "terminated_workflow"  # BUILD of a terminated workflow: acknowledged
    SCHEDULED = "scheduled"  # BUILD of a COMPLETED workflow / RESCHEDULE: automatic job ensured
    SUPERSEDED = "superseded"  # a newer generation won a build-status update: stop silently
    BUILT = "built"
    BUILD_FAILED = "build_failed"
    TERMINATED = "terminated"
    DELETED = "deleted"
    FAILURES_RESET = "failures_reset"
    FAILURE_COUNTED = "failure_counted"
    AUTO_TERMINATED = "auto_terminated"


class LogDeleter(Protocol):
    """The part of the log store DELETE needs (:class:`store.logstore.LogStore`)."""

    async def delete_workflow(self, user_id: UUID, workflow_id: UUID) -> None: ...


class ContainerCleanup(Protocol):
    """Tear down the containers of canceled jobs (TERMINATE, rebuild).

    The default removes containers by their job label.  The execution worker's runtime replaces it
    with the reference's stop (2 s) → replay the container's logs to ``job_logs`` → force-remove.
    """

    async def cleanup(self, canceled: Sequence[Job]) -> None: ...


class RemoveByLabel:
    """Default :class:`ContainerCleanup`: force-remove each canceled job's containers by label."""

    def __init__(self, runtime: ContainerRuntime) -> None:
        self.runtime = runtime

    async def cleanup(self, canceled: Sequence[Job]) -> None:
        for job in canceled:
            if not job.container_id:
                continue
            try:
                await self.runtime.remove_containers({LABEL_JOB_ID: str(job.id)})
            except ChronoverseError as err:
                # Never fail a termination on cleanup: the executor's lease loss removes it too.
                log.warning("removing the container of canceled job %s failed: %s", job.id, err)


class WorkflowEventHandler:
    """Handles one :class:`~ingest.events.WorkflowEvent` at a time; all state lives in PG/Redis."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: Redis,
        *,
        images: ImageEnsurer | None,
        logs: LogDeleter | None,
        containers: ContainerCleanup | None = None,
        cache: Cache | None = None,
    ) -> None:
        self.pool = pool
        self.redis = redis
        self.images = images
        self.logs = logs
        self.containers = containers
        self.cache = cache

    async def handle_many(self, events: Sequence[WorkflowEvent]) -> list[Outcome]:
        """Handle a batch in order; each run of consecutive ``JOB_COMPLETED`` events (the hot path:
        one per finished job) is applied together (:meth:`on_jobs_completed`)."""
        outcomes: list[Outcome] = []
        index = 0
        while index < len(events):
            end = index
            while end < len(events) and events[end].action is WorkflowAction.JOB_COMPLETED:
                end += 1
            if end - index > 1:
                run = events[index:end]
                done = await self.on_jobs_completed(run)
                for event, outcome in zip(run, done, strict=True):
                    log.info("workflow %s %s (gen %d): %s", event.id, event.action.value, event.generation,
                             outcome.value)
                outcomes.extend(done)
                index = end
            else:
                outcomes.append(await self.handle(events[index]))
                index += 1
        return outcomes

    async def handle(self, event: WorkflowEvent) -> Outcome:
        handlers = {
            WorkflowAction.BUILD: self.on_build,
            WorkflowAction.RESCHEDULE: self.on_reschedule,
            WorkflowAction.TERMINATE: self.on_terminate,
            WorkflowAction.DELETE: self.on_delete,
            WorkflowAction.JOB_COMPLETED: self.on_job_completed,
            WorkflowAction.JOB_FAILED: self.on_job_failed,
        }
        outcome = await handlers[event.action](event)
        log.info("workflow %s %s (gen %d): %s", event.id, event.action.value, event.generation, outcome.value)
        return outcome

    # ------------------------------------------------------------------ helpers

    async def _workflow(self, workflow_id: str) -> Workflow | None:
        try:
            return await workflows.get_by_id(self.pool, _uuid(workflow_id))
        except NotFound:
            return None

    async def _notify(self, draft: NotificationDraft, *, required: bool) -> None:
        """Job-outcome notifications are ``required`` (a failure retries the record); build-phase and
        cancel notifications are fire-and-forget (reference §8)."""
        try:
            await notifications.create_draft(self.pool, draft)
        except Exception:
            if required:
                raise
            log.warning("notification %s for %s failed", draft.payload.title, draft.user_id, exc_info=True)

    async def _cancel(self, workflow: Workflow, order: Sequence[JobStatus]) -> list[Job]:
        canceled: list[Job] = []
        for status in order:
            canceled.extend(await jobs.cancel_jobs(self.pool, workflow.id, [status]))
        for job in canceled:
            await self._notify(
                notes.job_canceled(str(workflow.user_id), str(workflow.id), str(job.id), workflow.name),
                required=False,
            )
        if canceled and self.containers is not None:
            await self.containers.cleanup(canceled)
        return canceled

    async def _schedule_first_job(self, workflow: Workflow, event: WorkflowEvent) -> UUID | None:
        return await jobs.schedule_automatic(
            self.pool,
            workflow_id=workflow.id,
            user_id=workflow.user_id,
            scheduled_at=first_run_at(datetime.now(UTC), workflow.interval),
            idempotency_key=followup_job_key(event.event_key),
            workflow_generation=event.generation,
        )

    async def _set_status(self, workflow: Workflow, status: WorkflowBuildStatus, generation: int) -> Workflow:
        """Generation-guarded build-status update; PreconditionFailed means superseded."""
        return await workflows.update_build_status(
            self.pool, workflow.id, status, generation, cache=self.cache
        )

    # ------------------------------------------------------------------ BUILD

    async def on_build(self, event: WorkflowEvent) -> Outcome:
        workflow = await self._workflow(event.id)
        decision = decide_build(event.generation, workflow)
        if decision in (BuildDecision.GONE, BuildDecision.STALE, BuildDecision.FINAL):
            return Outcome.IGNORED
        assert workflow is not None
        if decision == BuildDecision.TERMINATED:
            return Outcome.TERMINATED_WORKFLOW
        if decision == BuildDecision.SCHEDULE_ONLY:
            await self._schedule_first_job(workflow, event)
            return Outcome.SCHEDULED
        action = WorkflowAction.BUILD
        async with locks.hold(self.redis, lock_key(action, event.id), lock_ttl(action), renewing=True):
            try:
                return await self._build(workflow, event)
            except PreconditionFailed:
                return Outcome.SUPERSEDED

    async def _build(self, workflow: Workflow, event: WorkflowEvent) -> Outcome:
        user, wf_id = str(workflow.user_id), str(workflow.id)
        await self._cancel(workflow, BUILD_CANCEL_ORDER)
        analytic = AnalyticEvent.workflow_built(user_id=user, workflow_id=wf_id, kind=workflow.kind)
        await outbox.add_event(
            self.pool, topic=analytic.topic, kafka_key=analytic.record_key(), event_key=analytic.event_key,
            payload=analytic,
        )
        if build_method(workflow.kind) == BuildMethod.SKIP:
            built = await self._set_status(workflow, WorkflowBuildStatus.COMPLETED, event.generation)
            await self._schedule_first_job(built, event)
            await self._notify(
                notes.build_skipped(user, wf_id, workflow.name, event.event_key), required=False
            )
            return Outcome.BUILT

        if workflow.build_status == WorkflowBuildStatus.QUEUED:
            workflow = await self._set_status(workflow, WorkflowBuildStatus.STARTED, event.generation)
            await self._notify(
                notes.build_started(user, wf_id, workflow.name, event.event_key), required=False
            )
        try:
            image = container_image(workflow.payload)
            if self.images is None:
                raise NotFound("no container runtime is configured for this worker")
            await self.images.ensure(image)
        except ChronoverseError as err:
            if err.retryable:
                raise  # transient (engine down, pull lock busy): stays STARTED, Kafka redelivers
            await self._set_status(workflow, WorkflowBuildStatus.FAILED, event.generation)
            await self._notify(
                notes.build_failed(user, wf_id, workflow.name, event.event_key, err.message), required=False
            )
            return Outcome.BUILD_FAILED
        built = await self._set_status(workflow, WorkflowBuildStatus.COMPLETED, event.generation)
        await self._schedule_first_job(built, event)
        await self._notify(notes.build_completed(user, wf_id, workflow.name, event.event_key), required=False)
        return Outcome.BUILT

    # ------------------------------------------------------------------ RESCHEDULE

    async def on_reschedule(self, event: WorkflowEvent) -> Outcome:
        workflow = await self._workflow(event.id)
        if decide_reschedule(event.generation, workflow) != RescheduleDecision.SCHEDULE:
            return Outcome.IGNORED
        assert workflow is not None
        action = WorkflowAction.RESCHEDULE
        async with locks.hold(self.redis, lock_key(action, event.id), lock_ttl(action)):
            await self._schedule_first_job(workflow, event)
        return Outcome.SCHEDULED

    # ------------------------------------------------------------------ TERMINATE

    async def on_terminate(self, event: WorkflowEvent) -> Outcome:
        workflow = await self._workflow(event.id)
        if decide_terminate(event.generation, workflow) != TerminateDecision.TERMINATE:
            return Outcome.IGNORED
        assert workflow is not None
        action = WorkflowAction.TERMINATE
        async with locks.hold(self.redis, lock_key(action, event.id), lock_ttl(action), renewing=True):
            await self._cancel(workflow, TERMINATE_CANCEL_ORDER)
            await self._notify(
                notes.terminated(str(workflow.user_id), str(workflow.id), workflow.name, event.event_key),
                required=False,
            )
        return Outcome.TERMINATED

    # ------------------------------------------------------------------ DELETE

    async def on_delete(self, event: WorkflowEvent) -> Outcome:
        if self.logs is None:
            log.warning("workflow %s deleted, but this worker has no log store: logs kept", event.id)
            return Outcome.IGNORED
        action = WorkflowAction.DELETE
        async with locks.hold(self.redis, lock_key(action, event.id), lock_ttl(action), renewing=True):
            await self.logs.delete_workflow(_uuid(event.user_id), _uuid(event.id))
        return Outcome.DELETED

    # ------------------------------------------------------------------ job outcomes

    async def on_job_completed(self, event: WorkflowEvent) -> Outcome:
        (outcome,) = await self.on_jobs_completed([event])
        return outcome

    async def on_jobs_completed(self, events: Sequence[WorkflowEvent]) -> list[Outcome]:
        """JOB_COMPLETED: reset the workflow's failure counter and tell the user — for a batch, with
        one read of the workflows and one transaction of notifications."""
        found = await workflows.get_many_by_id(self.pool, (_uuid(event.id) for event in events))
        outcomes: list[Outcome] = []
        drafts: list[NotificationDraft] = []
        reset: set[UUID] = set()
        for event in events:
            workflow = found.get(_uuid(event.id))
            if decide_job_outcome(workflow) == JobOutcomeDecision.IGNORE:
                outcomes.append(Outcome.IGNORED)
                continue
            assert workflow is not None
            # Only this workflow's own events raise the counter, and they are handled in order (one
            # partition, never two at once), so a 0 read here is still 0: skip the locking update.
            if workflow.consecutive_job_failures_count and workflow.id not in reset:
                reset.add(workflow.id)
                with contextlib.suppress(NotFound):  # terminated meanwhile: the counter stays (reference)
                    await workflows.reset_failures(
                        self.pool, workflow_id=workflow.id, user_id=workflow.user_id, cache=self.cache
                    )
            drafts.append(notes.job_completed(str(workflow.user_id), str(workflow.id), event.job_id,
                                              workflow.name))
            outcomes.append(Outcome.FAILURES_RESET)
        # Required, as every job-outcome notification: a failure retries the batch (idempotent).
        await notifications.create_drafts(self.pool, drafts)
        return outcomes

    async def on_job_failed(self, event: WorkflowEvent) -> Outcome:
        workflow = await self._workflow(event.id)
        if decide_job_outcome(workflow) == JobOutcomeDecision.IGNORE:
            return Outcome.IGNORED
        assert workflow is not None
        user, wf_id = str(workflow.user_id), str(workflow.id)
        reached = await workflows.increment_failures(
            self.pool, workflow_id=workflow.id, user_id=workflow.user_id, job_id=_uuid(event.job_id),
            cache=self.cache,
        )
        outcome = Outcome.FAILURE_COUNTED
        if reached:
            # Idempotent: a replay finds it terminated and adds no second TERMINATE event.
            await workflows.terminate(
                self.pool, user_id=workflow.user_id, workflow_id=workflow.id, cache=self.cache
            )
            await self._notify(
                notes.terminated_after_failures(
                    user, wf_id, workflow.name, workflow.generation,
                    workflow.max_consecutive_job_failures_allowed,
                ),
                required=True,
            )
            outcome = Outcome.AUTO_TERMINATED
        await self._notify(
            notes.job_failed(user, wf_id, event.job_id, workflow.name, event.error_message), required=True
        )
        return outcome


def _uuid(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise Invalid(f"not a UUID: {text!r}") from None


class WorkflowWorker:
    """Pool worker shell (``workflow-worker-<i>``): owns the connections and runs the handler.

    ``handle`` takes the consumer's record(s); an undecodable record raises
    :class:`~domain.errors.Invalid`, which the consumer commits and skips.
    """

    def __init__(self, settings: Settings, name: str) -> None:
        self.settings = settings
        self.name = name
        self.handler: WorkflowEventHandler | None = None
        self._resources: list[Any] = []
        self._startup = Startup(self._start)

    async def _start(self) -> None:
        from store.logstore.remote import log_store_client

        s = self.settings
        pool = await create_pool(s.postgres, min_size=1, max_size=4, application_name=self.name)
        redis = create_redis(s.redis, client_name=self.name)
        runtime = DockerRuntime(s.docker)
        self._resources = [pool, redis, runtime]
        self.handler = WorkflowEventHandler(
            pool,
            redis,
            images=ImageEnsurer(runtime, redis, s.workflow_worker),
            logs=log_store_client(s.clickhouse, s.ray.namespace),
            containers=RemoveByLabel(runtime),
            cache=Cache(redis),
        )

    async def ready(self) -> bool:
        await self._startup.wait()
        return True

    async def handle(self, records: ConsumedRecord | list[ConsumedRecord]) -> list[str]:
        await self._startup.wait()
        assert self.handler is not None
        batch = records if isinstance(records, list) else [records]
        return [str(outcome) for outcome in
                await self.handler.handle_many([record.decode(WorkflowEvent) for record in batch])]

    async def shutdown(self) -> None:
        pool, redis, runtime = self._resources or (None, None, None)
        if pool is not None:
            await pool.close()
        if redis is not None:
            await redis.aclose()
        if runtime is not None:
            runtime.close()
