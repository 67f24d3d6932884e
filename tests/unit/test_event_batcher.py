"""The event batcher on fake time with a scripted poster."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest

from vworkspace.agent.events import EventBatcher, condition_event, event_key
from vworkspace.api.conditions import Condition, ConditionStatus
from vworkspace.kube.clock import FakeClock


class Poster:
    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.fail = False

    async def __call__(self, events: list[dict[str, Any]]) -> None:
        if self.fail:
            raise ConnectionError("control plane down")
        self.batches.append([e["eventKey"] for e in events])


def ev(key: str) -> dict[str, Any]:
    return {"eventKey": key}


def make(
    poster: Poster, *, ready: bool = True, capacity: int = 5, snapshot: Any = None
) -> EventBatcher:
    return EventBatcher(
        post=poster,
        ready=lambda: ready,
        clock=FakeClock(),
        capacity=capacity,
        batch_size=3,
        snapshot=snapshot,
    )


async def test_full_buffer_drops_the_oldest_and_counts_exactly() -> None:
    batcher = make(Poster(), capacity=5)
    for i in range(8):
        batcher.enqueue(ev(f"e{i}"))
    assert batcher.dropped == 3
    assert len(batcher) == 5


async def test_batches_of_at_most_batch_size_in_order_and_drained_clears_overflow() -> None:
    poster = Poster()
    batcher = make(poster, capacity=5)
    for i in range(7):
        batcher.enqueue(ev(f"e{i}"))
    assert await batcher.flush()
    assert poster.batches == [["e2", "e3", "e4"], ["e5", "e6"]]
    assert batcher.dropped == 0  # drained: the overflow state clears


async def test_a_failed_post_puts_the_batch_back_in_front() -> None:
    poster = Poster()
    batcher = make(poster, capacity=5)
    for i in range(4):
        batcher.enqueue(ev(f"e{i}"))
    poster.fail = True
    assert not await batcher.flush()
    batcher.enqueue(ev("e4"))
    batcher.enqueue(ev("e5"))  # full: the oldest (e0) is dropped
    assert batcher.dropped == 1
    poster.fail = False
    assert await batcher.flush()
    assert [k for b in poster.batches for k in b] == ["e1", "e2", "e3", "e4", "e5"]


async def test_events_wait_for_credentials_instead_of_being_lost() -> None:
    poster = Poster()
    ready = {"value": False}
    batcher = EventBatcher(post=poster, ready=lambda: ready["value"], clock=FakeClock())
    batcher.enqueue(ev("early"))
    assert await batcher.flush()
    assert poster.batches == []
    ready["value"] = True
    assert await batcher.flush()
    assert poster.batches == [["early"]]


async def test_after_a_reconnect_the_snapshot_goes_last() -> None:
    # The control plane takes the latest arrival as the truth: buffered (older) transitions
    # first, then the current state. (Snapshot first let an older buffered event have the last
    # word, seen in the chaos tier's outage scenario.)
    poster = Poster()
    batcher = make(poster, snapshot=lambda: [ev("snap-1"), ev("snap-2")])
    batcher.enqueue(ev("a"))
    poster.fail = True
    assert not await batcher.flush()
    poster.fail = False
    batcher.enqueue(ev("b"))
    assert await batcher.flush()
    assert poster.batches == [["a", "b"], ["snap-1", "snap-2"]]
    batcher.enqueue(ev("c"))
    assert await batcher.flush()
    assert poster.batches[-1] == ["c"]  # no snapshot without a new outage


async def test_a_full_batch_is_sent_before_the_tick() -> None:
    poster = Poster()
    clock = FakeClock()
    batcher = EventBatcher(post=poster, ready=lambda: True, clock=clock, batch_size=3, interval=1.0)
    stop = asyncio.Event()
    task = asyncio.create_task(batcher.run(stop))
    await asyncio.sleep(0)
    for i in range(3):
        batcher.enqueue(ev(f"e{i}"))
    for _ in range(5):
        await asyncio.sleep(0)
    assert poster.batches == [["e0", "e1", "e2"]]  # no clock advance needed
    batcher.enqueue(ev("late"))
    await clock.advance(1.0)
    assert poster.batches[-1] == ["late"]
    stop.set()
    await task


T0 = datetime.datetime(2026, 11, 22, 10, 0, tzinfo=datetime.UTC)
OBJ = {
    "apiVersion": "apps.vworkspace.io/v1alpha1",
    "kind": "ApplicationInstance",
    "metadata": {"name": "a", "namespace": "n", "uid": "u-1", "generation": 2},
}


def cond(status: ConditionStatus, at: datetime.datetime) -> Condition:
    return Condition(
        type="Ready",
        status=status,
        reason="R",
        message="",
        last_transition_time=at,
        observed_generation=2,
    )


def test_event_keys_follow_the_spec_and_separate_flaps() -> None:
    first = event_key(OBJ, cond(ConditionStatus.TRUE, T0))
    assert (
        first
        == f"condition/apps.vworkspace.io/v1alpha1/ApplicationInstance/n/a/u-1/Ready/True@2#{int(T0.timestamp())}"
    )
    again = event_key(OBJ, cond(ConditionStatus.TRUE, T0 + datetime.timedelta(minutes=2)))
    assert again != first  # True -> False -> True at one generation is two True events
    cluster = {
        "apiVersion": "ops.vworkspace.io/v1alpha1",
        "kind": "Cluster",
        "metadata": {"name": "c"},
    }
    assert event_key(cluster, cond(ConditionStatus.FALSE, T0)).startswith(
        "condition/ops.vworkspace.io/v1alpha1/Cluster/_/c/_/Ready/False@0#"
    )


def test_condition_event_shape() -> None:
    event = condition_event(OBJ, cond(ConditionStatus.TRUE, T0), now=T0)
    assert event["kind"] == "ConditionTransition"
    assert event["resourceRef"] == {
        "apiVersion": "apps.vworkspace.io/v1alpha1",
        "kind": "ApplicationInstance",
        "namespace": "n",
        "name": "a",
        "uid": "u-1",
        "generation": 2,
    }
    assert event["conditions"] == [
        {
            "type": "Ready",
            "status": "True",
            "lastTransitionTime": "2026-11-22T10:00:00Z",
            "reason": "R",
            "message": "",
            "observedGeneration": 2,
        }
    ]


@pytest.mark.parametrize("capacity", [1, 3])
async def test_requeue_past_the_bound_counts_drops(capacity: int) -> None:
    poster = Poster()
    batcher = EventBatcher(
        post=poster, ready=lambda: True, clock=FakeClock(), capacity=capacity, batch_size=capacity
    )
    for i in range(capacity):
        batcher.enqueue(ev(f"e{i}"))
    poster.fail = True
    assert not await batcher.flush()
    assert len(batcher) == capacity
    assert batcher.dropped == 0


async def test_a_drop_alone_also_schedules_the_snapshot() -> None:
    poster = Poster()
    batcher = make(poster, capacity=2, snapshot=lambda: [ev("snap")])
    for i in range(3):
        batcher.enqueue(ev(f"e{i}"))
    assert await batcher.flush()
    assert poster.batches == [["e1", "e2"], ["snap"]]  # the current state has the last word


async def test_a_new_batcher_starts_with_the_snapshot_once() -> None:
    # A new leader cannot know what its predecessor delivered (a killed Pod loses its buffer).
    poster = Poster()
    batcher = make(poster, snapshot=lambda: [ev("snap")])
    batcher.enqueue(ev("a"))
    assert await batcher.flush()
    batcher.enqueue(ev("b"))
    assert await batcher.flush()
    assert poster.batches == [["a"], ["snap"], ["b"]]


async def test_supplemental_events_call_back_after_delivery_and_are_forgotten_if_dropped() -> None:
    batcher = make(Poster(), capacity=2)
    delivered: list[str] = []
    batcher.deliver(ev("storage/1"), lambda: delivered.append("1"))
    assert batcher.pending("storage/1")
    assert await batcher.flush()
    assert delivered == ["1"]
    assert not batcher.pending("storage/1")
    batcher.deliver(ev("storage/2"), lambda: delivered.append("2"))
    batcher.enqueue(ev("a"))
    batcher.enqueue(ev("b"))  # the buffer holds 2: storage/2 is dropped
    assert not batcher.pending("storage/2")  # so its owner hands it over again
    assert await batcher.flush()
    assert delivered == ["1"]
