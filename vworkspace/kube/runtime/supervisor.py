"""Supervision of the process's long-running tasks: a failure restarts the task, never the process.

Every informer, controller and runnable (the agent's poller and event batcher, the webhook
server) runs under a :class:`Supervisor` (docs/operations.md, "Failure and restart"):

* a task that raises is **restarted** after a jittered exponential backoff (1 s doubling to
  60 s); the backoff starts over once the task has run ``stable_after`` seconds without failing,
  so a task that fails once a day is restarted after about a second each time;
* while it waits, the task is **down**: :attr:`Supervisor.down` is what ``/readyz`` names,
  ``vworkspace_operator_task_up{task}`` is 0, and ``vworkspace_operator_task_restarts_total{task}``
  counts every restart; one log line names the task and the error;
* only a **start-up error** ends the process: the task raises :class:`StartupError`, or fails
  before its ``started`` event is set (a webhook server that cannot bind its port). There is no
  "gave up after N crashes": a Deployment restart would not fix what a task restart cannot, and a
  CrashLoopBackOff takes every other task down with it.

Trade-off: a task with a permanent bug fails forever at the backoff cap (once a minute) instead of
stopping the process. That is visible (readiness, metrics, logs) and costs little; an exit would
cost every healthy controller too.

No Kubernetes Event is emitted: a supervised task has no natural involved object (it is a part
of the process, not of any resource), so the log line is the record.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import structlog

from vworkspace.kube.backoff import Backoff
from vworkspace.kube.clock import Clock
from vworkspace.kube.metrics import Metrics

_log = structlog.get_logger("vworkspace.supervisor")


class StartupError(Exception):
    """The task cannot start at all (e.g. it cannot bind its port): ends the process."""


class Supervisor:
    def __init__(
        self,
        name: str,
        run: Callable[[], Awaitable[None]],
        *,
        clock: Clock,
        rng: random.Random,
        on_fatal: Callable[[str], None],
        metrics: Metrics | None = None,
        started: asyncio.Event | None = None,
        stopping: Callable[[], bool] = lambda: False,
        initial: float = 1.0,
        cap: float = 60.0,
        stable_after: float = 60.0,
    ) -> None:
        """``started``: set by the task once it is up; a failure before that is a start-up
        error. ``stopping``: true during shutdown, when a failure is logged but not restarted."""
        self.name = name
        self._run = run
        self._clock = clock
        self._on_fatal = on_fatal
        self._metrics = metrics
        self._started = started
        self._stopping = stopping
        self._backoff = Backoff(
            clock=clock, rng=rng, initial=initial, cap=cap, reset_after=stable_after
        )
        self.restarts = 0
        self.last_error = ""
        self.down = False

    def _set_up(self, up: bool) -> None:
        self.down = not up
        if self._metrics is not None:
            self._metrics.task_up.labels(self.name).set(1 if up else 0)

    async def run(self) -> None:
        """Run the task until it returns (or is cancelled), restarting it after failures."""
        while True:
            self._set_up(True)
            try:
                await self._run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as err:
                self.last_error = f"{type(err).__name__}: {err}"[:300]
                if isinstance(err, StartupError) or (
                    self._started is not None and not self._started.is_set()
                ):
                    _log.error("task failed to start", task=self.name, error=self.last_error)
                    self._on_fatal(f"{self.name} failed to start: {self.last_error}")
                    return
                if self._stopping():
                    _log.warning(
                        "task failed while stopping", task=self.name, error=self.last_error
                    )
                    return
                await self._restart_later(err)

    async def _restart_later(self, err: Exception) -> None:
        delay = self._backoff.next_delay()
        self._set_up(False)
        self.restarts += 1
        if self._metrics is not None:
            self._metrics.task_restarts.labels(self.name).inc()
        _log.error(
            "task failed; restarting",
            task=self.name,
            error=self.last_error,
            restarts=self.restarts,
            retry_in=round(delay, 2),
            exc_info=err,
        )
        await self._clock.sleep(delay)
