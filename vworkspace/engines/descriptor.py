"""What an engine says about itself, in its own file: the descriptor the registry learns from.

Each engine module ends with one descriptor (``DESCRIPTOR``): the CRDs the engine needs, what
to say while they are missing, the foreign kinds it caches and which ApplicationInstances their
events wake, and a factory that builds the engine from an :class:`EngineContext`. The catalog
(engines/catalog.py) lists the descriptors; app/engines.py discovers their CRDs, makes their
informers and registers what they build, and names no engine. Adding an engine is its file
plus one line in the catalog.

Trade-off: the descriptor is data plus a factory rather than a class hierarchy with
registration side effects at import time, so the catalog stays the one list of what runs and a
test can register a catalog of its own (tests/unit/test_engine_catalog.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

import attrs

from vworkspace.api.applicationinstance import ApplicationInstanceView
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.api.view import ObjectView
from vworkspace.engines.base import InstanceEngine, OperationEngine
from vworkspace.kube.cache.informer import Informer, UpdatePredicate
from vworkspace.kube.clock import Clock
from vworkspace.kube.rest.api import KubeApi
from vworkspace.kube.rest.resources import ResourceType

Instances = Callable[[str], Iterable[ApplicationInstanceView]]
"""The ApplicationInstances of one namespace (from the instance informer's cache)."""

Wakes = Callable[[JsonObj, Instances], list[ObjectKey]]
"""Which ApplicationInstances an event of a watched object concerns."""


def owner_instance(obj: JsonObj, instances: Instances) -> list[ObjectKey]:
    """The controlling owner of kind ApplicationInstance (a HelmRelease, a Seaweed CR)."""
    view = ObjectView(obj)
    return [
        ObjectKey(view.namespace, ref.name)
        for ref in view.owner_references
        if ref.kind == "ApplicationInstance" and ref.controller and ref.name
    ]


@attrs.frozen
class Watch:
    """A foreign kind an engine keeps an informer of.

    ``label_selector``: only the objects the operator made (they carry its labels); None for
    objects made by others (S3Credentials). ``wakes``: the instances an event concerns, None
    when the engine only reads the cache (an Operation engine polls). ``on_update``: an update
    wakes them only when this holds (kube/cache/predicates.py); None: every update. Two
    engines declaring the same (resource, selector) share one informer."""

    resource: ResourceType
    label_selector: str | None = None
    wakes: Wakes | None = None
    on_update: UpdatePredicate | None = None

    @property
    def cache_key(self) -> tuple[str, str, str, str | None]:
        """Which informer serves this watch (the same kind and selector share one)."""
        r = self.resource
        return (r.group, r.version, r.plural, self.label_selector)


@attrs.frozen
class EngineSettings:
    """The operator settings engines read (app/wiring.py ``OperatorSettings`` has them)."""

    velero_namespace: str = "velero"
    # HelmRelease spec.serviceAccountName (Flux impersonation); "" keeps helm-controller's own.
    flux_service_account: str = ""


class InformerSource(Protocol):
    def __call__(self, watch: Watch) -> Informer:
        """The informer of ``watch`` (one of the engine's declared watches)."""
        ...


@attrs.frozen
class EngineContext:
    """What a factory builds an engine from: the API (never the concrete client), the clock,
    the settings and the informers of the engine's declared watches."""

    client: KubeApi
    clock: Clock
    settings: EngineSettings
    informer: InformerSource


@attrs.frozen(kw_only=True)
class EngineDescriptor:
    """An engine's self-description.

    ``requires``: ``<apiVersion>/<Kind>`` of every CRD it needs; all must be served before it
    is registered (empty: always available, e.g. batch/v1 Jobs). ``missing``: the Blocked
    message while they are not. ``watches``: the foreign kinds it caches."""

    name: str
    requires: tuple[str, ...] = ()
    missing: str = ""
    watches: tuple[Watch, ...] = ()


@attrs.frozen(kw_only=True)
class OperationEngineDescriptor(EngineDescriptor):
    """An engine that carries out Operations (``spec.engine`` names it)."""

    build: Callable[[EngineContext], OperationEngine]


@attrs.frozen(kw_only=True)
class InstanceEngineDescriptor(EngineDescriptor):
    """An engine that renders ApplicationInstances; ``claims`` says which (exactly one
    descriptor of the catalog claims a managed instance)."""

    build: Callable[[EngineContext], InstanceEngine]
    claims: Callable[[ApplicationInstanceView], bool]


AnyDescriptor = OperationEngineDescriptor | InstanceEngineDescriptor
