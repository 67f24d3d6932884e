"""The Flux engine: an ApplicationInstance becomes a HelmRelease plus its chart source.

* ``helm`` charts: a ``HelmRepository`` ``<release>-source`` and a HelmRelease whose
  ``spec.chart.spec.sourceRef`` points at it (docs/api.md, "What the operator makes of it").
* ``oci`` charts: an ``OCIRepository`` ``<release>-source`` with ``url: <chart.url>/<chart.name>``
  and ``ref.tag: <version>``, referenced by ``HelmRelease.spec.chartRef``. The Go operator's OCI
  objects are rejected by current Flux CRDs (docs/api.md, deviation 10); this fixes that.
* Values: ``inline`` -> ``spec.values``; ``secretRef`` / ``configMapRef`` -> ``spec.valuesFrom``,
  so Secret material never lands in the HelmRelease (Go copied it into ``spec.values``).
* Everything is written with server-side apply as ``vworkspace-operator`` (only the fields we
  own), with Go's labels; the HelmRelease has a controller owner reference to the instance
  and the sources are deleted explicitly on cancel.

Status is a roll-up of the HelmRelease (docs/api.md, "HelmRelease status roll-up"), read from the
informer cache.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import attrs

from vworkspace.api import constants
from vworkspace.api.applicationinstance import ConditionType as Cond
from vworkspace.api.applicationinstance import Reason as Why
from vworkspace.api.meta import ObjectKey
from vworkspace.engines.base import (
    ConditionView,
    EngineRef,
    EngineRequest,
    InstanceStatus,
    Observation,
    State,
)
from vworkspace.kube.applied import apply_if_changed
from vworkspace.kube.client import KubeClient
from vworkspace.kube.errors import NotFoundError
from vworkspace.kube.resources import ResourceType

JsonObj = dict[str, Any]
HELM_RELEASES = ResourceType("helm.toolkit.fluxcd.io", "v2", "helmreleases", "HelmRelease")
HELM_REPOSITORIES = ResourceType(
    "source.toolkit.fluxcd.io", "v1", "helmrepositories", "HelmRepository"
)
OCI_REPOSITORIES = ResourceType(
    "source.toolkit.fluxcd.io", "v1", "ocirepositories", "OCIRepository"
)
WAITING_REASONS = frozenset({"DependencyNotReady", "SourceNotReady", "ArtifactFailed"})


def owner_labels(ai: JsonObj) -> dict[str, str]:
    labels = (ai.get("metadata") or {}).get("labels") or {}
    result = {
        constants.LABEL_MANAGED_BY: labels.get(constants.LABEL_MANAGED_BY)
        or constants.MANAGED_BY_OPERATOR,
        constants.LABEL_APPLICATION_INSTANCE: ai["metadata"]["name"],
    }
    if labels.get(constants.LABEL_CLUSTER_ID):
        result[constants.LABEL_CLUSTER_ID] = labels[constants.LABEL_CLUSTER_ID]
    return result


def controller_ref(obj: JsonObj) -> JsonObj:
    meta = obj["metadata"]
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def desired_objects(
    ai: JsonObj, *, service_account: str = ""
) -> tuple[tuple[ResourceType, JsonObj], tuple[ResourceType, JsonObj]]:
    """The (source, HelmRelease) an instance asks for. ``service_account``: Flux impersonates
    this ServiceAccount of the release namespace to install the chart, instead of using
    helm-controller's own (typically cluster-admin) identity (docs/operations.md, "Hardening")."""
    spec = ai["spec"]
    chart, release = spec["chart"], spec["release"]
    namespace = ai["metadata"]["namespace"]
    labels = owner_labels(ai)
    source_name = f"{release['name']}-source"
    meta = {"name": source_name, "namespace": namespace, "labels": labels}
    hr_spec: JsonObj = {"interval": "5m0s"}
    if service_account:
        hr_spec["serviceAccountName"] = service_account
    source: tuple[ResourceType, JsonObj]
    if chart["sourceType"] == "oci":
        source = (
            OCI_REPOSITORIES,
            {
                "apiVersion": "source.toolkit.fluxcd.io/v1",
                "kind": "OCIRepository",
                "metadata": meta,
                "spec": {
                    "interval": "1m0s",
                    "url": f"{chart['url'].rstrip('/')}/{chart['name']}",
                    "ref": {"tag": chart["version"]},
                },
            },
        )
        hr_spec["chartRef"] = {"kind": "OCIRepository", "name": source_name}
    else:
        source = (
            HELM_REPOSITORIES,
            {
                "apiVersion": "source.toolkit.fluxcd.io/v1",
                "kind": "HelmRepository",
                "metadata": meta,
                "spec": {"interval": "1m0s", "url": chart["url"]},
            },
        )
        hr_spec["chart"] = {
            "spec": {
                "chart": chart["name"],
                "version": chart["version"],
                "sourceRef": {"kind": "HelmRepository", "name": source_name},
            }
        }
    values = spec["values"]
    if values["source"] == "inline" and values.get("inline") is not None:
        hr_spec["values"] = values["inline"]
    elif values["source"] == "secretRef":
        ref = values["secretRef"]
        hr_spec["valuesFrom"] = [{"kind": "Secret", "name": ref["name"], "valuesKey": ref["key"]}]
    elif values["source"] == "configMapRef":
        ref = values["configMapRef"]
        hr_spec["valuesFrom"] = [
            {"kind": "ConfigMap", "name": ref["name"], "valuesKey": ref["key"]}
        ]
    helm_release = {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {
            "name": release["name"],
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [controller_ref(ai)],
        },
        "spec": hr_spec,
    }
    return source, (HELM_RELEASES, helm_release)


