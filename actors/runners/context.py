"""What every runner gets besides its payload: the job's identity, a log sink and a hook to record
the container (or other external handle) that runs the job.

Runners never touch leases or the database themselves; the execution worker owns those and cancels
the runner's task when the lease is lost (a runner must clean up on ``CancelledError``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from domain.log_lines import LogLine


class LogSink(Protocol):
    """Where a runner writes numbered lines (the execution worker's :class:`LogPublisher`)."""

    async def write(self, line: LogLine) -> None:
        """Accept one line; may wait (backpressure) but never raises for delivery problems."""
        ...


async def _no_attach(_: str) -> None:
    return None


@dataclass(frozen=True)
class RunContext:
    """The job a runner executes.  ``attach`` records an external handle (a container id) under
    the job's lease and raises if the lease is gone, which must abort the run."""

    job_id: UUID
    workflow_id: UUID
    user_id: UUID
    attempt: int
    attach: Callable[[str], Awaitable[None]] = _no_attach
