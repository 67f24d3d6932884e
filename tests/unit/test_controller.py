"""What a reconcile's result or exception does to its key (fake time, fake reconciler)."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from vworkspace.api.meta import ObjectKey
from vworkspace.kube.clock import FakeClock
from vworkspace.kube.metrics import Metrics
from vworkspace.kube.runtime.controller import Controller, Result, TerminalError
from vworkspace.kube.runtime.workqueue import WorkQueue

KEY = ObjectKey("ns", "obj")


class ScriptedReconciler:
    def __init__(self, clock: FakeClock, outcomes: list[object]) -> None:
        self.clock = clock
        self.outcomes = outcomes
        self.calls: list[float] = []

    async def reconcile(self, key: ObjectKey) -> Result:
        self.calls.append(self.clock.monotonic())
        outcome = self.outcomes.pop(0) if self.outcomes else Result.done()
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome == "hang":
            await asyncio.sleep(10)
        assert isinstance(outcome, Result)
        return outcome


async def run_until(
    clock: FakeClock,
    reconciler: ScriptedReconciler,
    calls: int,
    *,
    step: float = 0.001,
    limit: float = 60.0,
) -> None:
    spent = 0.0
    while len(reconciler.calls) < calls and spent < limit:
        await clock.advance(step)
        spent += step


@pytest.fixture
def setup() -> tuple[FakeClock, Metrics, WorkQueue[ObjectKey]]:
    clock = FakeClock()
    metrics = Metrics(CollectorRegistry())
    return clock, metrics, WorkQueue("test", clock=clock, metrics=metrics.queue("test"))


def sample(metrics: Metrics, metric: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(metric, labels)
    return value or 0.0


async def test_errors_are_retried_with_growing_delays_and_counted(setup: tuple) -> None:  # type: ignore[type-arg]
    clock, metrics, queue = setup
    reconciler = ScriptedReconciler(clock, [RuntimeError("boom")] * 4 + [Result.done()])
    controller = Controller(
        "test", reconciler, queue, workers=1, metrics=metrics.controller("test")
    )
    task = asyncio.create_task(controller.run())
    queue.add(KEY)
    await run_until(clock, reconciler, 5)
    gaps = [round(b - a, 3) for a, b in zip(reconciler.calls, reconciler.calls[1:], strict=False)]
    assert gaps == pytest.approx([0.005, 0.01, 0.02, 0.04], abs=0.0015)
    assert sample(metrics, "controller_runtime_reconcile_errors_total", controller="test") == 4
    assert (
        sample(metrics, "controller_runtime_reconcile_total", controller="test", result="success")
        == 1
    )
    assert sample(metrics, "workqueue_retries_total", name="test") == 4
    assert queue.num_requeues(KEY) == 0  # success forgot the backoff
    queue.shutdown()
    await task


async def test_terminal_errors_are_not_retried(setup: tuple) -> None:  # type: ignore[type-arg]
    clock, metrics, queue = setup
    reconciler = ScriptedReconciler(clock, [TerminalError("spec.x is invalid")])
    controller = Controller(
        "test", reconciler, queue, workers=1, metrics=metrics.controller("test")
    )
    task = asyncio.create_task(controller.run())
    queue.add(KEY)
    await run_until(clock, reconciler, 1)
    await clock.advance(2000)  # far beyond the longest backoff
    assert len(reconciler.calls) == 1
    assert (
        sample(metrics, "controller_runtime_terminal_reconcile_errors_total", controller="test")
        == 1
    )
    queue.shutdown()
    await task


async def test_requeue_after_comes_back_at_that_time(setup: tuple) -> None:  # type: ignore[type-arg]
    clock, metrics, queue = setup
    reconciler = ScriptedReconciler(clock, [Result.after(30), Result.done()])
    controller = Controller(
        "test", reconciler, queue, workers=1, metrics=metrics.controller("test")
    )
    task = asyncio.create_task(controller.run())
    queue.add(KEY)
    await run_until(clock, reconciler, 2, step=1.0)
    assert reconciler.calls[1] - reconciler.calls[0] == pytest.approx(30, abs=1)
    assert (
        sample(
            metrics, "controller_runtime_reconcile_total", controller="test", result="requeue_after"
        )
        == 1
    )
    queue.shutdown()
    await task


async def test_a_reconcile_past_its_deadline_is_cancelled_and_retried(setup: tuple) -> None:  # type: ignore[type-arg]
    clock, metrics, queue = setup
    reconciler = ScriptedReconciler(clock, ["hang", Result.done()])
    controller = Controller(
        "test",
        reconciler,
        queue,
        workers=1,
        reconcile_timeout=0.05,
        metrics=metrics.controller("test"),
    )
    task = asyncio.create_task(controller.run())
    queue.add(KEY)
    for _ in range(100):
        await asyncio.sleep(0.01)
        await clock.advance(0.01)
        if len(reconciler.calls) == 2:
            break
    assert len(reconciler.calls) == 2
    assert sample(metrics, "controller_runtime_reconcile_timeouts_total", controller="test") == 1
    queue.shutdown()
    await task


async def test_one_key_is_never_reconciled_concurrently(setup: tuple) -> None:  # type: ignore[type-arg]
    _, _, queue = setup
    running = 0
    overlap = 0

    class Slow:
        calls = 0

        async def reconcile(self, key: ObjectKey) -> Result:
            nonlocal running, overlap
            running += 1
            overlap = max(overlap, running)
            Slow.calls += 1
            await asyncio.sleep(0.01)
            running -= 1
            return Result.done()

    controller = Controller("test", Slow(), queue, workers=4)
    task = asyncio.create_task(controller.run())
    for _ in range(20):
        queue.add(KEY)
        await asyncio.sleep(0.002)
    await asyncio.sleep(0.05)
    queue.shutdown()
    await task
    assert overlap == 1
    assert 2 <= Slow.calls < 20  # bursts collapsed
