"""Work queue semantics on fake time: dedup, processing, priorities, delays, backoff, shutdown."""

from __future__ import annotations

import asyncio

import pytest

from vworkspace.kube.clock import FakeClock
from vworkspace.kube.runtime.ratelimit import ItemExponentialBackoff
from vworkspace.kube.runtime.workqueue import WorkQueue


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def queue(clock: FakeClock) -> WorkQueue[str]:
    return WorkQueue("test", clock=clock)


async def take(queue: WorkQueue[str]) -> str | None:
    return await asyncio.wait_for(queue.get(), timeout=1)


async def test_duplicates_collapse_into_one_item(queue: WorkQueue[str]) -> None:
    for _ in range(3):
        queue.add("a")
    queue.add("b")
    assert len(queue) == 2
    assert [await take(queue), await take(queue)] == ["a", "b"]
    assert len(queue) == 0


async def test_a_key_in_processing_is_not_handed_out_twice(queue: WorkQueue[str]) -> None:
    queue.add("a")
    assert await take(queue) == "a"
    queue.add("a")  # changed while being reconciled
    assert len(queue) == 0  # deferred, not queued for a second worker
    second = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0.01)
    assert not second.done()
    queue.done("a")  # the first reconcile finishes: now it is queued again
    assert await asyncio.wait_for(second, 1) == "a"


async def test_initial_list_keys_wait_behind_live_changes(queue: WorkQueue[str]) -> None:
    queue.add("old-1", low_priority=True)
    queue.add("old-2", low_priority=True)
    queue.add("live")
    queue.add("old-2")  # a live change to a listed object promotes it
    assert [await take(queue) for _ in range(3)] == ["live", "old-2", "old-1"]


def test_backoff_curve_doubles_from_5ms_to_a_1000s_cap() -> None:
    backoff = ItemExponentialBackoff()
    delays = [backoff.when("k") for _ in range(20)]
    assert delays[:4] == [0.005, 0.01, 0.02, 0.04]
    assert delays[17] == 655.36
    assert delays[18] == delays[19] == 1000.0
    assert backoff.retries("k") == 20
    backoff.forget("k")
    assert backoff.when("k") == 0.005


async def test_add_after_releases_keys_in_ready_time_order(
    queue: WorkQueue[str], clock: FakeClock
) -> None:
    queue.add_after("late", 10)
    queue.add_after("early", 2)
    queue.add_after("late", 20)  # a later time never postpones an earlier one
    getter = asyncio.ensure_future(queue.get())
    await clock.advance(1)
    assert not getter.done()
    await clock.advance(1.5)
    assert await asyncio.wait_for(getter, 1) == "early"
    queue.done("early")
    getter = asyncio.ensure_future(queue.get())
    await clock.advance(5)
    assert not getter.done()
    await clock.advance(5)
    assert await asyncio.wait_for(getter, 1) == "late"


async def test_add_after_an_earlier_time_wins(queue: WorkQueue[str], clock: FakeClock) -> None:
    queue.add_after("k", 30)
    queue.add_after("k", 1)
    getter = asyncio.ensure_future(queue.get())
    await clock.advance(1)
    assert await asyncio.wait_for(getter, 1) == "k"
    queue.done("k")
    await clock.advance(30)
    assert len(queue) == 0  # the superseded 30 s entry does not deliver it again


async def test_rate_limited_retries_wait_longer_each_time(
    queue: WorkQueue[str], clock: FakeClock
) -> None:
    waits = []
    for _ in range(4):
        queue.add_rate_limited("k")
        start = clock.monotonic()
        getter = asyncio.ensure_future(queue.get())
        while not getter.done():
            await clock.advance(0.001)
        assert getter.result() == "k"
        queue.done("k")
        waits.append(round(clock.monotonic() - start, 3))
    assert waits == pytest.approx([0.005, 0.01, 0.02, 0.04], abs=0.0015)  # 1 ms fake steps
    assert queue.num_requeues("k") == 4
    queue.forget("k")
    assert queue.num_requeues("k") == 0


async def test_shutdown_releases_waiting_workers_and_drains_in_flight(
    queue: WorkQueue[str],
) -> None:
    queue.add("busy")
    assert await take(queue) == "busy"
    waiting = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.add_after("never", 5)
    queue.shutdown()
    assert await asyncio.wait_for(waiting, 1) is None
    idle = asyncio.ensure_future(queue.wait_idle())
    await asyncio.sleep(0.01)
    assert not idle.done()  # "busy" is still being reconciled
    queue.done("busy")
    await asyncio.wait_for(idle, 1)
    queue.add("after")
    assert len(queue) == 0  # nothing new is accepted after shutdown
    assert await queue.get() is None
