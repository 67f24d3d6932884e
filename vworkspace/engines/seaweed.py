"""The Seaweed engine: a native SeaweedFS instance becomes a ``seaweed.seaweedfs.com/v1``
``Seaweed`` CR named after the release (docs/api.md, "Native SeaweedFS").

* ``materialize``: a legacy HelmRelease of the same name blocks (``HelmMigrationRequired``; the
  HelmRelease informer and a 30 s requeue notice its removal, unlike Go); else the CR is read and
  created, or replaced when its labels, owner or spec differ (get / create / update, as Go).
* ``observe``: the CR's status (informer cache) rolled up as an :class:`Observation`; the S3
  endpoint once Seaweed is Ready with an S3 gateway and the ``<release>-s3`` Service exists.
* ``instance_status``: the conditions of the roll-up table, ``status.endpoints``, and the
  managed-storage supplements (s3credentials.py) once the instance is Ready.
* ``cancel``: deletes the CR and any legacy HelmRelease; :class:`StillPresentError` while either
  is still there. A kind that is not served (CRD removed) counts as gone: deletion never loops.

Trade-off: the Service and the credential Secrets are read with a GET per reconcile rather than
watched (no cluster-wide Secret cache); while the endpoint or credentials are pending the
instance is requeued every 30 s instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from vworkspace.api.applicationinstance import ApplicationInstanceView
from vworkspace.api.applicationinstance import ConditionType as Cond
from vworkspace.api.applicationinstance import Reason as Why
from vworkspace.api.constants import (
    ANNOTATION_REPORTED_MANAGED_STORAGE_FAILED,
    ANNOTATION_REPORTED_MANAGED_STORAGE_KEY,
    ANNOTATION_REPORTED_SEAWEED_ENDPOINTS,
    LABEL_APPLICATION_INSTANCE,
    SEAWEED_CATALOG_ID,
)
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.api.view import ObjectView
from vworkspace.engines import s3credentials as s3
from vworkspace.engines.base import (
    ConditionView,
    EngineBlockedError,
    EngineError,
    EngineRef,
    InstanceRequest,
    InstanceStatus,
    Observation,
    State,
    StillPresentError,
    Supplement,
)
from vworkspace.engines.descriptor import (
    EngineContext,
    InstanceEngineDescriptor,
    Instances,
    Watch,
    owner_instance,
)
from vworkspace.engines.flux import HELM_RELEASES
from vworkspace.engines.seaweedvalues import check_release, desired_seaweed, load_values, normalize
from vworkspace.kube.cache.store import INDEX_NAMESPACE
from vworkspace.kube.clock import Clock
from vworkspace.kube.rest.api import KubeApi
from vworkspace.kube.rest.errors import NotFoundError
from vworkspace.kube.rest.resources import ResourceType

SEAWEEDS = ResourceType("seaweed.seaweedfs.com", "v1", "seaweeds", "Seaweed")
S3_CREDENTIALS = ResourceType("seaweed.seaweedfs.com", "v1", "s3credentials", "S3Credentials")
SERVICES = ResourceType("", "v1", "services", "Service")
FIELD_MANAGER = "vworkspace-operator"
S3_PORT = 8333
RECHECK = 30.0
NO_STATUS = "Seaweed status not yet available"
HEALTHY = "Seaweed cluster is healthy"
LEGACY_MESSAGE = (
    "legacy Helm release detected; remove the HelmRelease manually or recreate the "
    "ApplicationInstance before native Seaweed reconciliation"
)


def has_s3(seaweed: JsonObj) -> bool:
    section = (seaweed.get("spec") or {}).get("s3")
    if not isinstance(section, dict) or not section or section.get("enabled") is False:
        return False
    replicas = section.get("replicas")
    if replicas is None:
        return True
    return isinstance(replicas, int) and not isinstance(replicas, bool) and replicas > 0


def snapshot(seaweed: JsonObj) -> Observation:
    """A Seaweed CR's status as an observation: succeeded = Ready/True; ``stalled`` marks an
    explicit ``Degraded/True``; ``progressing`` a ``Progressing/True``."""
    conditions = (seaweed.get("status") or {}).get("conditions") or []
    if not conditions:
        return Observation(State.RUNNING, "Reconciling", NO_STATUS)
    ready = failed = reconciling = degraded = False
    reason = message = ""
    for cond in conditions:
        kind, status = cond.get("type"), cond.get("status")
        if kind == "Ready" and status == "True":
            ready, reason, message = True, "SeaweedReady", cond.get("message") or ""
        elif kind == "Ready" and status == "False":
            failed, reason, message = True, "SeaweedFailed", cond.get("message") or ""
        elif kind in ("Progressing", "Degraded") and status == "True":
            reconciling = reconciling or kind == "Progressing"
            degraded = degraded or kind == "Degraded"
            if not reason:
                # An empty reason must not reach the status (Go defect 6).
                reason, message = cond.get("reason") or "SeaweedFailed", cond.get("message") or ""
    if ready:
        return Observation(State.SUCCEEDED, reason, message, progressing=reconciling)
    state = State.FAILED if failed or degraded else State.RUNNING
    return Observation(
        state, reason or "Reconciling", message, stalled=degraded, progressing=reconciling
    )


def seaweed_conditions(seen: Observation, *, waiting_for_s3: bool) -> tuple[ConditionView, ...]:
    unblocked = ConditionView(Cond.BLOCKED, "False", Why.UNBLOCKED, "Reconciliation can proceed")
    if seen.ref is None:  # no CR (yet)
        waiting = "Waiting for Seaweed status"
        return (
            unblocked,
            ConditionView(Cond.RECONCILING, "True", Why.RECONCILING, waiting),
            ConditionView(
                Cond.DEGRADED, "False", Why.RECONCILING, "Seaweed status not yet available"
            ),
            ConditionView(Cond.READY, "Unknown", Why.RECONCILING, waiting),
        )
    if seen.progressing:
        reconciling = ConditionView(
            Cond.RECONCILING, "True", seen.reason or "SeaweedReconciling", seen.message
        )
    else:
        reconciling = ConditionView(
            Cond.RECONCILING, "False", Why.STABLE, "No reconciliation in flight"
        )
    if seen.stalled and seen.state != State.SUCCEEDED:
        degraded = ConditionView(Cond.DEGRADED, "True", seen.reason, seen.message)
    else:
        degraded = ConditionView(
            Cond.DEGRADED, "False", Why.RECOVERED, "Seaweed cluster is healthy"
        )
    if seen.state == State.SUCCEEDED and waiting_for_s3:
        ready = ConditionView(
            Cond.READY,
            "Unknown",
            "WaitingForS3Endpoint",
            "Seaweed is ready but S3 endpoint is not yet available",
        )
    elif seen.state == State.SUCCEEDED:
        ready = ConditionView(Cond.READY, "True", "SeaweedReady", seen.message)
    else:
        status = "False" if seen.failed else "Unknown"
        ready = ConditionView(Cond.READY, status, seen.reason or Why.RECONCILING, seen.message)
    return (unblocked, reconciling, degraded, ready)


class SeaweedEngine:
    name = "seaweed"

    def __init__(
        self,
        client: KubeApi,
        *,
        seaweeds: Callable[[ObjectKey], JsonObj | None],
        credentials: Callable[[str], list[JsonObj]],
        clock: Clock,
    ) -> None:
        self._client = client
        self._seaweeds = seaweeds
        self._credentials = credentials
        self._clock = clock

    def claims(self, ai: ApplicationInstanceView) -> bool:
        return claims(ai)

    async def materialize(self, request: InstanceRequest) -> EngineRef:
        ai = request.instance
        name = check_release(ai)
        namespace = ai.namespace or ""
        if await self._legacy_release(namespace, name):
            raise EngineBlockedError("HelmMigrationRequired", LEGACY_MESSAGE)
        desired = desired_seaweed(ai, normalize(await load_values(self._client, ai)))
        key = ObjectKey(namespace, name)
        try:
            current = await self._client.get(SEAWEEDS, key)
        except NotFoundError:
            await self._client.create(SEAWEEDS, desired, field_manager=FIELD_MANAGER)
            return EngineRef("Seaweed", name, namespace)
        meta, wanted = ObjectView(current).metadata, ObjectView(desired).metadata
        if (
            current.get("spec") != desired["spec"]
            or meta.get("labels") != wanted["labels"]
            or meta.get("ownerReferences") != wanted["ownerReferences"]
        ):
            meta = {
                **meta,
                "labels": wanted["labels"],
                "ownerReferences": wanted["ownerReferences"],
            }
            await self._client.replace(
                SEAWEEDS,
                {**current, "metadata": meta, "spec": desired["spec"]},
                field_manager=FIELD_MANAGER,
            )
        return EngineRef("Seaweed", name, namespace)

    async def _legacy_release(self, namespace: str, name: str) -> bool:
        """Is there a HelmRelease of the release's name? (Not served: no.)"""
        try:
            await self._client.get(HELM_RELEASES, ObjectKey(namespace, name))
        except NotFoundError:
            return False
        return True

    async def observe(self, request: InstanceRequest) -> Observation:
        ai = request.instance
        namespace = ai.namespace or ""
        name = check_release(ai)
        seaweed = self._seaweeds(ObjectKey(namespace, name))
        if seaweed is None:
            return Observation(
                State.RUNNING, "Reconciling", "Waiting for Seaweed status", progressing=True
            )
        seen = snapshot(seaweed)
        outputs: dict[str, str] = {}
        if seen.state == State.SUCCEEDED and has_s3(seaweed):
            outputs["s3.expected"] = "true"
            if await self._service_exists(namespace, f"{name}-s3"):
                outputs["s3"] = f"http://{name}-s3.{namespace}.svc:{S3_PORT}"
        return Observation(
            seen.state,
            seen.reason,
            seen.message,
            outputs,
            seen.stalled,
            seen.progressing,
            EngineRef("Seaweed", name, namespace),
        )

    async def _service_exists(self, namespace: str, name: str) -> bool:
        try:
            await self._client.get(SERVICES, ObjectKey(namespace, name))
        except NotFoundError:
            return False
        return True

    async def instance_status(
        self, ai: ApplicationInstanceView, seen: Observation
    ) -> InstanceStatus:
        endpoints: list[JsonObj] = []
        if "s3" in seen.outputs:
            endpoints.append(
                {
                    "name": "s3",
                    "url": seen.outputs["s3"],
                    "type": "s3",
                    "notes": f"In-cluster SeaweedFS S3 gateway (port {S3_PORT})",
                }
            )
        waiting = "s3.expected" in seen.outputs and not endpoints
        conditions = seaweed_conditions(seen, waiting_for_s3=waiting)
        fields: JsonObj = {
            "endpoints": endpoints or None,
            "helmReleaseRef": None,
            "lastAppliedChart": None,
        }
        ready = any(c.type == Cond.READY and c.status == "True" for c in conditions)
        if not ready:
            return InstanceStatus(conditions, fields, requeue_after=RECHECK)
        # The supplements describe the instance as it will be stored (Ready=True).
        supplements, requeue = await self._supplements(ai, conditions, endpoints)
        return InstanceStatus(conditions, fields, supplements, requeue)

    async def _supplements(
        self,
        ai: ApplicationInstanceView,
        conditions: tuple[ConditionView, ...],
        endpoints: list[JsonObj],
    ) -> tuple[tuple[Supplement, ...], float | None]:
        now = self._clock.now()
        stored = ApplicationInstanceView(
            {
                **ai.raw,
                "status": {
                    **ai.status,
                    "conditions": [
                        c for c in ai.status.get("conditions") or [] if c.get("type") != "Ready"
                    ]
                    + [_ready_wire(ai, conditions)],
                },
            }
        )
        found: list[Supplement] = []
        if endpoints:
            found.append(
                Supplement(
                    ANNOTATION_REPORTED_SEAWEED_ENDPOINTS,
                    s3.endpoints_key(endpoints),
                    s3.endpoints_event(stored, endpoints, now=now),
                )
            )
        namespace = ai.namespace or ""
        release = check_release(ai)
        creds = await s3.resolve(
            self._client, self._credentials, namespace=namespace, release=release
        )
        if creds.outcome == s3.Outcome.PENDING:
            return tuple(found), RECHECK
        if creds.outcome == s3.Outcome.FAILED:
            found.append(
                Supplement(
                    ANNOTATION_REPORTED_MANAGED_STORAGE_FAILED,
                    creds.episode,
                    s3.failed_event(stored, creds.episode, now=now),
                )
            )
            return tuple(found), None
        # Not failed (any more): a later failure is a new report.
        found.append(Supplement(ANNOTATION_REPORTED_MANAGED_STORAGE_FAILED, ""))
        if creds.outcome == s3.Outcome.READY:
            found.append(
                Supplement(
                    ANNOTATION_REPORTED_MANAGED_STORAGE_KEY,
                    s3.report_key(creds),
                    s3.managed_storage_event(stored, endpoints, creds, now=now),
                )
            )
        return tuple(found), None

    def instance_failure(self, ai: ApplicationInstanceView, message: str) -> InstanceStatus:
        return InstanceStatus(
            conditions=(
                ConditionView(Cond.READY, "False", "SeaweedFailed", message),
                ConditionView(Cond.RECONCILING, "False", "SeaweedFailed", message),
                ConditionView(Cond.DEGRADED, "True", "SeaweedFailed", message),
                ConditionView(Cond.BLOCKED, "False", Why.UNBLOCKED, "Reconciliation can proceed"),
            ),
            fields={"endpoints": None, "helmReleaseRef": None},
            requeue_after=RECHECK,
        )

    async def cancel(self, request: InstanceRequest) -> None:
        ai = request.instance
        try:
            name = check_release(ai)
        except EngineError:
            return  # an invalid release never made anything (Go defect 7: no endless loop)
        key = ObjectKey(ai.namespace, name)
        remaining = []
        for resource in (SEAWEEDS, HELM_RELEASES):
            with contextlib.suppress(NotFoundError):  # absent, or the kind is not served
                await self._client.delete(resource, key)
                remaining.append(resource.kind)
        still = [
            kind
            for kind, res in (("Seaweed", SEAWEEDS), ("HelmRelease", HELM_RELEASES))
            if kind in remaining and await self._exists(res, key)
        ]
        if still:
            raise StillPresentError(f"waiting for {', '.join(still)} {name!r} to be deleted")

    async def _exists(self, resource: ResourceType, key: ObjectKey) -> bool:
        try:
            await self._client.get(resource, key)
        except NotFoundError:
            return False
        return True


