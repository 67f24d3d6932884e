"""What the real controllers wrote, as ``python -m vworkspace demo`` shows it.

The demo polls (every 0.2 s) the objects the install goes through: the operator's shared
HelmRepository and its HelmRelease, the HelmChart source-controller makes for it, the Deployment
helm-controller installs and its Pods on kwok's Nodes, and the ApplicationInstance; with
``--backup`` also the Operation and the Velero Backup. This module holds what those polls need
and nothing about the demo's steps: reading conditions, remembering the sequence in which they
appeared (:class:`ConditionLog`, and :class:`PhaseLog` for ``status.phase``, printed at the end as
the observed truth, like the real tier's ``flux-conditions:`` and ``velero-phases:`` lines) and
one line per object for a terminal.

Trade-off: polling rather than watching. A state that lasts less than the interval can be
missed, and the printed times are up to one interval late; in exchange every wait is a plain
loop with one deadline, and a demo that hangs says which object it was waiting for and what
that object last said.
"""

from __future__ import annotations

from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.kube.rest.api import KubeApi
from vworkspace.kube.rest.errors import NotFoundError
from vworkspace.kube.rest.resources import ResourceType

HELM_CHARTS = ResourceType("source.toolkit.fluxcd.io", "v1", "helmcharts", "HelmChart")
DEPLOYMENTS = ResourceType("apps", "v1", "deployments", "Deployment")
PODS = ResourceType("", "v1", "pods", "Pod")
# helm-controller labels every object it installs with the HelmRelease's name and namespace.
RELEASE_NAME_LABEL = "helm.toolkit.fluxcd.io/name"
RELEASE_NAMESPACE_LABEL = "helm.toolkit.fluxcd.io/namespace"


def condition(obj: JsonObj, type_: str) -> JsonObj:
    """The condition ``type_`` of ``obj``'s status, or {}."""
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == type_), {})


def state_of(cond: JsonObj) -> str:
    """``Type=Status/Reason``, the notation of the real tier's condition sequences."""
    return f"{cond.get('type')}={cond.get('status')}/{cond.get('reason', '')}"


def ready_now(obj: JsonObj) -> bool:
    """Ready=True for the object's current generation: the condition's own
    ``observedGeneration`` (Flux) or the status's (the operator's kinds), whichever is set."""
    ready = condition(obj, "Ready")
    if ready.get("status") != "True":
        return False
    observed = ready.get("observedGeneration", (obj.get("status") or {}).get("observedGeneration"))
    return observed is None or observed == obj.get("metadata", {}).get("generation")


def stalled(obj: JsonObj) -> bool:
    """Flux gave up on it (``Stalled=True``): waiting longer will not make it Ready."""
    return condition(obj, "Stalled").get("status") == "True"


class ConditionLog:
    """The distinct ``Type=Status/Reason`` states of one object's conditions, in the order the
    polls saw them."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._last: dict[str, str] = {}

    def record(self, obj: JsonObj) -> None:
        for cond in (obj.get("status") or {}).get("conditions") or []:
            state = state_of(cond)
            if self._last.get(cond.get("type", "")) != state:
                self._last[cond.get("type", "")] = state
                self.seen.append(state)

    def text(self) -> str:
        return " -> ".join(self.seen) if self.seen else "no conditions yet"


class PhaseLog:
    """The distinct ``status.phase`` values of one object (a Velero Backup, an Operation), in
    the order the polls saw them: Velero writes phases, not conditions."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def record(self, obj: JsonObj) -> None:
        phase = (obj.get("status") or {}).get("phase")
        if phase and self.seen[-1:] != [phase]:  # none yet: the controller has not written it
            self.seen.append(phase)

    def text(self) -> str:
        return " -> ".join(self.seen) if self.seen else "none yet"


class Watch:
    """One object, polled: its last version and the conditions and phases it went through."""

    def __init__(self, kube: KubeApi, resource: ResourceType, key: ObjectKey) -> None:
        self.kube = kube
        self.resource = resource
        self.key = key
        self.log = ConditionLog()
        self.phases = PhaseLog()
        self.last: JsonObj | None = None

    @property
    def name(self) -> str:
        return f"{self.resource.kind} {self.key}"

    async def fetch(self) -> JsonObj | None:
        """The object now (None while it does not exist), its conditions recorded."""
        try:
            self.last = await self.kube.get(self.resource, self.key)
        except NotFoundError:
            self.last = None
            return None
        self.log.record(self.last)
        self.phases.record(self.last)
        return self.last

    def explain(self) -> str:
        """What it last said, for a step that timed out."""
        if self.last is None:
            return f"{self.name} does not exist"
        seen = f"conditions seen {self.log.text()}" if self.log.seen else "no conditions yet"
        if self.phases.seen:  # the kinds with a status.phase only
            seen = f"phases seen {self.phases.text()}; {seen}"
        ready = condition(self.last, "Ready")
        if not ready:
            return f"{self.name}: {seen}"
        message = f": {ready['message']}" if ready.get("message") else ""
        return f"{self.name}: {seen}; now {state_of(ready)}{message}"


async def released_deployments(kube: KubeApi, release: ObjectKey) -> list[JsonObj]:
    """The Deployments helm-controller installed for the HelmRelease ``release``."""
    selector = f"{RELEASE_NAME_LABEL}={release.name},{RELEASE_NAMESPACE_LABEL}={release.namespace}"
    found = await kube.list(DEPLOYMENTS, release.namespace, labelSelector=selector)
    return list(found.get("items") or [])


def deployment_available(deployment: JsonObj) -> bool:
    """Available=True with every wanted replica ready (a Deployment scaled to 0 is too)."""
    wanted = (deployment.get("spec") or {}).get("replicas", 1)
    ready = (deployment.get("status") or {}).get("readyReplicas", 0)
    available = condition(deployment, "Available").get("status") == "True"
    return available and ready >= wanted


async def pods_of(kube: KubeApi, deployment: JsonObj) -> list[JsonObj]:
    """The Pods the Deployment's selector matches (``matchLabels`` only: the charts here use
    nothing else)."""
    labels = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    namespace = deployment["metadata"]["namespace"]
    found = await kube.list(PODS, namespace, labelSelector=selector)
    return list(found.get("items") or [])


def describe_pod(pod: JsonObj) -> str:
    """``Pod ns/name on node: Phase``."""
    meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
    node = spec.get("nodeName") or "no node yet"
    return f"Pod {meta['namespace']}/{meta['name']} on {node}: {status.get('phase', 'Unknown')}"
