"""The live-log follower and a viewer's buffer without Redis: event order, the status-poll safety
net, keepalives, a viewer that falls behind, gaps after a lost connection, and that the
subscription comes before the job check.  (The hub's Redis side: tests/integration.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from uuid import UUID

import pytest

from domain.enums import JobStatus, JobTrigger, LogStream
from domain.errors import NotFound, PreconditionFailed, RateLimited, Unavailable
from domain.log_lines import LiveLogMessage, LogLine, live_channel
from serve_apps.live_logs import (
    FELL_BEHIND_CODE,
    INTERRUPTED_CODE,
    FollowTiming,
    LiveConnected,
    LiveEnd,
    LiveError,
    LiveEvent,
    LiveKeepalive,
    LiveLine,
    Subscription,
    follow_job_logs,
    interrupted,
)
from serve_apps.schemas.jobs import JobOut, JobRef
from serve_apps.services.context import CallContext

JOB = UUID("01920000-0000-7000-8000-000000000001")
WORKFLOW = UUID("01920000-0000-7000-8000-000000000002")
REF = JobRef(workflow_id=WORKFLOW, job_id=JOB)
CTX = CallContext(user_id=UUID("01920000-0000-7000-8000-000000000003"))
#: Fast pacing, so the poll and keepalive paths run within a test (no speed is asserted).
FAST = FollowTiming(keepalive_interval_s=0.05, status_poll_interval_s=0.02, end_grace_s=0.05)
NO_POLL = FollowTiming(keepalive_interval_s=60, status_poll_interval_s=60, end_grace_s=60)


def line(seq: int) -> LiveLogMessage:
    return LiveLogMessage.log(
        job_id=JOB, workflow_id=WORKFLOW, event_id=f"log:{JOB}:stdout:{seq}",
        line=LogLine(stream=LogStream.STDOUT, sequence_num=seq, message=f"line {seq}",
                     timestamp=datetime(2025, 1, 2, 3, 4, 5)),
    )


def job(status: JobStatus) -> JobOut:
    at = datetime(2025, 1, 2)
    return JobOut(id=JOB, workflow_id=WORKFLOW, status=status, trigger=JobTrigger.MANUAL,
                  scheduled_at=at, started_at=at, completed_at=None, created_at=at, updated_at=at,
                  attempts=1, failure_kind=None, last_error_code=None, last_error_message=None)


class FakeHub:
    """Stands in for LiveLogHub: hands out real Subscriptions and records who left."""

    def __init__(self, capacity: int = 100, fail: BaseException | None = None) -> None:
        self.capacity = capacity
        self.fail = fail
        self.subs: list[Subscription] = []
        self.left: list[Subscription] = []

    async def subscribe(self, job_id: UUID) -> Subscription:
        if self.fail is not None:
            raise self.fail
        sub = Subscription(self, live_channel(job_id), self.capacity)  # type: ignore[arg-type]
        self.subs.append(sub)
        return sub

    async def _leave(self, sub: Subscription) -> None:
        self.left.append(sub)


class FakeJobs:
    """The jobs service's two checks; ``statuses`` are what successive polls return."""

    def __init__(self, hub: FakeHub, *, check_error: Exception | None = None,
                 statuses: list[JobStatus | Exception] | None = None) -> None:
        self.hub = hub
        self.check_error = check_error
        self.statuses = list(statuses or [])
        self.subscribed_at_check: bool | None = None
        self.polls = 0
        self.polled = asyncio.Event()

    async def open_live_logs(self, ctx: CallContext, ref: JobRef) -> JobOut:
        self.subscribed_at_check = bool(self.hub.subs)
        if self.check_error is not None:
            raise self.check_error
        return job(JobStatus.RUNNING)

    async def get_job(self, ctx: CallContext, ref: JobRef) -> JobOut:
        self.polls += 1
        self.polled.set()
        status = self.statuses.pop(0) if self.statuses else JobStatus.RUNNING
        if isinstance(status, Exception):
            raise status
        return job(status)


def follow(hub: FakeHub, jobs: FakeJobs, timing: FollowTiming = NO_POLL) -> AsyncIterator[LiveEvent]:
    return follow_job_logs(hub, jobs, CTX, REF, timing)  # type: ignore[arg-type]


async def collect(events: AsyncIterator[LiveEvent], limit: int = 50) -> list[LiveEvent]:
    out: list[LiveEvent] = []
    async with asyncio.timeout(5):
        async for event in events:
            out.append(event)
            if len(out) >= limit:
                break
    return out


# ---------------------------------------------------------------------------------------------
# A viewer's buffer


async def test_a_subscription_returns_lines_in_order_and_none_when_idle() -> None:
    sub = Subscription(FakeHub(), "c", capacity=10)  # type: ignore[arg-type]
    for seq in range(3):
        sub._deliver(line(seq))
    assert [(await sub.next(0)).sequence_num for _ in range(3)] == [0, 1, 2]  # type: ignore[union-attr]
    assert await sub.next(0) is None


async def test_a_full_buffer_keeps_its_lines_then_reports_falling_behind_for_good() -> None:
    sub = Subscription(FakeHub(), "c", capacity=2)  # type: ignore[arg-type]
    for seq in range(4):
        sub._deliver(line(seq))
    assert sub.fell_behind and sub.buffered == 2
    assert [(await sub.next(0)).sequence_num for _ in range(2)] == [0, 1]  # type: ignore[union-attr]
    for _ in range(2):
        with pytest.raises(RateLimited) as caught:
            await sub.next(0)
        assert caught.value.code == FELL_BEHIND_CODE
    sub._deliver(line(9))
    assert sub.buffered == 0


