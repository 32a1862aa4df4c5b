"""The asynchronous start of an actor shell, retried when it failed.

Actor shells open their connections (PostgreSQL pool, Redis, Kafka producer) in a task started from
``__init__`` — async actors run ``__init__`` on their event loop — so creation never blocks.  If that
start fails (a dependency was down), the next call that needs it starts again instead of leaving the
actor broken for good.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


class Startup:
    """Runs ``start`` now; :meth:`wait` returns once it succeeded, restarting it after a failure."""

    def __init__(self, start: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._start = start
        self._task = asyncio.get_event_loop().create_task(start())

    async def wait(self) -> None:
        task = self._task
        if task.done() and not task.cancelled() and task.exception() is not None:
            self._task = task = asyncio.get_running_loop().create_task(self._start())
        await asyncio.shield(task)

    async def settle(self) -> None:
        """Wait for the start in progress to end, however it ends, without starting it again
        (shutdown: close whatever it opened)."""
        await asyncio.wait([self._task])
