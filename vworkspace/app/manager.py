"""The manager: one process, one event loop, every long-running task owned and stopped in order.

Start order: HTTP endpoints -> informers (each under a supervisor) -> leader election -> the
controllers' workers (only once leading). Informers run on every replica, so a follower that
takes over starts with warm caches.

Stop order on SIGTERM (within ``shutdown_timeout``, 25 s by default, below the 30 s pod grace
period): ``/readyz`` turns 503, queues stop handing out keys, reconciles in flight finish (or are
cancelled at the deadline), informers stop, the Lease is released, the client is closed.

Exit codes: 0 after a requested stop; 1 when leadership is lost or an informer keeps crashing
(the Deployment restarts the pod).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import attrs
import structlog

from vworkspace.app.http import Address, Endpoints, ServingCert
from vworkspace.app.metricsauth import MetricsAuthorizer
from vworkspace.kube.clock import Clock
from vworkspace.kube.controller import Controller
from vworkspace.kube.informer import Informer
from vworkspace.kube.leaderelection import LeaderElector
from vworkspace.kube.metrics import InformerAgeCollector, Metrics

_log = structlog.get_logger("vworkspace.manager")


@attrs.frozen
class ManagerSettings:
    probes: Address | None = None
    metrics: Address | None = None
    # Set: /metrics over HTTPS with this serving pair, behind the Manager's metrics_authorizer.
    metrics_tls: ServingCert | None = None
    shutdown_timeout: float = 25.0
    max_restarts: int = 5
    restart_window: float = 300.0


class Manager:
    def __init__(
        self,
        *,
        settings: ManagerSettings,
        metrics: Metrics,
        clock: Clock,
        elector: LeaderElector | None = None,
        rng: random.Random | None = None,
        metrics_authorizer: MetricsAuthorizer | None = None,
    ) -> None:
        """``metrics_authorizer``: required with ``settings.metrics_tls`` (secure metrics)."""
        self.settings = settings
        self.metrics = metrics
        self._clock = clock
        self._rng = rng or random.Random()
        self.elector = elector
        self.informers: list[Informer] = []
        self.controllers: list[Controller] = []
        self._runnables: list[tuple[str, Callable[[asyncio.Event], Awaitable[None]], bool]] = []
        self._runnables_stop = asyncio.Event()
        self._stopping = False
        self._fatal: asyncio.Event = asyncio.Event()
        self.exit_reason = ""
        self.endpoints = Endpoints(
            registry=metrics.registry,
            not_ready=self._not_ready,
            probes=settings.probes,
            metrics=settings.metrics,
            metrics_tls=settings.metrics_tls,
            authorizer=metrics_authorizer,
        )
        metrics.registry.register(
            InformerAgeCollector(lambda: [(i.name, i.last_event_age()) for i in self.informers])
        )

    def add_informer(self, informer: Informer) -> Informer:
        self.informers.append(informer)
        return informer

    def add_controller(self, controller: Controller) -> Controller:
        self.controllers.append(controller)
        return controller

    def add_runnable(
        self,
        name: str,
        run: Callable[[asyncio.Event], Awaitable[None]],
        *,
        leader_only: bool = True,
    ) -> None:
        """A long-running task (e.g. the agent's poller) that gets a stop event at shutdown and
        is given the same budget as reconciles in flight to finish."""
        self._runnables.append((name, run, leader_only))

    async def _start_runnable(
        self,
        name: str,
        run: Callable[[asyncio.Event], Awaitable[None]],
        gate: asyncio.Event,
        leader_only: bool,
    ) -> None:
        if leader_only:
            waiter = asyncio.ensure_future(gate.wait())
            stopper = asyncio.ensure_future(self._runnables_stop.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
            if self._runnables_stop.is_set():
                return
        try:
            await run(self._runnables_stop)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            # Runnables own their retries; one that gives up (e.g. the webhook server cannot
            # bind its port) ends the process rather than leaving it half-working.
            _log.exception("runnable failed", task=name)
            self.exit_reason = f"{name} failed: {err}"
            self._fatal.set()

    def _not_ready(self) -> list[str]:
        if self._stopping:
            return ["shutting down"]
        return [f"informer {i.name}" for i in self.informers if not i.has_synced]

    @property
    def leader_gate(self) -> asyncio.Event:
        if self.elector is not None:
            return self.elector.is_leader
        gate = asyncio.Event()
        gate.set()
        return gate

    async def run(self, stop: asyncio.Event) -> int:
        """Run until ``stop`` is set (exit 0) or a fatal condition (exit 1)."""
        await self.endpoints.start()
        _log.info("endpoints listening", **{k: str(v) for k, v in self.endpoints.bound.items()})
        gate = self.leader_gate
        background = [
            asyncio.create_task(self._supervise(i.name, i.run), name=f"informer {i.name}")
            for i in self.informers
        ]
        if self.elector is not None:
            background.append(asyncio.create_task(self._lead(self.elector), name="leader election"))
        else:
            self.metrics.leader.labels("none").set(1)
        workers = [
            asyncio.create_task(c.run(gate), name=f"controller {c.name}") for c in self.controllers
        ]
        workers += [
            asyncio.create_task(self._start_runnable(name, run, gate, leader_only), name=name)
            for name, run, leader_only in self._runnables
        ]
        stop_wait = asyncio.create_task(stop.wait())
        fatal_wait = asyncio.create_task(self._fatal.wait())
        await asyncio.wait({stop_wait, fatal_wait}, return_when=asyncio.FIRST_COMPLETED)
        fatal = self._fatal.is_set()
        stop_wait.cancel()
        fatal_wait.cancel()
        await self._shutdown(workers, background)
        if fatal:
            _log.error("manager exiting", reason=self.exit_reason)
            return 1
        _log.info("manager stopped cleanly")
        return 0

    async def _shutdown(
        self, workers: list[asyncio.Task[None]], background: list[asyncio.Task[None]]
    ) -> None:
        started = self._clock.monotonic()
        self._stopping = True
        for controller in self.controllers:
            controller.queue.shutdown()
        self._runnables_stop.set()
        # Reconciles in flight get most of the budget; the rest is for releasing and closing.
        budget = max(1.0, self.settings.shutdown_timeout - 5.0)
        if workers:
            _, pending = await asyncio.wait(workers, timeout=budget)
            for task in pending:
                task.cancel()
            if pending:
                _log.warning(
                    "cancelled reconciles still running at the shutdown deadline",
                    count=len(pending),
                )
                await asyncio.gather(*pending, return_exceptions=True)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if self.elector is not None:
            await self.elector.release()
        await self.endpoints.stop()
        _log.info("shutdown complete", seconds=round(self._clock.monotonic() - started, 2))

    async def _lead(self, elector: LeaderElector) -> None:
        await elector.run()  # returns only when leadership is lost
        if not self._stopping:
            self.exit_reason = "leader election lost"
            self._fatal.set()

    async def _supervise(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """Restart ``run`` with backoff when it crashes; give up (exit 1) when it keeps crashing."""
        crashes: list[float] = []
        delay = 1.0
        while True:
            try:
                await run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as err:
                now = self._clock.monotonic()
                crashes = [t for t in crashes if now - t < self.settings.restart_window] + [now]
                if len(crashes) > self.settings.max_restarts:
                    window = self.settings.restart_window
                    self.exit_reason = f"{name} crashed {len(crashes)} times in {window:.0f}s"
                    _log.error("giving up on task", task=name, error=str(err))
                    self._fatal.set()
                    return
                _log.exception("task crashed; restarting", task=name, retry_in=delay)
                await self._clock.sleep(delay * (1 + self._rng.random()))
                delay = min(delay * 2, 30.0)