def _conditions(obj: JsonObj) -> dict[str, JsonObj]:
    result: dict[str, JsonObj] = {}
    for cond in (obj.get("status") or {}).get("conditions") or []:
        result.setdefault(cond.get("type", ""), cond)
    return result


def rollup(hr: JsonObj | None) -> Observation:
    """A HelmRelease's state as an engine-neutral observation (docs/api.md, "HelmRelease status
    roll-up"): only conditions of the current generation count. Succeeded = Ready at the current
    generation; failed + stalled = Flux gave up (Stalled); failed = Ready False for a reason other
    than waiting on a dependency; otherwise running (progressing)."""
    if hr is None:
        return Observation(
            State.RUNNING, "Reconciling", "waiting for the HelmRelease", progressing=True
        )
    generation = (hr.get("metadata") or {}).get("generation")
    observed = (hr.get("status") or {}).get("observedGeneration")
    conds = _conditions(hr)

    def current(kind: str) -> JsonObj | None:
        cond = conds.get(kind)
        if cond is None:
            return None
        og = cond.get("observedGeneration")
        return cond if og is None or og == generation else None

    stalled, ready, reconciling = current("Stalled"), current("Ready"), conds.get("Reconciling")
    busy = reconciling is not None and reconciling.get("status") == "True"
    if stalled is not None and stalled.get("status") == "True":
        return Observation(
            State.FAILED,
            stalled.get("reason") or "Stalled",
            stalled.get("message", ""),
            stalled=True,
        )
    if ready is not None and ready.get("status") == "True" and observed == generation and not busy:
        return Observation(State.SUCCEEDED, "HelmReleaseReady", ready.get("message", ""))
    if busy:
        assert reconciling is not None
        message = (ready or {}).get("message") or reconciling.get("message", "")
        reason = reconciling.get("reason") or "HelmReleaseInstalling"
        return Observation(State.RUNNING, reason, message, progressing=True)
    if ready is not None and ready.get("status") == "False":
        reason = ready.get("reason") or "HelmReleaseFailed"
        if reason in WAITING_REASONS:
            return Observation(State.RUNNING, reason, ready.get("message", ""), progressing=True)
        return Observation(State.FAILED, reason, ready.get("message", ""))
    return Observation(
        State.RUNNING,
        "Reconciling",
        (ready or {}).get("message", "waiting for Flux"),
        progressing=True,
    )


def instance_conditions(seen: Observation) -> tuple[ConditionView, ...]:
    """The release's observation as the instance's Blocked, Ready, Reconciling and Degraded."""
    detail = f"{seen.reason}: {seen.message}"
    conds = [ConditionView(Cond.BLOCKED, "False", Why.UNBLOCKED)]
    if seen.state == State.SUCCEEDED:
        conds.append(ConditionView(Cond.READY, "True", Why.HELM_RELEASE_READY, seen.message))
    elif seen.failed:
        conds.append(ConditionView(Cond.READY, "False", Why.HELM_RELEASE_FAILED, detail))
    else:
        conds.append(
            ConditionView(Cond.READY, "Unknown", seen.reason or Why.RECONCILING, seen.message)
        )
    if seen.progressing:
        reason = seen.reason or Why.HELM_RELEASE_INSTALLING
        conds.append(ConditionView(Cond.RECONCILING, "True", reason, seen.message))
    else:
        conds.append(ConditionView(Cond.RECONCILING, "False", Why.STABLE))
    if seen.failed:
        reason = "Stalled" if seen.stalled else Why.HELM_RELEASE_DEGRADED
        conds.append(ConditionView(Cond.DEGRADED, "True", reason, detail))
    else:
        conds.append(ConditionView(Cond.DEGRADED, "False", Why.RECOVERED))
    return tuple(conds)


