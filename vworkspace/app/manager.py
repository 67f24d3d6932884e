"""The manager: one process, one event loop, every long-running task owned and stopped in order.

Start order: HTTP endpoints -> informers (each under a supervisor) -> leader election -> the
controllers' workers (only once leading). Informers run on every replica, so a follower that
takes over starts with warm caches.

Stop order on SIGTERM (within ``shutdown_timeout``, 25 s by default, below the 30 s pod grace
period): ``/readyz`` turns 503, queues stop handing out keys, reconciles in flight finish (or are
cancelled at the deadline), informers stop, the Lease is released, the client is closed.

Every informer, controller and runnable runs under a
:class:`~vworkspace.kube.runtime.supervisor.Supervisor`:
a task that fails is restarted with backoff,
``/readyz`` names it while it is down, and no single task takes the process down
(docs/operations.md, "Failure and restart").

Controllers are set up against the manager (controllers/*.py ``setup``, as controller-runtime's
``SetupWithManager``): :meth:`Manager.informer` hands out one shared informer per resource, and
:meth:`Manager.add_controller` takes the built controller (kube/runtime/host.py).

Exit codes: 0 after a requested stop; 1 when leadership is lost or a task fails to start (the
Deployment restarts the pod).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import attrs
import structlog

from vworkspace.app.http import Address, Endpoints, ServingCert
from vworkspace.app.metricsauth import MetricsAuthorizer
from vworkspace.kube.cache.informer import Informer
from vworkspace.kube.clock import Clock
from vworkspace.kube.metrics import InformerAgeCollector, Metrics
from vworkspace.kube.rest.api import KubeApi
from vworkspace.kube.rest.resources import ResourceType
from vworkspace.kube.runtime.controller import Controller
from vworkspace.kube.runtime.host import ControllerOptions
from vworkspace.kube.runtime.leaderelection import LeaderElector
from vworkspace.kube.runtime.supervisor import Supervisor

_log = structlog.get_logger("vworkspace.manager")


@attrs.frozen
class ManagerSettings:
    probes: Address | None = None
    metrics: Address | None = None
    # Set: /metrics over HTTPS with this serving pair, behind the Manager's metrics_authorizer.
    metrics_tls: ServingCert | None = None
    shutdown_timeout: float = 25.0
    # Restart backoff of supervised tasks: initial delay, cap, and how long a task must run
    # without failing for the backoff to start over.
    restart_initial: float = 1.0
    restart_cap: float = 60.0
    restart_stable_after: float = 60.0


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
        api: KubeApi | None = None,
        controller_options: ControllerOptions | None = None,
    ) -> None:
        """``metrics_authorizer``: required with ``settings.metrics_tls`` (secure metrics).
        ``api``: what the shared informers (:meth:`informer`) watch; ``controller_options``:
        the workers and reconcile deadline of every controller set up against this manager."""
        self.settings = settings
        self._api = api
        self.controller_options = controller_options or ControllerOptions()
        self._shared: dict[ResourceType, Informer] = {}
        self.metrics = metrics
        self._clock = clock
        self._rng = rng or random.Random()
        self.elector = elector
        self.informers: list[Informer] = []
        self.controllers: list[Controller] = []
        self._runnables: list[_Runnable] = []
        self.supervisors: list[Supervisor] = []
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

    @property
    def clock(self) -> Clock:
        return self._clock

    def add_informer(self, informer: Informer) -> Informer:
        self.informers.append(informer)
        return informer

    def informer(self, resource: ResourceType) -> Informer:
        """The one shared informer of ``resource``, created (and run) on first request."""
        shared = self._shared.get(resource)
        if shared is None:
            if self._api is None:
                raise ValueError("a Manager without an api has no shared informers")
            shared = Informer(self._api, resource, clock=self._clock, metrics=self.metrics)
            self._shared[resource] = self.add_informer(shared)
        return shared

    def add_controller(self, controller: Controller) -> Controller:
        self.controllers.append(controller)
        return controller

    def add_runnable(
        self,
        name: str,
        run: Callable[[asyncio.Event], Awaitable[None]],
        *,
        leader_only: bool = True,
        started: asyncio.Event | None = None,
    ) -> None:
        """A long-running task (e.g. the agent's poller) that gets a stop event at shutdown and
        is given the same budget as reconciles in flight to finish. It is restarted when it
        fails, except before ``started`` is set (a start-up error, which ends the process)."""
        self._runnables.append(_Runnable(name, run, leader_only, started))

    def _supervisor(
        self, name: str, run: Callable[[], Awaitable[None]], started: asyncio.Event | None = None
    ) -> Supervisor:
        supervisor = Supervisor(
            name,
            run,
            clock=self._clock,
            rng=self._rng,
            on_fatal=self._fail,
            metrics=self.metrics,
            started=started,
            stopping=lambda: self._stopping,
            initial=self.settings.restart_initial,
            cap=self.settings.restart_cap,
            stable_after=self.settings.restart_stable_after,
        )
        self.supervisors.append(supervisor)
        return supervisor

    def _fail(self, reason: str) -> None:
        if not self.exit_reason:
            self.exit_reason = reason
        self._fatal.set()

    async def _start_runnable(self, runnable: _Runnable, gate: asyncio.Event) -> None:
        if runnable.leader_only:
            waiter = asyncio.ensure_future(gate.wait())
            stopper = asyncio.ensure_future(self._runnables_stop.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
            if self._runnables_stop.is_set():
                return

        async def run() -> None:
            await runnable.run(self._runnables_stop)

        await self._supervisor(runnable.name, run, runnable.started).run()

    def _not_ready(self) -> list[str]:
        if self._stopping:
            return ["shutting down"]
        waiting = [f"informer {i.name}" for i in self.informers if not i.has_synced]
        return waiting + [
            f"{s.name} down after a failure ({s.last_error})" for s in self.supervisors if s.down
        ]

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
            asyncio.create_task(
                self._supervisor(f"informer {i.name}", i.run).run(), name=f"informer {i.name}"
            )
            for i in self.informers
        ]
        if self.elector is not None:
            background.append(asyncio.create_task(self._lead(self.elector), name="leader election"))
        else:
            self.metrics.leader.labels("none").set(1)
        workers = [
            asyncio.create_task(self._run_controller(c, gate), name=f"controller {c.name}")
            for c in self.controllers
        ]
        workers += [
            asyncio.create_task(self._start_runnable(r, gate), name=r.name) for r in self._runnables
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
        try:
            await elector.run()  # returns only when leadership is lost
        except asyncio.CancelledError:
            raise
        except Exception as err:
            # Not restarted: after an unknown failure this replica cannot know whether it still
            # holds the lease, and acting as leader without it is worse than exiting.
            _log.exception("leader election failed")
            self._fail(f"leader election failed: {type(err).__name__}: {err}")
            return
        if not self._stopping:
            self._fail("leader election lost")

    async def _run_controller(self, controller: Controller, gate: asyncio.Event) -> None:
        async def run() -> None:
            await controller.run(gate)

        await self._supervisor(f"controller {controller.name}", run).run()


@attrs.frozen
class _Runnable:
    name: str
    run: Callable[[asyncio.Event], Awaitable[None]]
    leader_only: bool
    started: asyncio.Event | None
