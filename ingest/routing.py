"""Least-loaded routing over a changing set of actors, with bounded in-flight work per actor and FIFO
waiting (pure asyncio logic, unit-tested without Ray).

Used on both sides of a pool: by the pool manager for calls made to the pool itself
(:meth:`actors.pool.PoolManager.handle`), and by every consumer actor feeding the pool, which routes
its records straight to the workers (:class:`ingest.consumer_actor.RecordForwarder`) with the
membership the manager publishes — one Ray call per batch instead of two.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

H = TypeVar("H")


@dataclass(eq=False)
class Member(Generic[H]):
    """One worker as the router sees it."""

    index: int
    handle: H
    ready: bool = False
    draining: bool = False
    in_flight: int = 0

    @property
    def routable(self) -> bool:
        return self.ready and not self.draining


class PoolRouter(Generic[H]):
    """Least-loaded routing with bounded in-flight work per member and FIFO waiting (pure logic)."""

    def __init__(self, max_in_flight: int) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.max_in_flight = max_in_flight
        self.members: dict[int, Member[H]] = {}
        self._waiters: deque[asyncio.Future[Member[H]]] = deque()
        self._idle: dict[int, asyncio.Event] = {}
        self.handled = 0
        self.failed = 0
        #: Bumped whenever the set of routable members may have changed (published memberships).
        self.version = 0

    # ---------------------------------------------------------------- membership

    def add(self, index: int, handle: H, *, ready: bool = True) -> Member[H]:
        if index in self.members:
            raise ValueError(f"member {index} exists")
        member = Member(index=index, handle=handle, ready=ready)
        self.members[index] = member
        self.version += 1
        self._idle[index] = asyncio.Event()
        self._idle[index].set()
        self._serve_waiters()
        return member

    def mark_ready(self, index: int) -> None:
        member = self.members.get(index)
        if member is not None:
            member.ready = True
            self.version += 1
            self._serve_waiters()

    def remove(self, index: int) -> Member[H] | None:
        self.version += 1
        self._idle.pop(index, None)
        return self.members.pop(index, None)

    def sync(self, routable: Mapping[int, H]) -> None:
        """Make the members exactly ``routable`` (a membership published elsewhere): new ones join
        ready, missing ones leave at once (their calls in flight still release harmlessly)."""
        for index in [i for i in self.members if i not in routable]:
            self.remove(index)
        for index, handle in routable.items():
            member = self.members.get(index)
            if member is None:
                self.add(index, handle)
            else:  # the same worker slot; an actor re-created there gets the new handle
                member.handle = handle

    def free_indexes(self, count: int) -> list[int]:
        """The ``count`` lowest indexes not in use (so names stay compact: -0, -1, …)."""
        out: list[int] = []
        candidate = 0
        while len(out) < count:
            if candidate not in self.members:
                out.append(candidate)
            candidate += 1
        return out

    def active(self) -> list[Member[H]]:
        """Members that are or will become routable (not draining), lowest index first."""
        return sorted((m for m in self.members.values() if not m.draining), key=lambda m: m.index)

    def start_drain(self, count: int) -> list[Member[H]]:
        """Stop routing to the ``count`` members that are least useful to keep: not-yet-ready ones
        first, then the highest indexes.  Returns them; wait for :meth:`wait_idle` before killing."""
        active = self.active()
        starting = [m for m in active if not m.ready]
        ready = sorted((m for m in active if m.ready), key=lambda m: m.index, reverse=True)
        chosen = (starting + ready)[:count]
        for member in chosen:
            member.draining = True
        self.version += 1
        return chosen

    async def wait_idle(self, index: int) -> None:
        event = self._idle.get(index)
        if event is not None:
            await event.wait()

    # ---------------------------------------------------------------- routing

    def _pick(self) -> Member[H] | None:
        best: Member[H] | None = None
        for member in self.members.values():
            if not member.routable or member.in_flight >= self.max_in_flight:
                continue
            if best is None or (member.in_flight, member.index) < (best.in_flight, best.index):
                best = member
        return best

    def _take(self, member: Member[H]) -> Member[H]:
        member.in_flight += 1
        self._idle[member.index].clear()
        return member

    def _serve_waiters(self) -> None:
        while self._waiters:
            waiter = self._waiters[0]
            if waiter.done():  # cancelled while waiting
                self._waiters.popleft()
                continue
            member = self._pick()
            if member is None:
                return
            self._waiters.popleft()
            waiter.set_result(self._take(member))

    def try_acquire(self) -> Member[H] | None:
        """A slot right now, or ``None`` (never jumps the queue of waiting callers)."""
        if any(not w.done() for w in self._waiters):
            return None
        member = self._pick()
        return self._take(member) if member is not None else None

    async def acquire(self) -> Member[H]:
        """Wait for a slot on the least loaded routable member (FIFO among waiters)."""
        member = self.try_acquire()
        if member is not None:
            return member
        waiter: asyncio.Future[Member[H]] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(waiter.result(), ok=True, counted=False)  # granted as we were cancelled
            raise

    def release(self, member: Member[H], *, ok: bool, counted: bool = True) -> None:
        member.in_flight -= 1
        if counted:
            if ok:
                self.handled += 1
            else:
                self.failed += 1
        if member.in_flight == 0 and member.index in self._idle:
            self._idle[member.index].set()
        self._serve_waiters()

    # ---------------------------------------------------------------- observation

    @property
    def queue_depth(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    @property
    def in_flight(self) -> int:
        return sum(m.in_flight for m in self.members.values())

    def load(self) -> dict[int, int]:
        """In-flight calls per member."""
        return {index: member.in_flight for index, member in self.members.items()}

    def counts(self) -> dict[str, int]:
        members = list(self.members.values())
        return {
            "size": sum(1 for m in members if m.routable),
            "starting": sum(1 for m in members if not m.ready and not m.draining),
            "draining": sum(1 for m in members if m.draining),
            "busy": sum(1 for m in members if m.routable and m.in_flight > 0),
            "queue_depth": self.queue_depth,
            "in_flight": self.in_flight,
        }