class FluxEngine:
    name = "flux"

    def __init__(
        self,
        client: KubeClient,
        *,
        helm_releases: Callable[[ObjectKey], JsonObj | None],
        sources: Callable[[ResourceType, ObjectKey], JsonObj | None] = lambda _t, _k: None,
        remember: Callable[[ResourceType, JsonObj], None] = lambda _t, _o: None,
        service_account: str = "",
    ) -> None:
        """``helm_releases`` and ``sources`` read the informer caches of the objects this engine
        made; an object already as desired is not applied again (kube/applied.py).
        ``remember`` hands each applied object back to its cache (``Informer.record_write``)."""
        self._client = client
        self._helm_releases = helm_releases
        self._sources = sources
        self._remember = remember
        self._service_account = service_account

    async def materialize(self, request: EngineRequest) -> EngineRef:
        assert request.target is not None  # an instance's own engine always has its instance
        (source_type, source), (hr_type, helm_release) = desired_objects(
            request.target, service_account=self._service_account
        )
        meta = helm_release["metadata"]
        source_key = ObjectKey(meta["namespace"], source["metadata"]["name"])
        release_key = ObjectKey(meta["namespace"], meta["name"])
        # Both at once: neither refers to the other's existence (Flux waits for the source),
        # so a new instance waits one round trip instead of two.
        outcomes = await asyncio.gather(
            self._apply(source_type, source, self._sources(source_type, source_key)),
            self._apply(hr_type, helm_release, self._helm_releases(release_key)),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome  # the first failure, as if applied one after the other
        return EngineRef("HelmRelease", meta["name"], meta["namespace"])

    async def _apply(self, resource: ResourceType, desired: JsonObj, live: JsonObj | None) -> None:
        stored = await apply_if_changed(
            self._client,
            resource,
            desired,
            live=live,
            field_manager=constants.FIELD_MANAGER_OPERATOR,
        )
        if stored is not None:
            self._remember(resource, stored)

    def helm_release(self, ai: JsonObj) -> JsonObj | None:
        release = (ai.get("spec") or {}).get("release") or {}
        return self._helm_releases(ObjectKey(ai["metadata"]["namespace"], release.get("name", "")))

    async def observe(self, request: EngineRequest) -> Observation:
        assert request.target is not None
        meta = request.target["metadata"]
        name = ((request.target.get("spec") or {}).get("release") or {}).get("name", "")
        found = rollup(self.helm_release(request.target))
        return attrs.evolve(found, ref=EngineRef("HelmRelease", name, meta["namespace"]))

    async def instance_status(self, ai: JsonObj, seen: Observation) -> InstanceStatus:
        ref = seen.ref
        fields: JsonObj = {
            "helmReleaseRef": {"name": ref.name, "namespace": ref.namespace} if ref else None,
            "lastAppliedChart": dict(ai["spec"]["chart"]),
            "endpoints": None,
        }
        # The HelmRelease informer brings the instance back when the release moves.
        return InstanceStatus(conditions=instance_conditions(seen), fields=fields)

    def instance_failure(self, ai: JsonObj, message: str) -> InstanceStatus:
        return InstanceStatus(
            conditions=(
                ConditionView(
                    Cond.READY,
                    "False",
                    Why.HELM_RELEASE_FAILED,
                    f"writing the Flux objects failed: {message}",
                ),
                ConditionView(Cond.RECONCILING, "False", Why.STABLE),
                ConditionView(Cond.BLOCKED, "False", Why.UNBLOCKED),
            ),
            requeue_after=30,
        )

    async def cancel(self, request: EngineRequest) -> None:
        ai = request.target
        if ai is None:
            return
        release = ai["spec"].get("release") or {}
        namespace = ai["metadata"]["namespace"]
        name = release.get("name")
        if not name:
            return
        for resource, obj_name in (
            (HELM_RELEASES, name),
            (HELM_REPOSITORIES, f"{name}-source"),
            (OCI_REPOSITORIES, f"{name}-source"),
        ):
            with contextlib.suppress(NotFoundError):
                await self._client.delete(resource, ObjectKey(namespace, obj_name))