async def test_a_lost_connection_is_one_marker_between_the_lines_around_it() -> None:
    sub = Subscription(FakeHub(), "c", capacity=10)  # type: ignore[arg-type]
    sub._deliver(line(0))
    sub._interrupt(interrupted("test"))
    sub._interrupt(interrupted("again"))  # a second loss before the viewer read: still one gap
    sub._deliver(line(5))
    assert (await sub.next(0)).sequence_num == 0  # type: ignore[union-attr]
    with pytest.raises(Unavailable) as caught:
        await sub.next(0)
    assert caught.value.code == INTERRUPTED_CODE
    assert (await sub.next(0)).sequence_num == 5  # type: ignore[union-attr]
    assert await sub.next(0) is None


async def test_a_waiting_reader_wakes_for_a_delivered_line() -> None:
    sub = Subscription(FakeHub(), "c", capacity=10)  # type: ignore[arg-type]
    waiting = asyncio.create_task(sub.next(5))
    await asyncio.sleep(0)
    sub._deliver(line(1))
    assert (await waiting).sequence_num == 1  # type: ignore[union-attr]


async def test_closing_a_subscription_leaves_the_hub_once() -> None:
    hub = FakeHub()
    sub = Subscription(hub, "c", capacity=10)  # type: ignore[arg-type]
    await sub.close()
    await sub.close()
    assert hub.left == [sub]


# ---------------------------------------------------------------------------------------------
# Following a job


async def test_the_subscription_is_made_before_the_job_check() -> None:
    hub = FakeHub()
    jobs = FakeJobs(hub)
    events = follow(hub, jobs)
    assert await anext(events) == LiveConnected()
    assert jobs.subscribed_at_check is True
    await events.aclose()
    assert hub.left == hub.subs


async def test_a_failed_check_is_the_only_event_and_the_subscription_is_released() -> None:
    hub = FakeHub()
    problem = PreconditionFailed("job is not running: COMPLETED")
    events = await collect(follow(hub, FakeJobs(hub, check_error=problem)))
    assert events == [LiveError(problem)]
    assert hub.left == hub.subs and len(hub.subs) == 1


async def test_a_failed_subscription_is_an_error_without_a_check() -> None:
    hub = FakeHub(fail=Unavailable("redis down"))
    jobs = FakeJobs(hub)
    events = await collect(follow(hub, jobs))
    assert [type(e) for e in events] == [LiveError] and jobs.subscribed_at_check is None


async def test_lines_then_the_end_marker_end_the_stream() -> None:
    hub = FakeHub()
    events = follow(hub, FakeJobs(hub))
    assert await anext(events) == LiveConnected()
    sub = hub.subs[0]
    sub._deliver(line(0))
    sub._deliver(line(1))
    sub._deliver(LiveLogMessage.end(job_id=JOB, workflow_id=WORKFLOW, status=JobStatus.COMPLETED))
    sub._deliver(line(2))  # after the end: never shown
    assert await collect(events) == [LiveLine(line(0)), LiveLine(line(1)), LiveEnd(JobStatus.COMPLETED)]
    assert hub.left == [sub]


async def test_the_status_poll_ends_a_stream_whose_end_marker_never_comes() -> None:
    hub = FakeHub()
    jobs = FakeJobs(hub, statuses=[JobStatus.RUNNING, JobStatus.FAILED])
    events = await collect(follow(hub, jobs, FAST))
    assert events[0] == LiveConnected()
    assert events[-1] == LiveEnd(JobStatus.FAILED)
    assert jobs.polls == 2
    assert all(isinstance(e, LiveKeepalive) for e in events[1:-1])


async def test_lines_still_arriving_in_the_end_grace_are_delivered_before_the_end() -> None:
    hub = FakeHub()
    jobs = FakeJobs(hub, statuses=[JobStatus.COMPLETED])
    timing = FollowTiming(keepalive_interval_s=60, status_poll_interval_s=0.01, end_grace_s=0.5)
    events = follow(hub, jobs, timing)
    assert await anext(events) == LiveConnected()
    pending = asyncio.ensure_future(collect(events))
    async with asyncio.timeout(5):
        await jobs.polled.wait()
    hub.subs[0]._deliver(line(7))
    assert await pending == [LiveLine(line(7)), LiveEnd(JobStatus.COMPLETED)]


async def test_an_idle_stream_gets_keepalives() -> None:
    hub = FakeHub()
    timing = FollowTiming(keepalive_interval_s=0.01, status_poll_interval_s=60, end_grace_s=60)
    events = await collect(follow(hub, FakeJobs(hub), timing), limit=3)
    assert events == [LiveConnected(), LiveKeepalive(), LiveKeepalive()]


async def test_a_failed_poll_ends_the_stream_with_its_error() -> None:
    hub = FakeHub()
    gone = NotFound("job not found")
    events = await collect(follow(hub, FakeJobs(hub, statuses=[gone]), FAST))
    assert events[0] == LiveConnected() and events[-1] == LiveError(gone)


@pytest.mark.parametrize(
    ("problem", "error"),
    [("gap", Unavailable), ("behind", RateLimited)],
)
async def test_a_gap_or_falling_behind_ends_the_stream_with_an_error_after_the_lines(
    problem: str, error: type[Exception]
) -> None:
    hub = FakeHub(capacity=2)
    events = follow(hub, FakeJobs(hub))
    assert await anext(events) == LiveConnected()
    sub = hub.subs[0]
    sub._deliver(line(0))
    if problem == "gap":
        sub._interrupt(interrupted("test"))
    else:
        sub._deliver(line(1))
        sub._deliver(line(2))
    got: list[Any] = await collect(events)
    assert got[0] == LiveLine(line(0))
    assert isinstance(got[-1], LiveError) and isinstance(got[-1].error, error)
    assert hub.left == [sub]
