"""Which engines run: discovery of the CRDs the catalog's engines require, now and later.

Generic over the catalog (engines/catalog.py): each engine's descriptor (engines/descriptor.py)
says which CRDs it requires, which foreign kinds it caches and which ApplicationInstances their
events wake; nothing here names an engine. An engine whose CRDs are all served at start is
registered at once; for the others :class:`EngineFinder` asks API discovery again with backoff
(``interval`` doubling up to ``max_interval``) and registers the engine as soon as they are
served, starts its informers, then requeues every ApplicationInstance and Operation so that
what was Blocked on ``MissingDependencies`` / ``DependencyMissing`` starts without a restart
(docs/operations.md). An engine with no required CRD (batch/v1 Jobs) is always registered.

Trade-off: polling discovery (one GET of a group version per missing kind per interval) rather
than watching CustomResourceDefinitions, which would need cluster-wide read access to CRDs for a
question that changes about once in a cluster's life.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

import attrs
import structlog

from vworkspace.api.applicationinstance import ApplicationInstanceView
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.app.manager import Manager
from vworkspace.engines.catalog import ENGINES
from vworkspace.engines.descriptor import AnyDescriptor, EngineContext, EngineSettings, Watch
from vworkspace.engines.registry import EngineRegistry
from vworkspace.kube.cache.informer import Informer
from vworkspace.kube.cache.store import INDEX_NAMESPACE
from vworkspace.kube.clock import Clock
from vworkspace.kube.metrics import Metrics
from vworkspace.kube.rest.api import KubeApi
from vworkspace.kube.rest.discovery import Discovery, UnknownKindError
from vworkspace.kube.runtime.controller import Controller

_log = structlog.get_logger("vworkspace.engines")


def required_kinds(catalog: Sequence[AnyDescriptor] = ENGINES) -> tuple[str, ...]:
    """Every ``<apiVersion>/<Kind>`` some engine of ``catalog`` requires, once, in order."""
    return tuple(dict.fromkeys(kind for d in catalog for kind in d.requires))


async def served(client: KubeApi, kinds: Iterable[str]) -> bool:
    """Does the cluster serve every ``<apiVersion>/<Kind>`` of ``kinds`` now? (A fresh
    discovery each time: the answer is expected to change.)"""
    for needed in kinds:
        api_version, _, name = needed.rpartition("/")
        try:
            await Discovery(client).resolve(api_version, name)
        except UnknownKindError:
            return False
    return True


async def served_kinds(
    client: KubeApi, catalog: Sequence[AnyDescriptor] = ENGINES
) -> frozenset[str]:
    """Which of the kinds the catalog's engines require the cluster serves at start; engines
    missing one are looked for again at run time (:class:`EngineFinder`)."""
    found = set()
    for kind in required_kinds(catalog):
        if await served(client, (kind,)):
            found.add(kind)
        else:
            _log.warning("optional CRD not installed; its engine waits for it", kind=kind)
    return frozenset(found)


@attrs.frozen
class Wake:
    """Where engine events go. ``instances``: the ApplicationInstance controller, whose queue
    the engines' watches feed (and whose start waits for their caches); ``instance_cache``: the
    instances, for watches that look them up by namespace (S3Credentials); ``requeue``: each
    (cache, controller) whose every object is requeued when an engine is registered late."""

    instances: Controller
    instance_cache: Informer
    requeue: tuple[tuple[Informer, Controller], ...] = ()


class EngineFinder:
    """Registers the catalog's engines, now for those whose CRDs are served and later for the
    rest; makes the informers their descriptors declare (one per kind and selector, shared)
    and hooks their events to the instance controller."""

    def __init__(
        self,
        manager: Manager,
        registry: EngineRegistry,
        *,
        client: KubeApi,
        clock: Clock,
        metrics: Metrics,
        settings: EngineSettings,
        wake: Wake,
        interval: float = 5.0,
        max_interval: float = 60.0,
    ) -> None:
        self._manager = manager
        self._registry = registry
        self._client = client
        self._clock = clock
        self._metrics = metrics
        self._wake = wake
        self._interval = interval
        self._max_interval = max_interval
        self._context = EngineContext(
            client=client, clock=clock, settings=settings, informer=self._informer
        )
        self._informers: dict[tuple[str, str, str, str | None], Informer] = {}
        self._new: list[Informer] = []  # made by the latest registration, not yet running
        self._hooked: set[Watch] = set()
        self.pending: list[AnyDescriptor] = []

    def _informer(self, watch: Watch) -> Informer:
        found = self._informers.get(watch.cache_key)
        if found is None:
            found = Informer(
                self._client,
                watch.resource,
                label_selector=watch.label_selector,
                clock=self._clock,
                metrics=self._metrics,
            )
            self._informers[watch.cache_key] = found
            self._new.append(found)
            self._manager.add_informer(found)  # readiness and the informer metrics
        return found

    def _instances(self, namespace: str) -> Iterable[ApplicationInstanceView]:
        cache = self._wake.instance_cache.store
        return (ApplicationInstanceView(o) for o in cache.by_index(INDEX_NAMESPACE, namespace))

    def _hook(self, watch: Watch) -> None:
        """Feed ``watch``'s events to the instance controller (once per declared watch)."""
        wakes = watch.wakes
        if wakes is None or watch in self._hooked:
            return
        self._hooked.add(watch)

        def mapper(obj: JsonObj) -> list[ObjectKey]:
            return wakes(obj, self._instances)

        self._wake.instances.watch_mapped(self._informer(watch), mapper, on_update=watch.on_update)

    def register(self, descriptor: AnyDescriptor) -> list[Informer]:
        """Register ``descriptor``'s engine; returns the informers it made that are not running
        yet (those of a kind another engine already caches are shared)."""
        self._new = []
        for watch in descriptor.watches:
            self._informer(watch)
            self._hook(watch)
        self._registry.register(descriptor, self._context)
        made, self._new = self._new, []
        return made

    def start(self, served: frozenset[str]) -> None:
        """Register what ``served`` allows now (the manager runs their informers); the rest
        waits for :meth:`run`."""
        for descriptor in self._registry.catalog:
            if set(descriptor.requires) <= served:
                self.register(descriptor)
            else:
                self.pending.append(descriptor)

    def _requeue_all(self) -> None:
        # What waited for the engine (Blocked, retried every 30-60 s) starts now.
        for cache, controller in self._wake.requeue:
            for key in cache.store.all_keys():
                controller.queue.add(key)

    async def run(self, stop: asyncio.Event) -> None:
        """Ask discovery about the missing kinds until all are served or ``stop`` is set."""
        late: list[asyncio.Task[None]] = []
        delay = self._interval
        try:
            while self.pending and not stop.is_set():
                if await self._sleep(delay, stop):
                    break
                for descriptor in list(self.pending):
                    if not await self._check(descriptor):
                        continue
                    self.pending.remove(descriptor)
                    for informer in self.register(descriptor):
                        late.append(asyncio.create_task(informer.run(), name=informer.name))
                    _log.info(
                        "optional CRD now served; engine enabled",
                        engine=descriptor.name,
                        kinds=list(descriptor.requires),
                    )
                    self._requeue_all()
                delay = min(delay * 2, self._max_interval)
            await stop.wait()
        finally:
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    async def _check(self, descriptor: AnyDescriptor) -> bool:
        try:
            return await served(self._client, descriptor.requires)
        except Exception as err:  # an API hiccup: ask again at the next interval
            _log.warning(
                "engine discovery failed; retrying", engine=descriptor.name, error=str(err)
            )
            return False

    async def _sleep(self, seconds: float, stop: asyncio.Event) -> bool:
        """Sleep ``seconds`` or until ``stop``; True when stopping."""
        sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        sleeper.cancel()
        stopper.cancel()
        return stop.is_set()


def setup_engines(
    manager: Manager,
    registry: EngineRegistry,
    *,
    client: KubeApi,
    clock: Clock,
    metrics: Metrics,
    settings: EngineSettings,
    served: frozenset[str],
    wake: Wake,
    interval: float = 5.0,
    max_interval: float = 60.0,
) -> EngineFinder:
    """Register into ``registry`` the engines of its catalog whose CRDs are ``served`` (the
    kinds served at start, :func:`served_kinds`), with their informers on ``manager`` and their
    events fed to ``wake``; the others are registered when their CRDs appear (a runnable of the
    manager on every replica: a follower's caches and registry must be ready to lead)."""
    finder = EngineFinder(
        manager,
        registry,
        client=client,
        clock=clock,
        metrics=metrics,
        settings=settings,
        wake=wake,
        interval=interval,
        max_interval=max_interval,
    )
    finder.start(served)
    if finder.pending:
        manager.add_runnable("engine finder", finder.run, leader_only=False)
    return finder
