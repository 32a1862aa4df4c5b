"""``ExecutionStub``: a stand-in for the execution pool's worker until the real executor is deployed.

It acknowledges ``jobs`` dispatch records and does nothing else: it claims no job, so dispatched
jobs stay QUEUED and the scheduler re-dispatches them after ``redispatch_timeout``.  It exists so
the backbone (scheduler → outbox → Kafka → consumer → pool) can run end to end on its own; it is
never reported as real execution (``chronoverse status`` shows its class name).
"""

from __future__ import annotations

import logging

from domain.config import Settings
from ingest.consumer import ConsumedRecord
from ingest.events import ScheduledJobEntry

log = logging.getLogger(__name__)


class ExecutionStub:
    """Pool worker that logs each dispatch and executes nothing."""

    def __init__(self, settings: Settings, name: str) -> None:
        self.name = name
        self.seen = 0

    async def ready(self) -> bool:
        return True

    async def handle(self, records: ConsumedRecord | list[ConsumedRecord]) -> list[str]:
        batch = records if isinstance(records, list) else [records]
        keys = []
        for record in batch:
            entry = record.decode(ScheduledJobEntry)
            self.seen += 1
            keys.append(entry.event_key)
            log.info("%s (ExecutionStub): not executing job %s, dispatch %d", self.name, entry.job_id,
                     entry.dispatch_attempt)
        return keys

    async def shutdown(self) -> None:
        return None
