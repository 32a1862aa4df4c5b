"""The pool's routing and capacity logic (actors/pool.py) without Ray."""

from __future__ import annotations

import asyncio

import pytest

from actors.pool import pool_manager_name, worker_name
from ingest.routing import PoolRouter


def make(n: int, max_in_flight: int = 2) -> PoolRouter[str]:
    router: PoolRouter[str] = PoolRouter(max_in_flight)
    for i in range(n):
        router.add(i, f"w{i}")
    return router


def test_names_read_like_the_architecture() -> None:
    assert worker_name("workflow-worker", 0) == "workflow-worker-0"
    assert worker_name("execution-worker", 2) == "execution-worker-2"
    assert pool_manager_name("execution-worker") == "execution-worker-pool"


async def test_routes_to_the_least_loaded_member() -> None:
    router = make(3)
    taken = [(await router.acquire()).index for _ in range(3)]
    assert sorted(taken) == [0, 1, 2]
    fourth = await router.acquire()
    assert fourth.in_flight == 2


async def test_full_pool_makes_callers_wait_and_counts_queue_depth() -> None:
    router = make(1, max_in_flight=1)
    first = await router.acquire()
    waiter = asyncio.create_task(router.acquire())
    await asyncio.sleep(0)
    assert not waiter.done()
    assert router.queue_depth == 1
    router.release(first, ok=True)
    second = await asyncio.wait_for(waiter, 1)
    assert second.index == 0
    assert router.queue_depth == 0
    assert router.handled == 1


async def test_waiters_are_served_in_arrival_order() -> None:
    router = make(1, max_in_flight=1)
    held = await router.acquire()
    order: list[int] = []

    async def take(tag: int) -> None:
        member = await router.acquire()
        order.append(tag)
        router.release(member, ok=True)

    tasks = [asyncio.create_task(take(i)) for i in range(5)]
    await asyncio.sleep(0)
    router.release(held, ok=True)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]


async def test_a_cancelled_waiter_leaves_the_queue_without_leaking_a_slot() -> None:
    router = make(1, max_in_flight=1)
    held = await router.acquire()
    waiter = asyncio.create_task(router.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert router.queue_depth == 0
    router.release(held, ok=True)
    assert router.in_flight == 0
    assert (await asyncio.wait_for(router.acquire(), 1)).index == 0


async def test_members_that_are_not_ready_get_no_work() -> None:
    router: PoolRouter[str] = PoolRouter(1)
    router.add(0, "w0", ready=False)
    waiter = asyncio.create_task(router.acquire())
    await asyncio.sleep(0)
    assert not waiter.done()
    assert router.counts()["starting"] == 1
    router.mark_ready(0)
    assert (await asyncio.wait_for(waiter, 1)).index == 0


async def test_growing_the_pool_serves_waiting_callers() -> None:
    router = make(1, max_in_flight=1)
    await router.acquire()
    waiter = asyncio.create_task(router.acquire())
    await asyncio.sleep(0)
    (new_index,) = router.free_indexes(1)
    router.add(new_index, "w1")
    assert (await asyncio.wait_for(waiter, 1)).index == 1


async def test_draining_stops_new_work_and_waits_for_in_flight() -> None:
    router = make(2, max_in_flight=4)
    busy = await router.acquire()  # member 0 (lowest index first on a tie)
    assert busy.index == 0
    drained = router.start_drain(1)
    assert [m.index for m in drained] == [1]  # the highest index goes first
    router.start_drain(1)
    assert router.members[0].draining
    idle = asyncio.create_task(router.wait_idle(0))
    await asyncio.sleep(0)
    assert not idle.done()
    router.release(busy, ok=True)
    await asyncio.wait_for(idle, 1)
    counts = router.counts()
    assert counts["size"] == 0 and counts["draining"] == 2


async def test_drain_prefers_members_that_never_became_ready() -> None:
    router = make(2)
    router.add(2, "w2", ready=False)
    assert [m.index for m in router.start_drain(1)] == [2]


def test_free_indexes_fill_gaps_first() -> None:
    router = make(3)
    router.remove(1)
    assert router.free_indexes(2) == [1, 3]


async def test_counts_report_busy_members_and_in_flight() -> None:
    router = make(3, max_in_flight=2)
    a = await router.acquire()
    await router.acquire()
    counts = router.counts()
    assert counts == {"size": 3, "starting": 0, "draining": 0, "busy": 2, "queue_depth": 0, "in_flight": 2}
    router.release(a, ok=False)
    assert router.failed == 1


async def test_sync_adopts_a_published_membership_and_keeps_in_flight_counts() -> None:
    router: PoolRouter[str] = PoolRouter(2)
    router.sync({0: "a", 1: "b"})
    first = await router.acquire()
    assert router.load() == {0: 1, 1: 0}
    router.sync({first.index: "a-restarted", 2: "c"})  # the other one left, a new one joined
    assert sorted(router.members) == sorted({first.index, 2})
    assert router.members[first.index].handle == "a-restarted"
    assert router.load()[first.index] == 1  # the call in flight is still counted
    router.release(first, ok=True)
    assert router.load() == {first.index: 0, 2: 0}


async def test_a_waiter_is_served_by_a_member_that_joins_later() -> None:
    router: PoolRouter[str] = PoolRouter(1)
    router.sync({0: "a"})
    held = await router.acquire()
    waiting = asyncio.ensure_future(router.acquire())
    await asyncio.sleep(0)
    assert not waiting.done()
    router.sync({0: "a", 1: "b"})
    assert (await waiting).index == 1
    router.release(held, ok=True)
