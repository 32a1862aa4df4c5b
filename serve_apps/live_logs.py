"""Live job logs for every viewer of one replica over ONE Redis pub/sub connection (SPEC §5.6).

The execution worker publishes each line of a running job, then an ``end`` marker, on the job's
channel :func:`~domain.log_lines.live_channel` (see :mod:`actors.log_publisher`).  Two pieces here
serve them to any number of viewers, whatever the transport (SSE in
:mod:`serve_apps.gateway.routers.job_logs`, gRPC ``StreamJobLogs`` in :mod:`serve_apps.grpc`):

* :class:`LiveLogHub` — one per Gateway / GrpcGateway replica (made at replica start, closed at
  shutdown).  It holds one pub/sub connection and reference-counts channels: the first viewer of
  a job subscribes its channel, the last one to leave unsubscribes it.  Each message is parsed
  once and handed to every viewer's own bounded buffer (:class:`Subscription`), so a slow viewer
  never blocks the others.

  - **Slow viewer.**  A viewer holds at most ``viewer_buffer`` undelivered lines.  When one more
    arrives it *falls behind*: the hub stops delivering to it, it still reads the lines it was
    given (in order, no gap), and then gets :class:`~domain.errors.RateLimited` (code
    ``live_logs_fell_behind``) instead of a silent gap.  Memory per viewer stays bounded.
  - **Lost connection.**  The hub reconnects with exponential backoff and resubscribes every
    channel that still has viewers.  Each viewer that was already following a channel finds a
    marker at that point of its buffer and gets :class:`~domain.errors.Unavailable` (code
    ``live_logs_interrupted``: lines may have been missed) when it reads it; lines after the
    resubscription follow the marker.  A silent half-open connection is caught by a PING when
    the connection has been idle for ``health_interval_s``.
  - **Subscribe before the check.**  :meth:`LiveLogHub.subscribe` returns only once Redis has
    confirmed the subscription on the current connection, so the caller's status/ownership
    check comes after it and no line published in between is lost.

* :func:`follow_job_logs` — the viewer's side: subscribe, check (``open_live_logs``), then typed
  events :class:`LiveConnected`, :class:`LiveLine` …, and one final :class:`LiveEnd` or
  :class:`LiveError`, with a :class:`LiveKeepalive` when idle.  The job's status is polled as a
  safety net so every stream ends even if the ``end`` marker is lost (:class:`FollowTiming`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Protocol
from uuid import UUID

from pydantic import ValidationError
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from domain.config import RedisConfig
from domain.enums import JobStatus
from domain.errors import ChronoverseError, RateLimited, Unavailable
from domain.log_lines import LiveLogMessage, live_channel
from serve_apps.schemas.jobs import JobOut, JobRef
from serve_apps.services.context import CallContext
from store.redis import create_redis

log = logging.getLogger("chronoverse.live_logs")

#: Undelivered lines one viewer may hold before it counts as fallen behind.
DEFAULT_VIEWER_BUFFER = 1000
#: First and longest wait between reconnect attempts.
RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 5.0
#: An idle connection is PINGed this often; no answer within the same time means it is dead.
HEALTH_INTERVAL_S = 30.0

#: Code of the error a viewer gets after it fell behind (RESOURCE_EXHAUSTED over gRPC).
FELL_BEHIND_CODE = "live_logs_fell_behind"
#: Code of the error a viewer gets where lines may be missing (UNAVAILABLE over gRPC).
INTERRUPTED_CODE = "live_logs_interrupted"


def fell_behind() -> RateLimited:
    """What a viewer that could not keep up gets after its buffered lines."""
    return RateLimited(
        "the live log stream moved faster than this viewer read it; reconnect to follow it again",
        retry_after_s=1.0,
        code=FELL_BEHIND_CODE,
    )


def interrupted(reason: str) -> Unavailable:
    """What a following viewer gets where lines may have been missed."""
    return Unavailable(f"live logs interrupted ({reason}); lines may have been missed", code=INTERRUPTED_CODE)


class Subscription:
    """One viewer's subscription to one job's channel: a bounded buffer filled by the hub.

    Read it with :meth:`next`; always :meth:`close` it (the last viewer of a channel to close
    unsubscribes it).
    """

    def __init__(self, hub: LiveLogHub, channel: str, capacity: int) -> None:
        self.channel = channel
        self._hub = hub
        self._capacity = capacity
        # Lines, and Unavailable markers where the connection was lost (never two in a row).
        self._items: deque[LiveLogMessage | Unavailable] = deque()
        self._lines = 0
        self._behind = False
        self._wake = asyncio.Event()
        self.closed = False

    @property
    def buffered(self) -> int:
        """Lines received and not read yet."""
        return self._lines

    @property
    def fell_behind(self) -> bool:
        """Whether the hub stopped delivering because the buffer was full."""
        return self._behind

    def _deliver(self, message: LiveLogMessage) -> None:
        if self._behind or self.closed:
            return
        if self._lines >= self._capacity:
            self._behind = True
        else:
            self._items.append(message)
            self._lines += 1
        self._wake.set()

    def _interrupt(self, error: Unavailable) -> None:
        if self.closed or self._behind:
            return
        if not self._items or not isinstance(self._items[-1], Unavailable):
            self._items.append(error)
        self._wake.set()

    async def next(self, wait_s: float | None = None) -> LiveLogMessage | None:
        """The next message, or ``None`` after ``wait_s`` seconds without one (``None``: wait).

        Raises :class:`~domain.errors.Unavailable` once where lines may have been missed (reading
        on continues after the gap), and :class:`~domain.errors.RateLimited` once the buffered
        lines of a viewer that fell behind are read (and on every call after that).
        """
        while True:
            if self._items:
                item = self._items.popleft()
                if isinstance(item, Unavailable):
                    raise item
                self._lines -= 1
                return item
            if self._behind:
                raise fell_behind()
            self._wake.clear()
            try:
                async with asyncio.timeout(wait_s):
                    await self._wake.wait()
            except TimeoutError:
                return None

    async def close(self) -> None:
        """Leave the channel (idempotent)."""
        if not self.closed:
            self.closed = True
            self._items.clear()
            await self._hub._leave(self)


@dataclass
class _Channel:
    """A channel with viewers.  ``ready`` resolves once Redis confirmed the subscription on the
    current connection; it is replaced by a pending one when the connection is lost."""

    ready: asyncio.Future[None]
    viewers: set[Subscription] = field(default_factory=set)


class LiveLogHub:
    """One Redis pub/sub connection shared by every live-log viewer of this process (module doc).

    Nothing is opened until the first :meth:`subscribe`; from then on one background task owns
    the connection (reading, reconnecting) until :meth:`close`.
    """

    def __init__(
        self,
        cfg: RedisConfig,
        *,
        client_name: str = "chronoverse-live-logs",
        viewer_buffer: int = DEFAULT_VIEWER_BUFFER,
        confirm_timeout_s: float | None = None,
        reconnect_min_s: float = RECONNECT_MIN_S,
        reconnect_max_s: float = RECONNECT_MAX_S,
        health_interval_s: float = HEALTH_INTERVAL_S,
    ) -> None:
        if viewer_buffer <= 0:
            raise ValueError("viewer_buffer must be positive")
        self._cfg = cfg
        self.client_name = client_name
        self._viewer_buffer = viewer_buffer
        self._confirm_timeout_s = (
            confirm_timeout_s or max(cfg.read_timeout, cfg.write_timeout).total_seconds()
        )
        self._reconnect_min_s = reconnect_min_s
        self._reconnect_max_s = reconnect_max_s
        self._health_interval_s = health_interval_s
        self._channels: dict[str, _Channel] = {}
        # On the current connection: channels whose last command was SUBSCRIBE, and how many
        # SUBSCRIBE confirmations per channel are still to come.
        self._subscribed: set[str] = set()
        self._unconfirmed: Counter[str] = Counter()
        self._redis: Redis | None = None
        self._pubsub: PubSub | None = None
        self._lock: asyncio.Lock | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closed = False
        #: Connections made so far (a reconnect makes it grow); for metrics and tests.
        self.connections = 0

    # -- viewers ---------------------------------------------------------------------------------

    @property
    def channels(self) -> dict[str, int]:
        """Viewers per subscribed channel."""
        return {name: len(entry.viewers) for name, entry in self._channels.items()}

    async def subscribe(self, job_id: UUID) -> Subscription:
        """Follow ``job_id``'s channel; returns once Redis confirmed the subscription.

        :class:`~domain.errors.Unavailable` when the hub is closed or the confirmation did not
        come within the confirm timeout (Redis down).
        """
        if self._closed:
            raise Unavailable("live logs are unavailable: the server is shutting down")
        name = live_channel(job_id)
        entry = self._channels.get(name)
        if entry is None:
            entry = self._channels[name] = _Channel(ready=asyncio.get_running_loop().create_future())
        sub = Subscription(self, name, self._viewer_buffer)
        entry.viewers.add(sub)
        ready = entry.ready
        try:
            self._start_reader()
            await self._sync()
            # asyncio.wait neither raises when ``ready`` is cancelled (hub closed) nor cancels it
            # on timeout (other viewers may be waiting for it too).
            await asyncio.wait({ready}, timeout=self._confirm_timeout_s)
        except BaseException:
            await sub.close()
            raise
        if not ready.done() or ready.cancelled():
            await sub.close()
            if self._closed:
                raise Unavailable("live logs are unavailable: the server is shutting down")
            raise Unavailable("live logs are unavailable: Redis did not confirm the subscription")
        return sub

    async def _leave(self, sub: Subscription) -> None:
        entry = self._channels.get(sub.channel)
        if entry is None:
            return
        entry.viewers.discard(sub)
        if not entry.viewers:
            del self._channels[sub.channel]
            entry.ready.cancel()
            await self._sync()

    async def close(self) -> None:
        """Stop the connection; viewers still following get ``Unavailable`` (idempotent)."""
        self._closed = True
        self._interrupt_all("the server is shutting down")
        reader, self._reader = self._reader, None
        while reader is not None and not reader.done():
            # Python 3.11's asyncio.wait_for (redis-py's connect) can swallow a cancellation that
            # races a completing connect: cancel until the task has really ended.
            reader.cancel()
            await asyncio.wait({reader}, timeout=0.5)
        for entry in self._channels.values():
            entry.ready.cancel()
        redis, self._redis = self._redis, None
        if redis is not None:
            await redis.aclose()

    # -- the connection --------------------------------------------------------------------------

    def _start_reader(self) -> None:
        if self._reader is None:
            self._lock = asyncio.Lock()
            self._reader = asyncio.create_task(self._run(), name="live-log-hub")

    def _client(self) -> Redis:
        if self._redis is None:
            # redis-py would silently reconnect and resubscribe a dropped pub/sub connection,
            # hiding the gap from viewers: errors must reach _run, which reconnects and says so.
            self._redis = create_redis(self._cfg, client_name=self.client_name, retry_on_error=False)
        return self._redis

    async def _sync(self) -> None:
        """Make the connection's subscriptions match the channels that have viewers.  One at a
        time (the lock), so SUBSCRIBE/UNSUBSCRIBE of one channel reach Redis in decision order."""
        if self._lock is None:
            return
        async with self._lock:
            pubsub = self._pubsub
            if pubsub is None:
                return  # _run subscribes everything once it is connected
            drop = [name for name in self._subscribed if name not in self._channels]
            add = [name for name in self._channels if name not in self._subscribed]
            try:
                if drop:
                    self._subscribed.difference_update(drop)
                    await pubsub.unsubscribe(*drop)
                if add:
                    self._subscribed.update(add)
                    self._unconfirmed.update(add)
                    await pubsub.subscribe(*add)
            except (RedisError, OSError) as exc:
                # The reader sees the same broken connection and reconnects.
                log.warning("live log subscription change failed: %s", exc)
                if pubsub.connection is not None:
                    await pubsub.connection.disconnect(nowait=True)

    async def _run(self) -> None:
        delay = self._reconnect_min_s
        while not self._closed:
            pubsub: PubSub | None = None
            try:
                pubsub = self._client().pubsub()
                await pubsub.connect()
                self.connections += 1
                assert self._lock is not None
                async with self._lock:
                    self._pubsub = pubsub
                    self._subscribed.clear()
                    self._unconfirmed.clear()
                await self._sync()
                delay = self._reconnect_min_s
                await self._read(pubsub)
            except (RedisError, OSError) as exc:
                log.warning("live log connection lost (%s); reconnecting in %.1fs", exc, delay)
            except Exception:  # a bug must not end live logs for the replica's lifetime
                log.exception("live log reader failed; reconnecting in %.1fs", delay)
            finally:
                self._pubsub = None
                self._interrupt_all("the Redis connection was lost")
                if pubsub is not None:
                    with contextlib.suppress(RedisError, OSError):
                        await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._reconnect_max_s)

    async def _read(self, pubsub: PubSub) -> None:
        pinged = False
        while True:
            message = await pubsub.get_message(timeout=self._health_interval_s)
            if message is None:
                if pinged:
                    raise ConnectionError(f"no answer to PING within {self._health_interval_s:g}s")
                assert self._lock is not None
                async with self._lock:
                    await pubsub.ping()
                pinged = True
                continue
            pinged = False
            kind = message["type"]
            if kind == "message":
                self._fan_out(message["channel"], message["data"])
            elif kind == "subscribe":
                self._confirmed(message["channel"])

    def _confirmed(self, name: str) -> None:
        self._unconfirmed[name] -= 1
        if self._unconfirmed[name] > 0:
            return  # an older SUBSCRIBE of this channel; the newest one is still to come
        del self._unconfirmed[name]
        entry = self._channels.get(name)
        if entry is not None and name in self._subscribed and not entry.ready.done():
            entry.ready.set_result(None)

    def _fan_out(self, name: str, data: str) -> None:
        entry = self._channels.get(name)
        if entry is None:
            return
        try:
            message = LiveLogMessage.model_validate_json(data)
        except ValidationError:
            log.warning("ignoring a malformed message on %s", name)
            return
        for sub in entry.viewers:
            sub._deliver(message)

    def _interrupt_all(self, reason: str) -> None:
        """Viewers following a channel may have missed lines; new viewers wait for the
        resubscription."""
        for entry in self._channels.values():
            if entry.ready.done():
                error = interrupted(reason)
                for sub in entry.viewers:
                    sub._interrupt(error)
                entry.ready = asyncio.get_running_loop().create_future()


# ---------------------------------------------------------------------------------------------
# Following one job


@dataclass(frozen=True, slots=True)
class LiveConnected:
    """The subscription is confirmed and the job may be followed (SSE ``connected``)."""


@dataclass(frozen=True, slots=True)
class LiveLine:
    """A new line of the job (SSE ``log``)."""

    message: LiveLogMessage


@dataclass(frozen=True, slots=True)
class LiveKeepalive:
    """Nothing happened for a keepalive interval (SSE comment line; gRPC sends nothing)."""


@dataclass(frozen=True, slots=True)
class LiveEnd:
    """Last event: the job finished with ``status`` (SSE ``end``)."""

    status: JobStatus | None


@dataclass(frozen=True, slots=True)
class LiveError:
    """Last event: the stream cannot (or can no longer) be served.  ``error`` is what each
    transport maps once (a domain error, or whatever a service call raised)."""

    error: BaseException


LiveEvent = LiveConnected | LiveLine | LiveKeepalive | LiveEnd | LiveError


@dataclass(frozen=True, slots=True)
class FollowTiming:
    """How a follower paces itself."""

    #: Idle streams get a :class:`LiveKeepalive` this often, so proxies keep them open.
    keepalive_interval_s: float = 15.0
    #: How often the job's status is re-read (the ``end`` marker is the fast path).
    status_poll_interval_s: float = 2.0
    #: After the poll saw a finished job, lines and the ``end`` marker still in flight get this long.
    end_grace_s: float = 2.0


class LiveJobChecks(Protocol):
    """What a follower asks the jobs service (:class:`serve_apps.services.jobs.JobsService`)."""

    def open_live_logs(self, ctx: CallContext, ref: JobRef, /) -> Awaitable[JobOut]: ...

    def get_job(self, ctx: CallContext, ref: JobRef, /) -> Awaitable[JobOut]: ...


async def follow_job_logs(
    hub: LiveLogHub, jobs: LiveJobChecks, ctx: CallContext, ref: JobRef, timing: FollowTiming = FollowTiming()
) -> AsyncIterator[LiveEvent]:
    """The events of one viewer of ``ref``: :class:`LiveError` alone when the subscription or the
    check (``open_live_logs``: the caller's RUNNING job of a workflow that keeps logs) fails;
    else :class:`LiveConnected`, lines published after it, and a last :class:`LiveEnd` (the
    ``end`` marker, or the status poll saw the job finish and the grace period passed) or
    :class:`LiveError` (a poll failed, the viewer fell behind, lines may have been missed)."""
    try:
        sub = await hub.subscribe(ref.job_id)
    except Exception as exc:
        yield LiveError(exc)
        return
    try:
        try:
            # After the subscription, so no line published in between is missed.
            await jobs.open_live_logs(ctx, ref)
        except Exception as exc:
            yield LiveError(exc)
            return
        yield LiveConnected()
        async for event in _follow(sub, jobs, ctx, ref, timing):
            yield event
    finally:
        await sub.close()


async def _follow(
    sub: Subscription, jobs: LiveJobChecks, ctx: CallContext, ref: JobRef, timing: FollowTiming
) -> AsyncIterator[LiveEvent]:
    loop = asyncio.get_running_loop()
    next_keepalive = loop.time() + timing.keepalive_interval_s
    next_poll = loop.time() + timing.status_poll_interval_s
    finished: JobStatus | None = None
    end_at = 0.0
    while True:
        now = loop.time()
        wake = min(next_keepalive, next_poll if finished is None else end_at)
        try:
            message = await sub.next(max(0.0, wake - now))
        except ChronoverseError as exc:
            yield LiveError(exc)
            return
        if message is not None:
            if message.type == "end":
                yield LiveEnd(message.status)
                return
            yield LiveLine(message)
            next_keepalive = loop.time() + timing.keepalive_interval_s
            continue
        now = loop.time()
        if finished is not None and now >= end_at:
            yield LiveEnd(finished)
            return
        if finished is None and now >= next_poll:
            try:
                job = await jobs.get_job(ctx, ref)
            except Exception as exc:
                yield LiveError(exc)
                return
            if job.status.terminal:
                finished, end_at = job.status, now + timing.end_grace_s
            next_poll = now + timing.status_poll_interval_s
        if now >= next_keepalive:
            yield LiveKeepalive()
            next_keepalive = now + timing.keepalive_interval_s
