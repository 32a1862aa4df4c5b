"""PostgreSQL LISTEN on a dedicated connection that survives connection loss.

The scheduler listens on ``chronoverse_jobs`` and the outbox relay on ``chronoverse_outbox``
(triggers in ``migrations/0001_schema.sql``).  A notification only *wakes* its listener — the
listener re-reads the tables — so a notification lost while the connection was down costs nothing
but latency: after every (re)connect the callback is also invoked once with ``payload=None``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

import asyncpg

from domain.config import PostgresConfig
from store.postgres import connect

log = logging.getLogger(__name__)

#: ``(channel, payload)``; payload ``None`` means "(re)connected: re-check everything".
NotifyCallback = Callable[[str, str | None], None]


class ChannelListener:
    """Keep one connection LISTENing on ``channels`` and call ``on_notify`` for each notification.

    ``run()`` loops until cancelled: connect, LISTEN, probe the connection every ``keepalive_s``
    (a silently dead socket would otherwise never deliver again), reconnect after
    ``reconnect_delay_s`` on any failure.  ``connected`` tells callers whether they can rely on
    notifications or should poll faster.
    """

    def __init__(
        self,
        cfg: PostgresConfig,
        channels: Sequence[str],
        on_notify: NotifyCallback,
        *,
        application_name: str = "chronoverse-listener",
        keepalive_s: float = 10.0,
        reconnect_delay_s: float = 1.0,
    ) -> None:
        self.cfg = cfg
        self.channels = tuple(channels)
        self.on_notify = on_notify
        self.application_name = application_name
        self.keepalive_s = keepalive_s
        self.reconnect_delay_s = reconnect_delay_s
        self.connected = False
        self.reconnects = 0

    def _deliver(self, _conn: object, _pid: int, channel: str, payload: str) -> None:
        self.on_notify(channel, payload)

    async def run(self) -> None:
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await connect(self.cfg, application_name=self.application_name)
                lost = asyncio.Event()
                conn.add_termination_listener(_setter(lost))
                for channel in self.channels:
                    await conn.add_listener(channel, self._deliver)
                self.connected = True
                for channel in self.channels:
                    self.on_notify(channel, None)
                await self._watch(conn, lost)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("LISTEN %s: connection failed: %s", ",".join(self.channels), err)
            finally:
                self.connected = False
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.terminate()
            self.reconnects += 1
            await asyncio.sleep(self.reconnect_delay_s)

    async def _watch(self, conn: asyncpg.Connection, lost: asyncio.Event) -> None:
        while not lost.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), self.keepalive_s)
                return
            await conn.execute("SELECT 1", timeout=self.keepalive_s)


def _setter(event: asyncio.Event) -> Callable[[object], None]:
    return lambda _conn: event.set()