def _ready_wire(ai: ApplicationInstanceView, conditions: tuple[ConditionView, ...]) -> JsonObj:
    """The Ready condition as it is (or is about to be) stored."""
    new = next(c for c in conditions if c.type == Cond.READY)
    for cond in ai.status.get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("status") == new.status:
            return {**cond, "reason": new.reason, "message": new.message}
    return {
        "type": "Ready",
        "status": new.status,
        "reason": new.reason,
        "message": new.message,
        "observedGeneration": ai.metadata.get("generation"),
    }


# -- what the registry learns (engines/descriptor.py) ---------------------------------------------


def claims(ai: ApplicationInstanceView) -> bool:
    """The ``seaweedfs`` catalog entry is the native SeaweedFS offering (docs/api.md)."""
    return ai.catalog_id == SEAWEED_CATALOG_ID


def credentials_users(cred: JsonObj, instances: Instances) -> list[ObjectKey]:
    """Which ApplicationInstances an ``S3Credentials`` change concerns (docs/api.md, "Native
    SeaweedFS"): the ``seaweedfs`` instances in the credential's namespace whose release is the
    credential's ``spec.seaweedRef.name`` (and whose release namespace is the credential's)."""
    view = ObjectView(cred)
    namespace = view.namespace or ""
    release = (view.spec.get("seaweedRef") or {}).get("name")
    return [
        ai.key
        for ai in instances(namespace)
        if claims(ai)
        and ai.release.get("name") == release
        and ai.release.get("namespace") == namespace
    ]


