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

import datetime
from collections.abc import Callable

from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.engines.base import EngineError, EngineRef, EngineRequest, Observation, State
from vworkspace.engines.flux import rollup
from vworkspace.kube.clock import Clock
from vworkspace.kube.rest.client import KubeClient
from vworkspace.kube.rest.resources import APPLICATION_INSTANCES

DEFAULT_DEADLINE = 900.0
FIELD_MANAGER = "vworkspace-operator-upgrade"


def _params(op: JsonObj) -> JsonObj:
    params = (op.get("spec") or {}).get("parameters")
    return params if isinstance(params, dict) else {}


class HelmUpgradeEngine:
    name = "helm"

    def __init__(
        self,
        client: KubeClient,
        *,
        helm_releases: Callable[[ObjectKey], JsonObj | None],
        clock: Clock,
    ) -> None:
        self._client = client
        self._helm_releases = helm_releases
        self._clock = clock

    def _expected_version(self, op: JsonObj, target: JsonObj) -> str:
        return str(
            _params(op).get("targetVersion")
            or ((target.get("spec") or {}).get("chart") or {}).get("version", "")
        )

    async def materialize(self, request: EngineRequest) -> EngineRef:
        op, target = request.operation, request.target
        assert op is not None
        if target is None:
            raise EngineError("the target ApplicationInstance does not exist")
        spec = target.get("spec") or {}
        release = spec.get("release")
        if not release or spec.get("mode") == "placeholder":
            raise EngineError("an Upgrade needs a managed ApplicationInstance with spec.release")
        params = _params(op)
        version, values_patch = params.get("targetVersion"), params.get("valuesPatch")
        if not version and not values_patch:
            raise EngineError("spec.parameters needs targetVersion or valuesPatch")
        patch: JsonObj = {"spec": {}}
        if version:
            patch["spec"]["chart"] = {"version": str(version)}
        if values_patch:
            if not isinstance(values_patch, dict):
                raise EngineError("spec.parameters.valuesPatch must be an object")
            values = spec.get("values") or {}
            if values.get("source") != "inline":
                raise EngineError(
                    "spec.parameters.valuesPatch needs the target's values.source to be inline"
                )
            patch["spec"]["values"] = {"inline": {**(values.get("inline") or {}), **values_patch}}
        key = ObjectKey(target["metadata"]["namespace"], target["metadata"]["name"])
        await self._client.merge_patch(
            APPLICATION_INSTANCES, key, patch, field_manager=FIELD_MANAGER
        )
        return EngineRef("helm", release["name"], key.namespace or "")

    async def observe(self, request: EngineRequest) -> Observation:
        op, target = request.operation, request.target
        assert op is not None
        if target is None:
            # The upgrade lives in the instance: without it there is nothing to wait for.
            raise EngineError("the target ApplicationInstance was deleted during the Upgrade")
        expected = self._expected_version(op, target)
        applied = ((target.get("status") or {}).get("lastAppliedChart") or {}).get("version")
        release = ((target.get("spec") or {}).get("release") or {}).get("name", "")
        ref = EngineRef("helm", release, target["metadata"]["namespace"])
        state = rollup(self._helm_releases(ObjectKey(target["metadata"]["namespace"], release)))
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
        started = (op.get("status") or {}).get("startedAt")
        deadline = float(_params(op).get("timeoutSeconds") or DEFAULT_DEADLINE)
        if started:
            began = datetime.datetime.fromisoformat(started)
            if (self._clock.now() - began).total_seconds() > deadline:
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

    async def cancel(self, request: EngineRequest) -> None:
        """Nothing to delete: the instance keeps whatever version it was given."""
