"""The joblogs processor: ``job_logs`` batches → the ClickHouse log store, log-line analytics and
late live publishing (reference §8 "joblogs-processor", §6.6).

The consumer hands a batch (≤ ``JOBLOGS_PROCESSOR_BATCH_JOB_LOGS_SIZE_LIMIT`` records, waiting at
most ``…_TIME_INTERVAL``) to :meth:`JoblogsProcessor.handle_batch`, which:

1. parses the records (undecodable ones and ones with non-UUID ids are dropped) and dedupes them by
   event id within the batch;
2. keeps the lines whose workflow still exists for that user; lines of deleted workflows are
   dropped and any of their event ids already stored are deleted;
3. inserts the retained lines into the log store — which ignores event ids it has, so a replayed
   batch adds nothing — with ``expires_at`` from the workflow's optional retention period;
4. re-checks the workflows (one deleted meanwhile has its just-written lines removed again);
5. counts every surviving line, retained or not, into ``analytics.logs_count`` deduplicated by
   event id (``processed_events`` consumer ``joblogs-processor:analytics``);
6. live-publishes retained lines that the executor did not (replays from recovery/termination).

Any failure raises, and the consumer retries the whole batch (every step is idempotent).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from datetime import timedelta
from typing import Any
from uuid import UUID

import asyncpg
from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis

from actors.lifecycle import Startup
from domain.config import Settings
from domain.errors import ChronoverseError, NotFound, Unavailable
from domain.log_lines import LiveLogMessage, LogLine, live_channel
from domain.models import Workflow
from ingest.consumer import ConsumedRecord
from ingest.events import JobLogEvent
from store import analytics
from store import workflows as workflows_repo
from store.logstore import LogRow, LogStore
from store.postgres import create_pool
from store.redis import create_redis

log = logging.getLogger(__name__)

#: Live publishes of one batch in flight at once.
LIVE_PUBLISH_CONCURRENCY = 32


class BatchResult(BaseModel):
    """What one batch did (returned to the pool; tests read it)."""

    model_config = ConfigDict(frozen=True)

    received: int
    dropped: int  # undecodable, or of a deleted workflow
    stored: int  # new lines in the log store
    counted: int  # new lines added to analytics
    live_published: int


class _Line:
    __slots__ = ("event", "job_id", "user_id", "workflow_id")

    def __init__(self, event: JobLogEvent, job_id: UUID, workflow_id: UUID, user_id: UUID) -> None:
        self.event = event
        self.job_id = job_id
        self.workflow_id = workflow_id
        self.user_id = user_id


def _parse(records: Sequence[ConsumedRecord]) -> tuple[list[_Line], int]:
    lines: dict[str, _Line] = {}
    dropped = 0
    for record in records:
        try:
            event = JobLogEvent.model_validate_json(record.value)
            line = _Line(event, UUID(event.job_id), UUID(event.workflow_id), UUID(event.user_id))
        except ValueError:  # pydantic's ValidationError is a ValueError, as is a bad UUID
            dropped += 1
            continue
        lines.setdefault(event.event_key, line)
    return list(lines.values()), dropped


class JoblogsProcessor:
    """Handles ``job_logs`` batches (see the module docstring)."""

    def __init__(self, *, db: asyncpg.Pool, store: LogStore, redis: Redis | None) -> None:
        self.db = db
        self.store = store
        self.redis = redis

    async def handle(self, records: ConsumedRecord | list[ConsumedRecord]) -> BatchResult:
        """Pool entry point: a batch (or a single record)."""
        return await self.handle_batch(records if isinstance(records, list) else [records])

    async def handle_batch(self, records: Sequence[ConsumedRecord]) -> BatchResult:
        lines, dropped = _parse(records)
        live = await self._workflows({(line.workflow_id, line.user_id) for line in lines})
        kept = [line for line in lines if (line.workflow_id, line.user_id) in live]
        gone = [line for line in lines if (line.workflow_id, line.user_id) not in live]
        dropped += len(gone)
        await self._forget(gone)

        stored = await self.store.insert([self._row(line, live) for line in kept if line.event.retention])

        still = await self._workflows({(line.workflow_id, line.user_id) for line in kept})
        vanished = [line for line in kept if (line.workflow_id, line.user_id) not in still]
        if vanished:
            dropped += len(vanished)
            await self._forget(vanished)
            kept = [line for line in kept if (line.workflow_id, line.user_id) in still]

        counted = await self._count(kept)
        published = await self._publish_live([line for line in kept
                                              if line.event.retention and not line.event.live_published])
        return BatchResult(received=len(records), dropped=dropped, stored=stored, counted=counted,
                           live_published=published)

    async def _workflows(self, keys: set[tuple[UUID, UUID]]) -> dict[tuple[UUID, UUID], Workflow]:
        """The workflows among ``keys`` that exist and belong to that user."""
        found: dict[tuple[UUID, UUID], Workflow] = {}
        for workflow_id, user_id in keys:
            try:
                workflow = await workflows_repo.get_by_id(self.db, workflow_id)
            except NotFound:
                continue
            if workflow.user_id == user_id:
                found[(workflow_id, user_id)] = workflow
        return found

    async def _forget(self, lines: Sequence[_Line]) -> None:
        retained = [line.event.event_key for line in lines if line.event.retention]
        if retained:
            await self.store.delete_events(retained)

    @staticmethod
    def _row(line: _Line, workflows: dict[tuple[UUID, UUID], Workflow]) -> LogRow:
        event = line.event
        ttl = workflows[(line.workflow_id, line.user_id)].log_retention_ttl_seconds
        return LogRow(
            event_id=event.event_key,
            user_id=line.user_id,
            workflow_id=line.workflow_id,
            job_id=line.job_id,
            timestamp=event.timestamp,
            message=event.message,
            sequence_num=event.sequence_num,
            stream=event.stream,
            attempt=event.attempt,
            expires_at=event.timestamp + timedelta(seconds=ttl) if ttl else None,
        )

    async def _count(self, lines: Sequence[_Line]) -> int:
        by_workflow: dict[tuple[UUID, UUID], list[str]] = defaultdict(list)
        for line in lines:
            by_workflow[(line.workflow_id, line.user_id)].append(line.event.event_key)
        counted = 0
        for (workflow_id, user_id), keys in by_workflow.items():
            try:
                counted += await analytics.add_log_lines(self.db, event_keys=keys, user_id=user_id,
                                                         workflow_id=workflow_id)
            except NotFound:
                continue  # the user was deleted: nothing to count against
        return counted

    async def _publish_live(self, lines: Sequence[_Line]) -> int:
        if self.redis is None or not lines:
            return 0
        redis = self.redis
        gate = asyncio.Semaphore(LIVE_PUBLISH_CONCURRENCY)

        async def publish(line: _Line) -> bool:
            event = line.event
            message = LiveLogMessage.log(
                job_id=line.job_id, workflow_id=line.workflow_id, event_id=event.event_key,
                line=LogLine(stream=event.stream, sequence_num=event.sequence_num, message=event.message,
                             timestamp=event.timestamp.replace(tzinfo=None)),
            )
            async with gate:
                try:
                    await redis.publish(live_channel(line.job_id), message.model_dump_json())
                    return True
                except Exception as err:  # live delivery is best effort; the store has the line
                    log.debug("late live publish failed for %s: %s", event.event_key, err)
                    return False

        results = await asyncio.gather(*(publish(line) for line in lines))
        return sum(results)


class JoblogsProcessorActor:
    """Pool worker shell (``joblogs-processor-<i>``): connections, the log-store client, and
    :class:`JoblogsProcessor`.  Pool contract: ``__init__(settings, name)``, ``handle``, ``ready``,
    ``shutdown``."""

    def __init__(self, settings: Settings, name: str) -> None:
        self.settings = settings
        self.name = name
        self.processor: JoblogsProcessor | None = None
        self._resources: list[Any] = []
        self._startup = Startup(self._start)

    async def _start(self) -> None:
        from store.logstore.remote import log_store_client

        s = self.settings
        db = await create_pool(s.postgres, min_size=1, max_size=4, application_name=self.name)
        redis = create_redis(s.redis, client_name=self.name)
        store = log_store_client(s.clickhouse, s.ray.namespace)
        self._resources = [db, redis, store]
        self.processor = JoblogsProcessor(db=db, store=store, redis=redis)

    async def _ready_processor(self) -> JoblogsProcessor:
        await self._startup.wait()  # a start that failed (PostgreSQL down) is retried here
        assert self.processor is not None
        return self.processor

    async def ready(self) -> bool:
        await self._ready_processor()
        return True

    async def handle(self, records: ConsumedRecord | list[ConsumedRecord]) -> BatchResult:
        processor = await self._ready_processor()
        try:
            return await processor.handle(records)
        except ChronoverseError:
            raise
        except Exception as err:  # keep the error picklable and retryable for the consumer
            raise Unavailable(f"joblogs batch failed: {type(err).__name__}: {err}") from None

    async def shutdown(self) -> None:
        if not self._resources:
            return
        db, redis, store = self._resources
        await store.close()
        await redis.aclose()
        await db.close()
