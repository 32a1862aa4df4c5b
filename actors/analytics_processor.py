"""The analytics processor: ``analytics`` records → the ``analytics`` table (reference §8, §6.6).

Each :class:`~ingest.events.AnalyticEvent` is applied together with its ``processed_events``
record (consumer ``analytics-processor``) — a batch of them in one transaction — so a replay
changes nothing:

* ``WORKFLOWS`` ``{"kind"}`` — the workflow's row is created (it now counts in ``total_workflows``);
* ``JOBS`` ``{"job_execution_duration", "succeeded"?}`` — ``jobs_count + 1``, the seconds added,
  and the success or failure counter when the event says which;
* ``LOGS`` ``{"count"}`` — ``logs_count + count``.

An event with a malformed ``data`` is skipped (:class:`~domain.errors.Invalid`: replaying it can
never succeed); one for a deleted user is acknowledged with no effect.  A cleanup loop deletes
``processed_events`` rows (of every consumer) older than ``ANALYTICS_PROCESSED_EVENTS_RETENTION``,
``…_CLEANUP_BATCH_SIZE`` at a time every ``…_CLEANUP_INTERVAL``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from uuid import UUID

import asyncpg

from actors.lifecycle import Startup
from domain.config import AnalyticsProcessorConfig, Settings
from domain.enums import AnalyticsEventType, WorkflowKind
from domain.errors import Invalid, NotFound
from ingest.consumer import ConsumedRecord
from ingest.events import AnalyticEvent
from store import analytics, processed_events
from store.postgres import create_pool

log = logging.getLogger(__name__)


def _number(event: AnalyticEvent, field: str) -> int:
    value = event.data.get(field)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(f"analytics event {event.event_key!r}: data.{field} must be a number")
    return int(value)


class AnalyticsProcessor:
    """Applies analytics events and purges old dedupe records (see the module docstring)."""

    def __init__(self, *, db: asyncpg.Pool, cfg: AnalyticsProcessorConfig) -> None:
        self.db = db
        self.cfg = cfg
        self._cleanup: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the cleanup loop (when enabled); call on the event loop."""
        if self.cfg.processor_cleanup_enabled and self._cleanup is None:
            self._cleanup = asyncio.create_task(self._cleanup_loop())

    async def close(self) -> None:
        if self._cleanup is not None:
            self._cleanup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._cleanup
            self._cleanup = None

    async def handle(self, records: ConsumedRecord | list[ConsumedRecord]) -> list[bool]:
        """Pool entry point; one bool per record: applied (``False`` = replay or no effect).

        The batch is applied in one transaction.  A malformed event raises :class:`Invalid` for the
        whole batch (the consumer then re-delivers record by record and skips only that one); a
        batch naming a deleted user is re-applied event by event so the others still count.
        """
        batch = records if isinstance(records, list) else [records]
        changes = [self.change_for(record.decode(AnalyticEvent)) for record in batch]
        present = [change for change in changes if change is not None]
        try:
            applied = iter(await analytics.apply_changes(self.db, present))
        except NotFound:
            return [await self._apply_alone(change) for change in changes]
        return [change is not None and next(applied) for change in changes]

    async def apply(self, event: AnalyticEvent) -> bool:
        """Apply one event; ``False`` when it was already applied (or its user is gone)."""
        return await self._apply_alone(self.change_for(event))

    async def _apply_alone(self, change: analytics.AnalyticsChange | None) -> bool:
        if change is None:
            return False
        try:
            return (await analytics.apply_changes(self.db, [change]))[0]
        except NotFound:
            log.info("analytics event %s: its user no longer exists", change.event_key)
            return False

    @staticmethod
    def change_for(event: AnalyticEvent) -> analytics.AnalyticsChange | None:
        """What ``event`` changes (``None``: nothing, e.g. a zero log count); :class:`Invalid` when
        its ids or ``data`` are malformed (replaying it can never succeed)."""
        try:
            user_id, workflow_id = UUID(event.user_id), UUID(event.workflow_id)
        except ValueError:
            raise Invalid(f"analytics event {event.event_key!r}: ids must be UUIDs") from None
        if event.event_type is AnalyticsEventType.WORKFLOWS:
            try:
                kind = WorkflowKind(str(event.data.get("kind", "")))
            except ValueError:
                raise Invalid(f"analytics event {event.event_key!r}: unknown kind") from None
            return analytics.workflow_created(
                event_key=event.event_key, user_id=user_id, workflow_id=workflow_id, kind=kind)
        if event.event_type is AnalyticsEventType.JOBS:
            succeeded = event.data.get("succeeded")
            return analytics.job_finished(
                event_key=event.event_key, user_id=user_id, workflow_id=workflow_id,
                duration_s=_number(event, "job_execution_duration"),
                succeeded=succeeded if isinstance(succeeded, bool) else None)
        return analytics.log_count(
            event_key=event.event_key, user_id=user_id, workflow_id=workflow_id,
            count=_number(event, "count"))

    async def cleanup_once(self) -> int:
        """Delete expired dedupe records in batches until none is left; return how many."""
        total = 0
        while True:
            deleted = await processed_events.cleanup(self.db, retention=self.cfg.processed_events_retention,
                                                      batch_size=self.cfg.processor_cleanup_batch_size)
            total += deleted
            if deleted < self.cfg.processor_cleanup_batch_size:
                return total

    async def _cleanup_loop(self) -> None:
        while True:
            try:
                deleted = await self.cleanup_once()
                if deleted:
                    log.info("purged %d processed-event records", deleted)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("processed-events cleanup failed")
            await asyncio.sleep(self.cfg.processor_cleanup_interval.total_seconds())


class AnalyticsProcessorActor:
    """Pool worker shell (``analytics-processor-<i>``).  Pool contract: ``__init__(settings, name)``,
    ``handle``, ``ready``, ``shutdown``."""

    def __init__(self, settings: Settings, name: str) -> None:
        self.settings = settings
        self.name = name
        self.processor: AnalyticsProcessor | None = None
        self._db: Any = None
        self._startup = Startup(self._start)

    async def _start(self) -> None:
        self._db = await create_pool(self.settings.postgres, min_size=1, max_size=4,
                                     application_name=self.name)
        self.processor = AnalyticsProcessor(db=self._db, cfg=self.settings.analytics)
        self.processor.start()

    async def _ready_processor(self) -> AnalyticsProcessor:
        await self._startup.wait()  # a start that failed (PostgreSQL down) is retried here
        assert self.processor is not None
        return self.processor

    async def ready(self) -> bool:
        await self._ready_processor()
        return True

    async def handle(self, records: ConsumedRecord | list[ConsumedRecord]) -> list[bool]:
        return await (await self._ready_processor()).handle(records)

    async def shutdown(self) -> None:
        await self._startup.settle()
        if self.processor is not None:
            await self.processor.close()
        if self._db is not None:
            await self._db.close()