# Our Seaweed CRs (labelled, owned by their instance) and every S3Credentials (made by others,
# unlabelled: the SeaweedFS operator's, for the users our instances asked for).
SEAWEED_WATCH = Watch(SEAWEEDS, label_selector=LABEL_APPLICATION_INSTANCE, wakes=owner_instance)
CREDENTIALS_WATCH = Watch(S3_CREDENTIALS, wakes=credentials_users)


def _build(context: EngineContext) -> SeaweedEngine:
    seaweeds = context.informer(SEAWEED_WATCH)
    credentials = context.informer(CREDENTIALS_WATCH)
    return SeaweedEngine(
        context.client,
        seaweeds=seaweeds.store.get,
        credentials=lambda ns: credentials.store.by_index(INDEX_NAMESPACE, ns),
        clock=context.clock,
    )


DESCRIPTOR = InstanceEngineDescriptor(
    name=SeaweedEngine.name,
    requires=("seaweed.seaweedfs.com/v1/Seaweed", "seaweed.seaweedfs.com/v1/S3Credentials"),
    missing=(
        "the SeaweedFS CRDs (seaweed.seaweedfs.com/v1 Seaweed and S3Credentials) are not installed"
    ),
    watches=(SEAWEED_WATCH, CREDENTIALS_WATCH),
    build=_build,
    claims=claims,
)
