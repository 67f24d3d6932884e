"""The HelmRelease roll-up (engines/flux.py ``rollup``, ``instance_conditions``) on the statuses
the real helm-controller v1.4.5 wrote in tests/real (test_flux.py, test_flux_failures.py): what
it writes while the chart is fetched, when an install or upgrade fails and Flux gives up, and
after the fix. docs/api.md, "HelmRelease status roll-up"."""

from __future__ import annotations

import datetime
from typing import cast

from vworkspace.api.applicationinstance import ApplicationInstanceView
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.operation import OperationView
from vworkspace.engines.base import Observation, OperationRequest, State
from vworkspace.engines.flux import instance_conditions, rollup
from vworkspace.engines.helm import HelmUpgradeEngine
from vworkspace.kube.clock import FakeClock
from vworkspace.kube.rest.api import KubeApi
from vworkspace.testing.objects import managed_instance, operation

T = "2026-12-07T11:45:35Z"
# Helm's messages as helm-controller wrote them (namespace shortened).
HOOK_FAILED = (
    "Helm install failed for release ns/hooked with chart demo-app-failing-hook@0.1.0: failed "
    "post-install: warning: Hook post-install demo-app-failing-hook/templates/"
    'post-install-hook.yaml failed: 1 error occurred:\n\t* ConfigMap "Broken_Hook" is invalid: '
    'metadata.name: Invalid value: "Broken_Hook": a lowercase RFC 1123 subdomain must consist '
    "of lower case alphanumeric characters"
)
UPGRADE_FAILED = (
    "Helm upgrade failed for release ns/shop with chart demo-app@0.2.0: cannot patch "
    '"shop-demo-app" with kind Deployment: json: cannot unmarshal string into Go struct field '
    "DeploymentSpec.spec.replicas of type int32"
)


def cond(type_: str, status: str, reason: str, message: str = "", *, gen: int = 1) -> JsonObj:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": gen,
        "lastTransitionTime": T,
    }


def helm_release(*conditions: JsonObj, generation: int = 1, observed: int | None = 1) -> JsonObj:
    status: JsonObj = {"conditions": list(conditions)}
    if observed is not None:
        status["observedGeneration"] = observed
    return {"metadata": {"name": "shop", "generation": generation}, "status": status}


def view(seen: Observation) -> dict[str, tuple[str, str, str]]:
    return {c.type: (c.status, c.reason, c.message) for c in instance_conditions(seen)}


def test_fetching_the_chart_is_in_progress_not_a_failure() -> None:
    # The first statuses of every operator-made HelmRelease (the shared source is not fetched
    # yet): with Reconciling, and once without it; neither is a failure.
    fetching = helm_release(
        cond("Reconciling", "True", "Progressing", "Fulfilling prerequisites"),
        cond("Ready", "False", "SourceNotReady", "HelmChart 'ns/ns-shop' is not ready"),
        observed=None,
    )
    waiting = helm_release(
        cond("Ready", "False", "SourceNotReady", "HelmChart 'ns/ns-shop' is not ready")
    )
    for hr in (fetching, waiting):
        seen = rollup(hr)
        assert (seen.state, seen.progressing) == (State.RUNNING, True), seen
        assert view(seen)["Ready"][0] == "Unknown"
        assert view(seen)["Degraded"][:2] == ("False", "Recovered")


def test_a_failed_install_carries_helm_controllers_reason_and_helms_message() -> None:
    # As written: Ready and Released False/InstallFailed, then (same write or the next)
    # Stalled=True/RetriesExceeded, all at the current generation.
    failed = [
        cond("Ready", "False", "InstallFailed", HOOK_FAILED),
        cond("Released", "False", "InstallFailed", HOOK_FAILED),
    ]
    stalled = cond("Stalled", "True", "RetriesExceeded", "Failed to install after 1 attempt(s)")
    before = rollup(helm_release(*failed))
    after = rollup(helm_release(stalled, *failed))
    assert (before.state, before.reason, before.stalled) == (State.FAILED, "InstallFailed", False)
    assert (after.state, after.reason, after.stalled) == (State.FAILED, "InstallFailed", True)
    assert after.message == HOOK_FAILED
    ready, degraded = view(after)["Ready"], view(after)["Degraded"]
    assert ready == ("False", "HelmReleaseFailed", f"InstallFailed: {HOOK_FAILED}")
    assert degraded == ("True", "Stalled", f"InstallFailed: {HOOK_FAILED}")
    assert view(after)["Reconciling"][:2] == ("False", "Stable")
    # The instance's Ready is the same before and after Flux gives up: no second transition.
    assert view(before)["Ready"] == ready
    assert view(before)["Degraded"][:2] == ("True", "HelmReleaseDegraded")


def test_stalled_lends_its_own_reason_only_when_ready_tells_no_failure() -> None:
    stalled = cond("Stalled", "True", "RetriesExceeded", "Failed to install after 1 attempt(s)")
    for ready in (
        cond("Ready", "Unknown", "Progressing", "Running 'install' action"),
        cond("Ready", "False", "InstallFailed", HOOK_FAILED, gen=0),  # an older generation
    ):
        seen = rollup(helm_release(stalled, ready))
        assert (seen.state, seen.reason, seen.stalled) == (
            State.FAILED,
            "RetriesExceeded",
            True,
        ), ready
        assert seen.message == "Failed to install after 1 attempt(s)"


def test_a_fixed_value_is_in_progress_again_not_still_failed() -> None:
    # The instance's values were fixed (generation 2): the failure of generation 1 stays in the
    # status until helm-controller gets to it, and no longer counts.
    hr = helm_release(
        cond("Stalled", "True", "RetriesExceeded", "Failed to install after 1 attempt(s)"),
        cond("Ready", "False", "InstallFailed", HOOK_FAILED),
        cond("Released", "False", "InstallFailed", HOOK_FAILED),
        generation=2,
    )
    assert rollup(hr).state == State.RUNNING
    recovered = helm_release(
        cond("Ready", "True", "UpgradeSucceeded", "Helm upgrade succeeded", gen=2),
        cond("Released", "True", "UpgradeSucceeded", "Helm upgrade succeeded", gen=2),
        generation=2,
        observed=2,
    )
    assert rollup(recovered).state == State.SUCCEEDED
    assert view(rollup(recovered))["Degraded"][:2] == ("False", "Recovered")


async def test_a_failed_upgrade_fails_the_operation_with_upgrade_failed() -> None:
    hr = helm_release(
        cond("Stalled", "True", "RetriesExceeded", "Failed to upgrade after 1 attempt(s)", gen=2),
        cond("Ready", "False", "UpgradeFailed", UPGRADE_FAILED, gen=2),
        cond("Released", "False", "UpgradeFailed", UPGRADE_FAILED, gen=2),
        generation=2,
        observed=2,
    )
    target = managed_instance("shop", "ns", version="0.2.0")
    target["status"] = {"lastAppliedChart": {**target["spec"]["chart"]}}
    op = operation(
        "up", "ns", type_="Upgrade", parameters={"targetVersion": "0.2.0"}, target="shop"
    )
    op["status"] = {"startedAt": datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC).isoformat()}
    engine = HelmUpgradeEngine(
        cast(KubeApi, object()), helm_releases=lambda _key: hr, clock=FakeClock(0)
    )
    request = OperationRequest(OperationView(op), ApplicationInstanceView(target))
    seen = await engine.observe(request)
    assert (seen.state, seen.reason) == (State.FAILED, "EngineFailed")
    assert seen.message == f"UpgradeFailed: {UPGRADE_FAILED}"
