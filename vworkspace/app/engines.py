"""Which engines run, and finding the optional ones at run time.

``job`` and ``helmHookJob`` need only ``batch/v1``, which every cluster serves: they are always
registered. ``flux`` and ``helm`` need the Flux HelmRelease CRD, ``velero`` the Velero Backup
CRD, ``workflow`` the Argo Workflow CRD, ``seaweed`` both SeaweedFS CRDs (Seaweed and
S3Credentials; its informers are the Seaweed and S3Credentials watches of docs/api.md, "Native
SeaweedFS", so they start when the CRDs appear, also after the operator started). An engine
whose CRD is served at start is registered at once; for the others :class:`EngineFinder` asks
API discovery again with backoff (``interval`` doubling up to ``max_interval``) and registers
the engine as soon as its kind is served, then requeues every ApplicationInstance and Operation
so that what was Blocked on ``MissingDependencies`` / ``DependencyMissing`` starts without a
restart (docs/operations.md).

Trade-off: polling discovery (one GET of a group version per missing group per interval) rather
than watching CustomResourceDefinitions, which would need cluster-wide read access to CRDs for a
question that changes about once in a cluster's life.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from vworkspace.api.constants import LABEL_APPLICATION_INSTANCE, LABEL_MANAGED_BY
from vworkspace.engines.base import EngineRegistry
from vworkspace.engines.flux import HELM_RELEASES, SOURCE_KINDS, FluxEngine
from vworkspace.engines.helm import HelmUpgradeEngine
from vworkspace.engines.job import HelmHookJobEngine, JobEngine
from vworkspace.engines.seaweed import S3_CREDENTIALS, SEAWEEDS, SeaweedEngine
from vworkspace.engines.velero import VeleroEngine
from vworkspace.engines.workflow import WorkflowEngine
from vworkspace.kube.cache.informer import Informer
from vworkspace.kube.cache.store import INDEX_NAMESPACE
from vworkspace.kube.clock import Clock
from vworkspace.kube.metrics import Metrics
from vworkspace.kube.rest.client import KubeClient
from vworkspace.kube.rest.discovery import Discovery, UnknownKindError
from vworkspace.kube.rest.resources import ResourceType

_log = structlog.get_logger("vworkspace.engines")

HELM_RELEASE_KIND = "helm.toolkit.fluxcd.io/v2/HelmRelease"
VELERO_KIND = "velero.io/v1/Backup"
WORKFLOW_KIND = "argoproj.io/v1alpha1/Workflow"
SEAWEED_KIND = "seaweed.seaweedfs.com/v1/Seaweed"
S3_CREDENTIALS_KIND = "seaweed.seaweedfs.com/v1/S3Credentials"
HELM_REPOSITORY_KIND = "source.toolkit.fluxcd.io/v1/HelmRepository"
OCI_REPOSITORY_KIND = "source.toolkit.fluxcd.io/v1/OCIRepository"
OPTIONAL_KINDS = (HELM_RELEASE_KIND, VELERO_KIND, WORKFLOW_KIND, SEAWEED_KIND)
# An engine whose objects need several kinds: all must be served.
# The Flux engine writes its chart sources (source-controller's kinds) and caches them too.
REQUIRES = {
    SEAWEED_KIND: (SEAWEED_KIND, S3_CREDENTIALS_KIND),
    HELM_RELEASE_KIND: (HELM_RELEASE_KIND, HELM_REPOSITORY_KIND, OCI_REPOSITORY_KIND),
}


async def served(client: KubeClient, kind: str) -> bool:
    """Does the cluster serve ``<apiVersion>/<kind>`` (and what it :data:`REQUIRES`) now? (A
    fresh discovery each time: the answer is expected to change.)"""
    for needed in REQUIRES.get(kind, (kind,)):
        api_version, _, name = needed.rpartition("/")
        try:
            await Discovery(client).resolve(api_version, name)
        except UnknownKindError:
            return False
    return True


class EngineFinder:
    """Registers engines, now for kinds served at start and later for the rest."""

    def __init__(
        self,
        *,
        client: KubeClient,
        registry: EngineRegistry,
        clock: Clock,
        metrics: Metrics,
        velero_namespace: str,
        interval: float = 5.0,
        max_interval: float = 60.0,
        flux_service_account: str = "",
    ) -> None:
        self._client = client
        self._flux_service_account = flux_service_account
        self._registry = registry
        self._clock = clock
        self._metrics = metrics
        self._velero_namespace = velero_namespace
        self._interval = interval
        self._max_interval = max_interval
        self.helm_releases: Informer | None = None
        self.pending: list[str] = []
        # Called with each informer created at run time (the Flux HelmRelease informer), before
        # it runs, so the wiring can hook controllers to it; and after each late registration.
        self.on_informer: Callable[[Informer], None] = lambda informer: None
        self.on_registered: Callable[[], None] = lambda: None
        registry.register(JobEngine(client))
        registry.register(HelmHookJobEngine(client))

    def register(self, kind: str) -> list[Informer]:
        """Register the engines of ``kind``; returns the informers the caller must run."""
        if kind == SEAWEED_KIND:
            return self._register_seaweed()
        if kind == HELM_RELEASE_KIND:
            return self._register_flux()
        if kind == VELERO_KIND:
            self._registry.register(VeleroEngine(self._client, namespace=self._velero_namespace))
        elif kind == WORKFLOW_KIND:
            self._registry.register(WorkflowEngine(self._client))
        return []

    def _labelled(
        self, resource: ResourceType, label: str = LABEL_APPLICATION_INSTANCE
    ) -> Informer:
        # Only objects we made (they carry the label: the instance label, else managed-by).
        return Informer(
            self._client,
            resource,
            label_selector=label,
            clock=self._clock,
            metrics=self._metrics,
        )

    def _register_flux(self) -> list[Informer]:
        self.helm_releases = self._labelled(HELM_RELEASES)
        # Shared chart sources belong to no single instance: they carry only the managed-by
        # label, as did the per-instance sources of older versions (found for migration).
        sources = {r: self._labelled(r, LABEL_MANAGED_BY) for r in SOURCE_KINDS}
        lookup = self.helm_releases.store.get
        caches = {HELM_RELEASES: self.helm_releases, **sources}
        self._registry.register(
            FluxEngine(
                self._client,
                helm_releases=lookup,
                sources=lambda resource, ns: sources[resource].store.by_index(INDEX_NAMESPACE, ns),
                remember=lambda resource, obj: caches[resource].record_write(obj),
                service_account=self._flux_service_account,
            )
        )
        self._registry.register(
            HelmUpgradeEngine(self._client, helm_releases=lookup, clock=self._clock)
        )
        return [self.helm_releases, *sources.values()]

    def _register_seaweed(self) -> list[Informer]:
        # Our Seaweed CRs (labelled) and every S3Credentials (made by others, unlabelled).
        seaweeds = Informer(
            self._client,
            SEAWEEDS,
            label_selector=LABEL_APPLICATION_INSTANCE,
            clock=self._clock,
            metrics=self._metrics,
        )
        credentials = Informer(
            self._client, S3_CREDENTIALS, clock=self._clock, metrics=self._metrics
        )
        self._registry.register(
            SeaweedEngine(
                self._client,
                seaweeds=seaweeds.store.get,
                credentials=lambda ns: credentials.store.by_index(INDEX_NAMESPACE, ns),
                clock=self._clock,
            )
        )
        return [seaweeds, credentials]

    async def run(self, stop: asyncio.Event) -> None:
        """Ask discovery about the missing kinds until all are served or ``stop`` is set."""
        late: list[asyncio.Task[None]] = []
        delay = self._interval
        try:
            while self.pending and not stop.is_set():
                if await self._sleep(delay, stop):
                    break
                for kind in list(self.pending):
                    if not await self._check(kind):
                        continue
                    self.pending.remove(kind)
                    for informer in self.register(kind):
                        self.on_informer(informer)
                        late.append(asyncio.create_task(informer.run(), name=informer.name))
                    _log.info("optional CRD now served; engine enabled", kind=kind)
                    self.on_registered()
                delay = min(delay * 2, self._max_interval)
            await stop.wait()
        finally:
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    async def _check(self, kind: str) -> bool:
        try:
            return await served(self._client, kind)
        except Exception as err:  # an API hiccup: ask again at the next interval
            _log.warning("engine discovery failed; retrying", kind=kind, error=str(err))
            return False

    async def _sleep(self, seconds: float, stop: asyncio.Event) -> bool:
        """Sleep ``seconds`` or until ``stop``; True when stopping."""
        sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        sleeper.cancel()
        stopper.cancel()
        return stop.is_set()
