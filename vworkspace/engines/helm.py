"""The Helm engine for Upgrade Operations: change the instance, then wait for Flux to roll it out.

The Go engine patched the HelmRelease directly, so the next ApplicationInstance reconcile wrote
the old version back, and it reported Running forever. Here the Upgrade changes the *target
ApplicationInstance* (``spec.chart.version`` and, for inline values, a shallow merge of
``valuesPatch``), which is the desired state the instance reconciler renders into the HelmRelease;
the Operation then succeeds once the instance's ``lastAppliedChart`` carries the new version and
the HelmRelease is Ready at its current generation. A stalled or failed release, or the deadline
(``parameters.timeoutSeconds``, default 15 min after start), fails it with the reason.
"""

from __future__ import annotations

from collections.abc import Callable

from vworkspace.api.applicationinstance import ApplicationInstanceView
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.api.operation import OperationView
from vworkspace.engines.base import EngineError, EngineRef, Observation, OperationRequest, State
from vworkspace.engines.descriptor import EngineContext, OperationEngineDescriptor
from vworkspace.engines.flux import HELM_RELEASE_WATCH, HELM_RELEASES_CRDS, MISSING, rollup
from vworkspace.kube.clock import Clock
from vworkspace.kube.rest.api import KubeApi
from vworkspace.kube.rest.resources import APPLICATION_INSTANCES

DEFAULT_DEADLINE = 900.0
FIELD_MANAGER = "vworkspace-operator-upgrade"


class HelmUpgradeEngine:
    name = "helm"

    def __init__(
        self,
        client: KubeApi,
        *,
        helm_releases: Callable[[ObjectKey], JsonObj | None],
        clock: Clock,
    ) -> None:
        self._client = client
        self._helm_releases = helm_releases
        self._clock = clock

    def approval_required(self, op: OperationView) -> bool:
        return False  # only when the Operation asks (spec.approvals.required)

    def runs_without_target(self, op: OperationView) -> bool:
        return False  # the upgrade is a change of the target

    def _expected_version(self, op: OperationView, target: ApplicationInstanceView) -> str:
        return str(op.parameters.get("targetVersion") or target.chart.get("version", ""))

    async def materialize(self, request: OperationRequest) -> EngineRef:
        op, target = request.operation, request.target
        if target is None:
            raise EngineError("the target ApplicationInstance does not exist")
        release = target.release
        if not release or target.placeholder:
            raise EngineError("an Upgrade needs a managed ApplicationInstance with spec.release")
        params = op.parameters
        version, values_patch = params.get("targetVersion"), params.get("valuesPatch")
        if not version and not values_patch:
            raise EngineError("spec.parameters needs targetVersion or valuesPatch")
        patch: JsonObj = {"spec": {}}
        if version:
            patch["spec"]["chart"] = {"version": str(version)}
        if values_patch:
            if not isinstance(values_patch, dict):
                raise EngineError("spec.parameters.valuesPatch must be an object")
            values = target.values
            if values.get("source") != "inline":
                raise EngineError(
                    "spec.parameters.valuesPatch needs the target's values.source to be inline"
                )
            patch["spec"]["values"] = {"inline": {**(values.get("inline") or {}), **values_patch}}
        key = target.key
        await self._client.merge_patch(
            APPLICATION_INSTANCES, key, patch, field_manager=FIELD_MANAGER
        )
        return EngineRef("helm", release["name"], key.namespace or "")

    async def observe(self, request: OperationRequest) -> Observation:
        op, target = request.operation, request.target
        if target is None:
            # The upgrade lives in the instance: without it there is nothing to wait for.
            raise EngineError("the target ApplicationInstance was deleted during the Upgrade")
        expected = self._expected_version(op, target)
        applied = (target.status.get("lastAppliedChart") or {}).get("version")
        release = str(target.release.get("name", ""))
        namespace = target.namespace or ""
        ref = EngineRef("helm", release, namespace)
        state = rollup(self._helm_releases(ObjectKey(namespace, release)))
        if applied == expected and state.state == State.SUCCEEDED:
            return Observation(
                State.SUCCEEDED,
                "EngineCompleted",
                f"HelmRelease {release} is Ready at {expected}",
                ref=ref,
            )
        if applied == expected and state.failed:
            return Observation(
                State.FAILED, "EngineFailed", f"{state.reason}: {state.message}", ref=ref
            )
        started = op.started_at
        deadline = float(op.parameters.get("timeoutSeconds") or DEFAULT_DEADLINE)
        if started is not None and (self._clock.now() - started).total_seconds() > deadline:
            return Observation(
                State.FAILED,
                "EngineFailed",
                f"not Ready at {expected} within {deadline:.0f}s "
                f"(last: {state.reason}: {state.message})",
                ref=ref,
            )
        return Observation(
            State.RUNNING,
            "EngineStarted",
            f"waiting for {release} at {expected}: {state.reason}",
            ref=ref,
        )

    async def cancel(self, request: OperationRequest) -> None:
        """Nothing to delete: the instance keeps whatever version it was given."""


def _build(context: EngineContext) -> HelmUpgradeEngine:
    helm_releases = context.informer(HELM_RELEASE_WATCH)
    return HelmUpgradeEngine(
        context.client, helm_releases=helm_releases.store.get, clock=context.clock
    )


# The Upgrade reads the HelmRelease the Flux engine renders (the same informer); the Operation
# is polled, so the HelmRelease's events need not wake it.
DESCRIPTOR = OperationEngineDescriptor(
    name=HelmUpgradeEngine.name,
    requires=HELM_RELEASES_CRDS,
    missing=MISSING,
    watches=(HELM_RELEASE_WATCH,),
    build=_build,
)
