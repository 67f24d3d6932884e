"""The Flux engine: an ApplicationInstance becomes a HelmRelease plus its chart source.

* ``helm`` charts: a ``HelmRepository`` and a HelmRelease whose ``spec.chart.spec.sourceRef``
  points at it (docs/api.md, "What the operator makes of it").
* ``oci`` charts: an ``OCIRepository`` with ``url: <chart.url>/<chart.name>`` and
  ``ref.tag: <version>``, referenced by ``HelmRelease.spec.chartRef``. The Go operator's OCI
  objects are rejected by current Flux CRDs (docs/api.md, deviation 10); this fixes that.
* Values: ``inline`` -> ``spec.values``; ``secretRef`` / ``configMapRef`` -> ``spec.valuesFrom``,
  so Secret material never lands in the HelmRelease (Go copied it into ``spec.values``).
* Everything is written with server-side apply as ``vworkspace-operator`` (only the fields we
  own), with Go's labels; the HelmRelease has a controller owner reference to the instance.

Shared chart sources. source-controller fetches each source once per interval, so one source per
instance meant 1,000 downloads of the same index for 1,000 instances of one catalog. A source
is shared by every instance of a namespace that needs the same one: it is named ``vws-src-``
plus a hash of its kind and of what changes the fetch (:func:`source_name`; the URL normalised
first, :func:`normalised_url`), and each user puts its own owner reference on it. The
Kubernetes garbage collector deletes it when the last owner is gone. Why owner references rather
than a reference count kept by our finalizer:

* no code of ours decides when a source is unused, and the decision survives restarts of the
  operator (it lives in the object) and a finalizer removed by hand;
* race-free by construction: each instance applies only its own entry, under a field manager
  of its own (``vworkspace-operator-source-<uid>``; ``ownerReferences`` is a map keyed by uid
  for server-side apply, so concurrent users add to the list, never overwrite it), with the
  source's uid as a precondition; the garbage collector deletes with the resourceVersion it
  judged as a precondition, so an owner added meanwhile cancels the deletion.

Costs: the first instance of a source writes it twice (spec, then its owner entry, which needs
the source's uid); every further instance once (its entry), as much as a per-instance source
cost; a warm restart nothing (both are skipped when the cache already has them). Each user adds
an owner reference and a managedFields entry (some 400 bytes) to the source, so 1,000 users
of one source in one namespace make a ~400 kB object (etcd's limit is 1.5 MB).
Trade-off accepted: an owner entry removed by hand is restored at the instance's next
reconcile, not at once (the watch ignores owner-only changes, which would otherwise wake every
user of a source each time one joins or leaves).

Status is a roll-up of the HelmRelease (docs/api.md, "HelmRelease status roll-up"), read from the
informer cache; a source that is not ready shows there (``SourceNotReady``, ``ArtifactFailed``),
shared or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import urllib.parse
from collections.abc import Callable

import attrs

from vworkspace.api import constants
from vworkspace.api.applicationinstance import ApplicationInstanceView
from vworkspace.api.applicationinstance import ConditionType as Cond
from vworkspace.api.applicationinstance import Reason as Why
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.api.view import ObjectView
from vworkspace.engines.base import (
    ConditionView,
    EngineError,
    EngineRef,
    InstanceRequest,
    InstanceStatus,
    Observation,
    State,
)
from vworkspace.engines.descriptor import (
    EngineContext,
    InstanceEngineDescriptor,
    Instances,
    Watch,
    owner_instance,
)
from vworkspace.kube.applied import apply_if_changed
from vworkspace.kube.cache.store import INDEX_NAMESPACE
from vworkspace.kube.rest.api import KubeApi
from vworkspace.kube.rest.errors import ConflictError, NotFoundError
from vworkspace.kube.rest.resources import ResourceType, key_of

HELM_RELEASES = ResourceType("helm.toolkit.fluxcd.io", "v2", "helmreleases", "HelmRelease")
HELM_REPOSITORIES = ResourceType(
    "source.toolkit.fluxcd.io", "v1", "helmrepositories", "HelmRepository"
)
OCI_REPOSITORIES = ResourceType(
    "source.toolkit.fluxcd.io", "v1", "ocirepositories", "OCIRepository"
)
SOURCE_KINDS = (HELM_REPOSITORIES, OCI_REPOSITORIES)
WAITING_REASONS = frozenset({"DependencyNotReady", "SourceNotReady", "ArtifactFailed"})
SOURCE_PREFIX = "vws-src-"
SOURCE_OWNER_MANAGER = f"{constants.FIELD_MANAGER_OPERATOR}-source-"  # + the instance's uid
SCHEDULE_FIELDS = frozenset({"interval", "timeout", "suspend"})
DEFAULT_PORTS = {"http": "80", "https": "443", "oci": "443"}


def owner_labels(ai: ApplicationInstanceView) -> dict[str, str]:
    labels = ai.labels
    result = {
        constants.LABEL_MANAGED_BY: labels.get(constants.LABEL_MANAGED_BY)
        or constants.MANAGED_BY_OPERATOR,
        constants.LABEL_APPLICATION_INSTANCE: ai.name,
    }
    if labels.get(constants.LABEL_CLUSTER_ID):
        result[constants.LABEL_CLUSTER_ID] = labels[constants.LABEL_CLUSTER_ID]
    return result


def controller_ref(obj: ObjectView) -> JsonObj:
    return {
        "apiVersion": obj.api_version,
        "kind": obj.kind,
        "name": obj.name,
        "uid": obj.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def normalised_url(url: str) -> str:
    """``url`` in one spelling per repository: scheme and host lower-cased, the scheme's default
    port, the fragment and trailing slashes dropped. The path and query keep their case (servers
    may tell them apart), so only spellings that reach the same server and path meet. Raises
    :class:`EngineError` naming ``spec.chart.url`` for what cannot be parsed."""
    try:
        parts = urllib.parse.urlsplit(url.strip())
    except ValueError as err:  # e.g. an unclosed IPv6 bracket
        raise EngineError(f"spec.chart.url: {url!r} is not a URL: {err}") from None
    scheme = parts.scheme.lower()
    userinfo, at, hostport = parts.netloc.rpartition("@")
    hostport = hostport.lower()
    default = DEFAULT_PORTS.get(scheme)
    if default and hostport.endswith(f":{default}"):
        hostport = hostport[: -len(default) - 1]
    netloc = f"{userinfo}{at}{hostport}"
    return urllib.parse.urlunsplit((scheme, netloc, parts.path.rstrip("/"), parts.query, ""))


def source_name(kind: str, spec: JsonObj) -> str:
    """The shared source's name: ``vws-src-`` and 20 hex digits (80 bits) of the SHA-256 of the
    kind and every spec field that changes what is fetched or how (URL, ``ref``, ``type``,
    ``secretRef``, ``certSecretRef``, ``provider``, ``insecure``, ...), but not the schedule
    (``interval``, ``timeout``, ``suspend``): a new interval in a later version keeps the name.
    A valid DNS-1123 label of 28 characters; the same repository and credentials give the
    same name in any namespace (the namespace is the object's own)."""
    fetched = {k: v for k, v in spec.items() if k not in SCHEDULE_FIELDS}
    canonical = json.dumps({"kind": kind, "spec": fetched}, sort_keys=True, separators=(",", ":"))
    return SOURCE_PREFIX + hashlib.sha256(canonical.encode()).hexdigest()[:20]


def desired_source(ai: ApplicationInstanceView) -> tuple[ResourceType, JsonObj]:
    """The chart source an instance needs, shared with every instance of its namespace that
    needs the same one. It carries no owner here: each user adds its own owner reference
    (:func:`owner_entry`). Labelled managed by the operator, without the instance label (it
    belongs to no single instance) nor the cluster id (instances would fight over it)."""
    chart = ai.chart
    resource, spec = (
        (
            OCI_REPOSITORIES,
            {
                "interval": "1m0s",
                "url": normalised_url(f"{chart['url'].rstrip('/')}/{chart['name']}"),
                "ref": {"tag": chart["version"]},
            },
        )
        if chart["sourceType"] == "oci"
        else (HELM_REPOSITORIES, {"interval": "1m0s", "url": normalised_url(chart["url"])})
    )
    meta = {
        "name": source_name(resource.kind, spec),
        "namespace": ai.namespace,
        "labels": {constants.LABEL_MANAGED_BY: constants.MANAGED_BY_OPERATOR},
    }
    source = {"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": resource.kind}
    return resource, {**source, "metadata": meta, "spec": spec}


def owner_entry(ai: ApplicationInstanceView) -> JsonObj:
    """An instance's owner reference on a shared source: not a controller, and not blocking the
    instance's deletion (the garbage collector deletes the source after its last owner)."""
    return {"apiVersion": ai.api_version, "kind": ai.kind, "name": ai.name, "uid": ai.uid}


def owner_uids(obj: JsonObj) -> set[str]:
    return {ref.uid for ref in ObjectView(obj).owner_references}


def owner_manager(ai: ApplicationInstanceView) -> str:
    """The field manager that owns one instance's entry in a shared source's owner list."""
    return f"{SOURCE_OWNER_MANAGER}{ai.uid}"


def desired_objects(
    ai: ApplicationInstanceView, *, service_account: str = ""
) -> tuple[tuple[ResourceType, JsonObj], tuple[ResourceType, JsonObj]]:
    """The (shared source, HelmRelease) an instance asks for. ``service_account``: Flux
    impersonates this ServiceAccount of the release namespace to install the chart, instead of
    using helm-controller's own (typically cluster-admin) identity (docs/operations.md,
    "Hardening")."""
    chart, release = ai.chart, ai.spec["release"]
    namespace = ai.namespace
    labels = owner_labels(ai)
    source = desired_source(ai)
    shared = ObjectView(source[1]).name
    hr_spec: JsonObj = {"interval": "5m0s"}
    if service_account:
        hr_spec["serviceAccountName"] = service_account
    if chart["sourceType"] == "oci":
        hr_spec["chartRef"] = {"kind": "OCIRepository", "name": shared}
    else:
        hr_spec["chart"] = {
            "spec": {
                "chart": chart["name"],
                "version": chart["version"],
                "sourceRef": {"kind": "HelmRepository", "name": shared},
            }
        }
    values = ai.spec["values"]
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


def _failure(ready: JsonObj | None) -> JsonObj | None:
    """Ready (of the current generation) if it says the release failed: False for a reason
    other than waiting (a source being fetched, ``SourceNotReady``, or a dependency)."""
    if ready is None or ready.get("status") != "False":
        return None
    return None if ready.get("reason") in WAITING_REASONS else ready


def rollup(hr: JsonObj | None) -> Observation:
    """A HelmRelease's state as an engine-neutral observation (docs/api.md, "HelmRelease status
    roll-up"): only conditions of the current generation count. Succeeded = Ready at the current
    generation; failed + stalled = Flux gave up (Stalled); failed = Ready False for a reason other
    than waiting on a source or dependency; otherwise running (progressing).

    A failure carries helm-controller's own reason and Helm's message (``InstallFailed``,
    ``UpgradeFailed``: the hook that failed, the field that was invalid), from Ready. Stalled
    only says that Flux stopped retrying (``RetriesExceeded``: "Failed to install after 1
    attempt(s)", seen from the real helm-controller right after ``Ready=False/InstallFailed``),
    so it sets ``stalled`` and lends its reason only when Ready has no failure to tell."""
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
        cause = _failure(ready) or stalled
        return Observation(
            State.FAILED,
            cause.get("reason") or "Stalled",
            cause.get("message", ""),
            stalled=True,
        )
    if ready is not None and ready.get("status") == "True" and observed == generation and not busy:
        return Observation(State.SUCCEEDED, "HelmReleaseReady", ready.get("message", ""))
    if busy and reconciling is not None:  # (busy says it is; the check narrows the type)
        message = (ready or {}).get("message") or reconciling.get("message", "")
        reason = reconciling.get("reason") or "HelmReleaseInstalling"
        return Observation(State.RUNNING, reason, message, progressing=True)
    if ready is not None and ready.get("status") == "False":
        failure = _failure(ready)
        if failure is None:
            reason = ready.get("reason") or ""
            return Observation(State.RUNNING, reason, ready.get("message", ""), progressing=True)
        return Observation(
            State.FAILED, failure.get("reason") or "HelmReleaseFailed", failure.get("message", "")
        )
    return Observation(
        State.RUNNING,
        "Reconciling",
        (ready or {}).get("message", "waiting for Flux"),
        progressing=True,
    )


def instance_conditions(seen: Observation) -> tuple[ConditionView, ...]:
    """The release's observation as the instance's Blocked, Ready, Reconciling and Degraded.

    A failure is ``Ready=False/HelmReleaseFailed`` (the reason the control plane knows) with
    the Flux reason in front of Flux's message, e.g. ``InstallFailed: Helm install failed for
    release ...``; Degraded says ``Stalled`` when Flux stopped retrying."""
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
        client: KubeApi,
        *,
        helm_releases: Callable[[ObjectKey], JsonObj | None],
        sources: Callable[[ResourceType, str], list[JsonObj]] = lambda _t, _ns: [],
        remember: Callable[[ResourceType, JsonObj], None] = lambda _t, _o: None,
        service_account: str = "",
    ) -> None:
        """``helm_releases`` and ``sources`` (the chart sources of one namespace) read the
        informer caches of the objects this engine made; an object already as desired is not
        applied again (kube/applied.py). ``remember`` hands each applied object back to its
        cache (``Informer.record_write``)."""
        self._client = client
        self._helm_releases = helm_releases
        self._sources = sources
        self._remember = remember
        self._service_account = service_account
        # (plural, key) -> resourceVersion of the cached state we deleted (see _delete_once).
        self._deleted: dict[tuple[str, ObjectKey], str] = {}

    def claims(self, ai: ApplicationInstanceView) -> bool:
        return claims(ai)

    def _cached_source(self, resource: ResourceType, key: ObjectKey) -> JsonObj | None:
        for obj in self._sources(resource, key.namespace or ""):
            if ObjectView(obj).name == key.name:
                return obj
        return None

    async def materialize(self, request: InstanceRequest) -> EngineRef:
        ai = request.instance
        (source_type, source), (hr_type, helm_release) = desired_objects(
            ai, service_account=self._service_account
        )
        release_key = key_of(helm_release)
        # All at once: none refers to another's existence (Flux waits for the source), so a
        # new instance waits for its source's two writes, not for three in a row.
        outcomes = await asyncio.gather(
            self._share_source(ai, source_type, source),
            self._apply(hr_type, helm_release, self._helm_releases(release_key)),
            self._leave_other_sources(ai, keep=key_of(source).name),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome  # the first failure, as if applied one after the other
        return EngineRef("HelmRelease", release_key.name, release_key.namespace or "")

    async def _apply(
        self, resource: ResourceType, desired: JsonObj, live: JsonObj | None
    ) -> JsonObj | None:
        stored = await apply_if_changed(
            self._client,
            resource,
            desired,
            live=live,
            field_manager=constants.FIELD_MANAGER_OPERATOR,
        )
        if stored is not None:
            self._remember(resource, stored)
        return stored

    async def _share_source(
        self, ai: ApplicationInstanceView, resource: ResourceType, source: JsonObj
    ) -> None:
        """Make sure the shared source is as desired and lists ``ai`` among its owners.

        The spec and labels are applied by ``vworkspace-operator`` (skipped when the cache
        already has them); the instance's owner entry by a field manager of its own, so that
        the owner list is the union of every user's entry (``ownerReferences`` is a map keyed
        by uid for server-side apply: no user's apply removes another's). The entry carries the
        source's uid, so it can neither create a source without spec nor land on a namesake
        re-created meanwhile (409); then the source is applied afresh, once."""
        live = self._cached_source(resource, key_of(source))
        for attempt in range(2):
            # Applying to an absent source returns what it created; an unchanged one is live.
            current = await self._apply(resource, source, live) or live or {}
            if ai.uid in owner_uids(current):
                return
            try:
                await self._add_owner(ai, resource, ObjectView(current))
                return
            except (ConflictError, NotFoundError):
                if attempt:
                    raise
                live = None  # gone or replaced since the cache saw it

    async def _add_owner(
        self, ai: ApplicationInstanceView, resource: ResourceType, current: ObjectView
    ) -> None:
        entry = {
            "apiVersion": current.api_version,
            "kind": current.kind,
            "metadata": {
                "name": current.name,
                "namespace": current.namespace,
                "uid": current.uid,
                "ownerReferences": [owner_entry(ai)],
            },
        }
        stored = await self._client.apply(resource, entry, field_manager=owner_manager(ai))
        self._remember(resource, stored)

    async def _leave_other_sources(self, ai: ApplicationInstanceView, *, keep: str) -> None:
        """Let go of the sources this instance used before and uses no more: a shared source
        of a previous repository or chart version (its owner entry is removed, or the source
        deleted when no other owner is left), and a per-instance ``<release>-source`` of a
        version before shared sources (deleted: it was never owned, only labelled). Costs
        nothing when the cache shows none: the usual case."""
        namespace = ai.namespace or ""
        legacy = f"{ai.release.get('name', '')}-source"
        cached = {resource: self._sources(resource, namespace) for resource in SOURCE_KINDS}
        self._forget_deleted(namespace, cached)
        for resource, objs in cached.items():
            for obj in objs:
                view = ObjectView(obj)
                if view.name == keep:
                    continue
                if ai.uid in owner_uids(obj):
                    await self._leave(ai, resource, obj)
                elif (
                    view.name == legacy
                    and view.labels.get(constants.LABEL_APPLICATION_INSTANCE) == ai.name
                ):
                    await self._delete_once(resource, obj, unchanged=False)

    async def _delete_once(self, resource: ResourceType, obj: JsonObj, *, unchanged: bool) -> None:
        """Delete ``obj`` (``unchanged``: only if it still is at the resourceVersion read, else
        a 409 is ignored), once per cached state. Until the watch reports the deletion the
        cache still shows the object, and the reconciles in between (the instance's own writes
        bring some) would send the same DELETE again: five per instance when 100 instances
        moved to a shared source at once, one with this."""
        view = ObjectView(obj)
        if view.deleting:
            return  # already going: source-controller's finalizer holds it while it cleans up
        memo = (resource.plural, view.key)
        if self._deleted.get(memo) == view.resource_version:
            return
        if unchanged:
            await _delete_if_unchanged(self._client, resource, view)
        else:
            with contextlib.suppress(NotFoundError):
                await self._client.delete(resource, view.key)
        self._deleted[memo] = view.resource_version

    def _forget_deleted(self, namespace: str, cached: dict[ResourceType, list[JsonObj]]) -> None:
        """Drop the memos of the namespace's deletions the cache has seen through."""
        present = {
            (resource.plural, key_of(obj)) for resource, objs in cached.items() for obj in objs
        }
        for memo in [m for m in self._deleted if m[1].namespace == namespace]:
            if memo not in present:
                del self._deleted[memo]

    async def _leave(
        self, ai: ApplicationInstanceView, resource: ResourceType, obj: JsonObj
    ) -> None:
        """Remove ``ai``'s owner entry from a source it no longer uses (by applying an empty
        entry set as its own field manager), or delete the source if ``ai`` was its last owner.
        Deleting carries the uid and resourceVersion seen: an owner added meanwhile makes it a
        409, and the source is looked at again (a fresh read), as the garbage collector does."""
        for attempt in range(3):
            others = owner_uids(obj) - {ai.uid, ""}
            try:
                if others:
                    obj = await self._client.apply(
                        resource, _bare(ObjectView(obj)), field_manager=owner_manager(ai)
                    )
                    self._remember(resource, obj)
                if not owner_uids(obj) - {ai.uid}:
                    await self._delete_once(resource, obj, unchanged=True)
                return
            except NotFoundError:
                return
            except ConflictError:
                if attempt == 2:
                    raise  # the owners keep changing: the next reconcile tries again
                try:
                    obj = await self._client.get(resource, key_of(obj))
                except NotFoundError:
                    return

    def helm_release(self, ai: ApplicationInstanceView) -> JsonObj | None:
        return self._helm_releases(ObjectKey(ai.namespace, ai.release.get("name", "")))

    async def observe(self, request: InstanceRequest) -> Observation:
        ai = request.instance
        found = rollup(self.helm_release(ai))
        ref = EngineRef("HelmRelease", ai.release.get("name", ""), ai.namespace or "")
        return attrs.evolve(found, ref=ref)

    async def instance_status(
        self, ai: ApplicationInstanceView, seen: Observation
    ) -> InstanceStatus:
        ref = seen.ref
        fields: JsonObj = {
            "helmReleaseRef": {"name": ref.name, "namespace": ref.namespace} if ref else None,
            "lastAppliedChart": dict(ai.spec["chart"]),
            "endpoints": None,
        }
        # The HelmRelease informer brings the instance back when the release moves.
        return InstanceStatus(conditions=instance_conditions(seen), fields=fields)

    def instance_failure(self, ai: ApplicationInstanceView, message: str) -> InstanceStatus:
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

    async def cancel(self, request: InstanceRequest) -> None:
        """Delete the HelmRelease. The shared source stays for its other owners; the garbage
        collector deletes it once the last owner is gone. A source that lists no owner at all
        (the operator stopped between creating it and adding the instance's entry) would never
        be collected: it is deleted here if nobody was added since. A per-instance
        ``<release>-source`` of an older version is deleted too."""
        ai = request.instance
        name = ai.release.get("name")
        if not name:
            return
        with contextlib.suppress(NotFoundError):
            await self._client.delete(HELM_RELEASES, ObjectKey(ai.namespace, name))
        keep = ""
        with contextlib.suppress(EngineError, KeyError, TypeError):  # a chart that made no source
            resource, source = desired_source(ai)
            keep = key_of(source).name
        if keep:
            live = self._cached_source(resource, key_of(source))
            if live is not None and not owner_uids(live):
                await self._delete_once(resource, live, unchanged=True)
        await self._leave_other_sources(ai, keep=keep)


def _bare(obj: ObjectView) -> JsonObj:
    """An apply body that names ``obj`` (uid included, as a precondition) and sets nothing."""
    return {
        "apiVersion": obj.api_version,
        "kind": obj.kind,
        "metadata": {"name": obj.name, "namespace": obj.namespace, "uid": obj.uid},
    }


async def _delete_if_unchanged(client: KubeApi, resource: ResourceType, obj: ObjectView) -> None:
    """Delete ``obj`` unless it changed since it was read (409: e.g. an owner was added)."""
    options = {
        "kind": "DeleteOptions",
        "apiVersion": "v1",
        "propagationPolicy": "Background",
        "preconditions": {"uid": obj.uid, "resourceVersion": obj.resource_version},
    }
    with contextlib.suppress(NotFoundError, ConflictError):
        await client.request("DELETE", resource.path(obj.key), body=options)


# -- what the registry learns (engines/descriptor.py) ---------------------------------------------


def claims(ai: ApplicationInstanceView) -> bool:
    """Flux renders every managed instance but the native SeaweedFS one (engines/seaweed.py)."""
    return ai.catalog_id != constants.SEAWEED_CATALOG_ID


def source_users(obj: JsonObj, instances: Instances) -> list[ObjectKey]:
    """The instances using a chart source: its ApplicationInstance owners (shared sources),
    or the instance of its label (a per-instance source of an older version)."""
    view = ObjectView(obj)
    owners = [
        ObjectKey(view.namespace, ref.name)
        for ref in view.owner_references
        if ref.kind == "ApplicationInstance" and ref.name
    ]
    if owners:
        return owners
    name = view.labels.get(constants.LABEL_APPLICATION_INSTANCE)
    return [ObjectKey(view.namespace, name)] if name else []


def source_drifted(previous: JsonObj, current: JsonObj) -> bool:
    """A chart source's update is worth waking its users only when what they apply (spec,
    labels, annotations) changed or it is being deleted; not for its status (the instance
    reads the HelmRelease's), nor when only its owner list changed (every user of a source
    would be reconciled each time one joins or leaves)."""
    before, after = previous.get("metadata") or {}, current.get("metadata") or {}
    return previous.get("spec") != current.get("spec") or any(
        before.get(field) != after.get(field)
        for field in ("labels", "annotations", "deletionTimestamp")
    )


HELM_RELEASES_CRDS = (
    "helm.toolkit.fluxcd.io/v2/HelmRelease",
    "source.toolkit.fluxcd.io/v1/HelmRepository",
    "source.toolkit.fluxcd.io/v1/OCIRepository",
)
MISSING = (
    "the Flux CRDs (helm.toolkit.fluxcd.io/v2 HelmRelease, source.toolkit.fluxcd.io/v1 "
    "HelmRepository and OCIRepository) are not installed"
)
# Only objects we made: HelmReleases carry the instance label and are owned by it.
HELM_RELEASE_WATCH = Watch(
    HELM_RELEASES, label_selector=constants.LABEL_APPLICATION_INSTANCE, wakes=owner_instance
)
# Shared chart sources belong to no single instance: they carry only the managed-by label, as
# did the per-instance sources of older versions (found for migration).
SOURCE_WATCHES = tuple(
    Watch(
        r, label_selector=constants.LABEL_MANAGED_BY, wakes=source_users, on_update=source_drifted
    )
    for r in SOURCE_KINDS
)


def _build(context: EngineContext) -> FluxEngine:
    releases = context.informer(HELM_RELEASE_WATCH)
    sources = {w.resource: context.informer(w) for w in SOURCE_WATCHES}
    caches = {HELM_RELEASES: releases, **sources}
    return FluxEngine(
        context.client,
        helm_releases=releases.store.get,
        sources=lambda resource, ns: sources[resource].store.by_index(INDEX_NAMESPACE, ns),
        remember=lambda resource, obj: caches[resource].record_write(obj),
        service_account=context.settings.flux_service_account,
    )


DESCRIPTOR = InstanceEngineDescriptor(
    name=FluxEngine.name,
    requires=HELM_RELEASES_CRDS,
    missing=MISSING,
    watches=(HELM_RELEASE_WATCH, *SOURCE_WATCHES),
    build=_build,
    claims=claims,
)
