"""The supervisor restarts a failed task with growing, jittered delays, reports it down while it
waits, and only ends the process for start-up errors (issue 16, docs/operations.md)."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from vworkspace.app.manager import Manager, ManagerSettings
from vworkspace.kube.clock import FakeClock, RealClock
from vworkspace.kube.metrics import Metrics
from vworkspace.kube.runtime.supervisor import StartupError, Supervisor


class Flaky:
    """Fails ``failures`` times (recording when), then runs until ``release`` is set."""

    def __init__(self, clock: FakeClock, failures: int) -> None:
        self.clock = clock
        self.failures = failures
        self.starts: list[float] = []
        self.release = asyncio.Event()
        self.fail_on_release = False

    async def run(self) -> None:
        self.starts.append(self.clock.monotonic())
        if len(self.starts) <= self.failures:
            raise json.JSONDecodeError("Expecting value", "<html>", 0)
        await self.release.wait()
        if self.fail_on_release:
            self.fail_on_release = False
            self.release = asyncio.Event()
            raise ConnectionResetError("after a long stable run")


def make(
    clock: FakeClock, flaky: Flaky, **kwargs: Any
) -> tuple[Supervisor, list[str], CollectorRegistry]:
    fatal: list[str] = []
    registry = CollectorRegistry()
    supervisor = Supervisor(
        "agent poller",
        flaky.run,
        clock=clock,
        rng=random.Random(5),
        on_fatal=fatal.append,
        metrics=Metrics(registry),
        **kwargs,
    )
    return supervisor, fatal, registry


async def _until(predicate: object, clock: FakeClock, step: float = 0.5, limit: int = 2000) -> None:
    for _ in range(limit):
        if predicate():  # type: ignore[operator]
            return
        await clock.advance(step)
    raise AssertionError("condition not reached")


async def test_a_failed_task_is_restarted_with_growing_delays_and_counted() -> None:
    clock = FakeClock()
    flaky = Flaky(clock, failures=4)
    supervisor, fatal, registry = make(clock, flaky)
    task = asyncio.create_task(supervisor.run())
    await _until(lambda: len(flaky.starts) == 5, clock, step=0.25)
    gaps = [b - a for a, b in zip(flaky.starts, flaky.starts[1:], strict=False)]
    # 1 s doubling, up to 100 % jitter: [1, 2), [2, 4), [4, 8), [8, 16)
    for gap, base in zip(gaps, [1, 2, 4, 8], strict=True):
        assert base <= gap <= 2 * base + 0.25
    assert gaps == sorted(gaps)
    assert fatal == []
    assert supervisor.restarts == 4
    assert not supervisor.down
    assert (
        registry.get_sample_value(
            "vworkspace_operator_task_restarts_total", {"task": "agent poller"}
        )
        == 4
    )
    assert registry.get_sample_value("vworkspace_operator_task_up", {"task": "agent poller"}) == 1
    flaky.release.set()
    await task


async def test_the_task_is_down_while_it_waits_and_the_error_is_named() -> None:
    clock = FakeClock()
    flaky = Flaky(clock, failures=1)
    supervisor, _, registry = make(clock, flaky)
    task = asyncio.create_task(supervisor.run())
    await clock.advance(0)
    assert supervisor.down
    assert "JSONDecodeError" in supervisor.last_error
    assert registry.get_sample_value("vworkspace_operator_task_up", {"task": "agent poller"}) == 0
    await _until(lambda: not supervisor.down, clock)
    flaky.release.set()
    await task


async def test_the_delay_is_capped_and_starts_over_after_a_stable_run() -> None:
    clock = FakeClock()
    flaky = Flaky(clock, failures=12)
    supervisor, _, _ = make(clock, flaky, cap=5.0, stable_after=30.0)
    task = asyncio.create_task(supervisor.run())
    await _until(lambda: len(flaky.starts) == 13, clock)
    gaps = [b - a for a, b in zip(flaky.starts, flaky.starts[1:], strict=False)]
    assert max(gaps) <= 5.5  # never beyond the cap (plus one clock step)
    # Stable for longer than 30 s, then one more failure: back to about a second.
    await clock.advance(40)
    failed_at = clock.monotonic()
    flaky.fail_on_release = True
    flaky.release.set()
    await _until(lambda: len(flaky.starts) >= 14, clock, step=0.25)
    assert flaky.starts[13] - failed_at < 2.5
    flaky.release.set()
    await task


async def test_a_startup_error_ends_the_process_instead_of_a_restart() -> None:
    clock = FakeClock()

    async def cannot_bind() -> None:
        raise StartupError("port 9443 in use")

    fatal: list[str] = []
    supervisor = Supervisor(
        "webhook server", cannot_bind, clock=clock, rng=random.Random(), on_fatal=fatal.append
    )
    await supervisor.run()
    assert fatal == ["webhook server failed to start: StartupError: port 9443 in use"]
    assert supervisor.restarts == 0


async def test_a_failure_before_started_is_a_startup_error_after_it_a_restart() -> None:
    clock = FakeClock()
    started = asyncio.Event()
    calls: list[int] = []

    async def server() -> None:
        calls.append(1)
        if len(calls) == 2:
            await asyncio.Event().wait()  # runs for good after one restart
        started.set()
        raise OSError("connection reset")

    fatal: list[str] = []
    supervisor = Supervisor(
        "webhook server",
        server,
        clock=clock,
        rng=random.Random(),
        on_fatal=fatal.append,
        started=started,
    )
    task = asyncio.create_task(supervisor.run())
    await _until(lambda: len(calls) == 2, clock)
    assert fatal == []
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    started.clear()

    async def never_listens() -> None:
        raise OSError("address in use")

    supervisor = Supervisor(
        "webhook server",
        never_listens,
        clock=clock,
        rng=random.Random(),
        on_fatal=fatal.append,
        started=started,
    )
    await supervisor.run()
    assert fatal == ["webhook server failed to start: OSError: address in use"]


async def test_no_restart_while_stopping() -> None:
    clock = FakeClock()
    flaky = Flaky(clock, failures=5)
    supervisor, fatal, _ = make(clock, flaky, stopping=lambda: True)
    await supervisor.run()
    assert flaky.starts == [clock.monotonic()]
    assert fatal == []
    assert supervisor.restarts == 0


async def test_the_manager_keeps_running_while_a_runnable_fails_and_readyz_names_it() -> None:
    """The issue's failure chain, one level up: a runnable that raises (as the poller did on a
    login page) no longer ends the manager; it is restarted and reported until it runs."""
    registry = CollectorRegistry()
    manager = Manager(
        settings=ManagerSettings(restart_initial=0.05, restart_cap=0.2),
        metrics=Metrics(registry),
        clock=RealClock(),
    )
    attempts: list[int] = []
    allowed_to_run = asyncio.Event()

    async def poller(stop: asyncio.Event) -> None:
        attempts.append(1)
        if not allowed_to_run.is_set():
            raise json.JSONDecodeError("Expecting value", "<!DOCTYPE html>", 0)
        await stop.wait()

    manager.add_runnable("agent poller", poller, leader_only=False)
    stop = asyncio.Event()
    run = asyncio.create_task(manager.run(stop))
    for _ in range(200):
        if len(attempts) >= 3:
            break
        await asyncio.sleep(0.01)
    assert not run.done()
    assert any("agent poller down" in reason for reason in manager._not_ready())
    allowed_to_run.set()
    for _ in range(200):
        if not manager._not_ready():
            break
        await asyncio.sleep(0.02)
    assert manager._not_ready() == []
    restarts = registry.get_sample_value(
        "vworkspace_operator_task_restarts_total", {"task": "agent poller"}
    )
    assert restarts is not None
    assert restarts >= 3
    stop.set()
    assert await asyncio.wait_for(run, 30) == 0


async def test_the_manager_exits_1_for_a_runnable_that_cannot_start() -> None:
    manager = Manager(
        settings=ManagerSettings(), metrics=Metrics(CollectorRegistry()), clock=RealClock()
    )

    async def server(stop: asyncio.Event) -> None:
        raise OSError("address already in use")

    manager.add_runnable("webhook server", server, leader_only=False, started=asyncio.Event())
    assert await asyncio.wait_for(manager.run(asyncio.Event()), 30) == 1
    assert "webhook server failed to start" in manager.exit_reason
