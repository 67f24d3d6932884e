"""Failures through the real helm-controller: what it writes when a chart cannot be installed or
upgraded, and what the operator makes of it (docs/api.md, "HelmRelease status roll-up").

Every HelmRelease here is the operator's own (``real_operator``, under the shipped identity),
with its defaults: no ``install``/``upgrade`` remediation, so helm-controller tries once, writes
``Ready=False`` with its own reason (``InstallFailed``, ``UpgradeFailed``) and Helm's message,
and then ``Stalled=True/RetriesExceeded``. The instance must carry helm-controller's reason and
Helm's message, not ``RetriesExceeded``; an Upgrade Operation likewise. Each test prints the
condition sequences it saw as ``flux-conditions:`` lines (run with ``-s``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.integration.operator_process import OperatorProcess
from tests.real.test_flux import (
    ConditionLog,
    condition,
    instance_ready,
    latest_release,
    report,
    start_upgrade,
    watch_until,
)
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.engines.flux import HELM_RELEASES
from vworkspace.kube.rest.client import KubeClient
from vworkspace.kube.rest.resources import APPLICATION_INSTANCES, OPERATIONS
from vworkspace.testing import ControlPlane
from vworkspace.testing.chartrepo import DEMO_CHART, FAILING_HOOK_CHART, ChartRepository
from vworkspace.testing.flux import Flux
from vworkspace.testing.kwok import KwokNodes
from vworkspace.testing.objects import managed_instance


@pytest.fixture
async def kube(control_plane: ControlPlane) -> AsyncIterator[KubeClient]:
    """An admin client (test_flux.py's fixture of the same name: a fixture imported from
    another test module would shadow every parameter named after it, F811)."""
    client = await KubeClient.from_kubeconfig(str(control_plane.kubeconfig_path))
    yield client
    await client.close()


async def create_instance(
    kube: KubeClient,
    chart_repo: ChartRepository,
    key: ObjectKey,
    *,
    chart: str = DEMO_CHART,
    values: JsonObj,
) -> None:
    instance = managed_instance(
        key.name,
        key.namespace or "",
        values={"source": "inline", "inline": values},
        annotations={"ops.vworkspace.io/upgrade": "helm"},
    )
    instance["spec"]["chart"] = chart_repo.chart("0.1.0", chart)
    await kube.create(APPLICATION_INSTANCES, instance, field_manager="test")


def current(obj: JsonObj) -> bool:
    """The object's status is about its current spec."""
    observed = (obj.get("status") or {}).get("observedGeneration")
    return bool(observed == obj["metadata"]["generation"])


def stalled_at(version: str, *, release: str) -> Any:
    """helm-controller gave up (Stalled) on the current generation, with a failed release of
    ``version`` in its history."""

    def done(obj: JsonObj) -> bool:
        stalled = condition(obj, "Stalled")
        latest = latest_release(obj)
        return (
            stalled.get("status") == "True"
            and stalled.get("observedGeneration") == obj["metadata"]["generation"]
            and (latest.get("status"), latest.get("chartVersion")) == (release, version)
        )

    return done


def instance_failed(obj: JsonObj) -> bool:
    """The instance's final failed state: Ready=False and Degraded=True for a stalled release."""
    ready, degraded = condition(obj, "Ready"), condition(obj, "Degraded")
    return (
        current(obj)
        and (ready.get("status"), ready.get("reason")) == ("False", "HelmReleaseFailed")
        and (degraded.get("status"), degraded.get("reason")) == ("True", "Stalled")
    )


async def fails(
    kube: KubeClient, flux: Flux, key: ObjectKey, *, what: str, version: str = "0.1.0"
) -> tuple[JsonObj, JsonObj]:
    """Wait for the operator's HelmRelease to stall, then the instance to show it; print both
    condition sequences and the instance's final Ready."""
    started = time.monotonic()
    hr_log, ai_log = ConditionLog(), ConditionLog()
    hr = await watch_until(
        kube,
        HELM_RELEASES,
        key,
        stalled_at(version, release="failed"),
        log=hr_log,
        timeout=90,
        flux=flux,
    )
    report(f"the operator's HelmRelease, {what}", hr_log, time.monotonic() - started)
    ai = await watch_until(
        kube, APPLICATION_INSTANCES, key, instance_failed, log=ai_log, timeout=30
    )
    report(f"the ApplicationInstance, {what}", ai_log, time.monotonic() - started)
    show(f"the operator's HelmRelease, {what}", hr, "Ready", "Stalled")
    show(f"the ApplicationInstance, {what}", ai, "Ready", "Degraded")
    return hr, ai


def show(what: str, obj: JsonObj, *types: str) -> None:
    """Print the final conditions ``types`` of ``obj``, generation and message included (on
    one line, cut at 300 characters: Helm's messages span lines and can quote whole objects)."""
    for type_ in types:
        cond = condition(obj, type_)
        message = " ".join(str(cond.get("message", "")).split())
        cut = f"{message[:300]}... ({len(message)} chars)" if len(message) > 300 else message
        print(
            f"flux-conditions: {what}, final {type_}={cond.get('status')}/{cond.get('reason')} "
            f"(observedGeneration {cond.get('observedGeneration')} of "
            f"{obj['metadata']['generation']}): {cut}"
        )


async def test_an_instance_of_a_chart_with_a_failing_hook_fails_with_helm_controllers_reason(
    flux: Flux,
    chart_repo: ChartRepository,
    real_operator: OperatorProcess,
    kwok_nodes: KwokNodes,
    kube: KubeClient,
    kube_namespace: str,
) -> None:
    key = ObjectKey(kube_namespace, "hooked")
    await create_instance(kube, chart_repo, key, chart=FAILING_HOOK_CHART, values={})
    hr, ai = await fails(kube, flux, key, what="a failing post-install hook")
    flux_ready = condition(hr, "Ready")
    assert (flux_ready["status"], flux_ready["reason"]) == ("False", "InstallFailed"), flux_ready
    assert condition(hr, "Stalled")["reason"] == "RetriesExceeded"
    ready = condition(ai, "Ready")
    assert ready["message"].startswith("InstallFailed: "), ready
    assert flux_ready["message"] in ready["message"], ready
    assert "post-install" in ready["message"], ready
    assert "RetriesExceeded" not in ready["message"], ready
    assert condition(ai, "Reconciling")["status"] == "False"


async def test_an_instance_whose_values_render_an_invalid_object_fails_then_recovers(
    flux: Flux,
    chart_repo: ChartRepository,
    real_operator: OperatorProcess,
    kwok_nodes: KwokNodes,
    kube: KubeClient,
    kube_namespace: str,
) -> None:
    key = ObjectKey(kube_namespace, "bad")
    await create_instance(kube, chart_repo, key, values={"replicas": "many"})
    hr, ai = await fails(kube, flux, key, what="replicas: many")
    flux_ready = condition(hr, "Ready")
    assert (flux_ready["status"], flux_ready["reason"]) == ("False", "InstallFailed"), flux_ready
    ready = condition(ai, "Ready")
    assert ready["message"].startswith("InstallFailed: "), ready
    assert "replicas" in ready["message"], ready
    assert "RetriesExceeded" not in ready["message"], ready
    # The fix: a valid value. helm-controller takes the failed release forward (an upgrade of
    # it); the instance is Ready again without anyone touching the HelmRelease.
    await kube.merge_patch(
        APPLICATION_INSTANCES,
        key,
        {"spec": {"values": {"inline": {"replicas": 1}}}},
        field_manager="test",
    )
    hr, ai = await instance_ready(
        kube,
        flux,
        key,
        what="replicas: 1 after many",
        hr_reason="UpgradeSucceeded",
        version="0.1.0",
    )
    assert condition(ai, "Ready")["reason"] == "HelmReleaseReady"
    assert condition(ai, "Degraded")["status"] == "False"
    # Helm marks the failed release superseded once a later one is deployed.
    history = [(h["version"], h["status"]) for h in hr["status"]["history"]]
    assert history == [(2, "deployed"), (1, "superseded")], history


def op_phase(phase: str) -> Any:
    return lambda obj: (obj.get("status") or {}).get("phase") == phase


async def test_an_upgrade_operation_to_an_invalid_value_fails_with_upgrade_failed(
    flux: Flux,
    chart_repo: ChartRepository,
    real_operator: OperatorProcess,
    kwok_nodes: KwokNodes,
    kube: KubeClient,
    kube_namespace: str,
) -> None:
    key = ObjectKey(kube_namespace, "shop")
    await create_instance(kube, chart_repo, key, values={"replicas": 1})
    await instance_ready(
        kube, flux, key, what="install", hr_reason="InstallSucceeded", version="0.1.0"
    )
    started = time.monotonic()
    patch = {"targetVersion": "0.2.0", "valuesPatch": {"replicas": "many"}}
    await start_upgrade(kube, key, "up-bad", patch)
    hr_log, op_log = ConditionLog(), ConditionLog()
    hr = await watch_until(
        kube,
        HELM_RELEASES,
        key,
        stalled_at("0.2.0", release="failed"),
        log=hr_log,
        timeout=90,
        flux=flux,
    )
    report(
        "the operator's HelmRelease, Upgrade to 0.2.0 with replicas: many",
        hr_log,
        time.monotonic() - started,
    )
    op = await watch_until(
        kube,
        OPERATIONS,
        ObjectKey(kube_namespace, "up-bad"),
        op_phase("Failed"),
        log=op_log,
        timeout=30,
    )
    report(
        "the Upgrade Operation, to 0.2.0 with replicas: many", op_log, time.monotonic() - started
    )
    failed = condition(op, "Failed")
    show("the operator's HelmRelease, Upgrade to 0.2.0 with replicas: many", hr, "Ready", "Stalled")
    show("the Upgrade Operation, to 0.2.0 with replicas: many", op, "Failed")
    flux_ready = condition(hr, "Ready")
    assert (flux_ready["status"], flux_ready["reason"]) == ("False", "UpgradeFailed"), flux_ready
    assert (failed["status"], failed["reason"]) == ("True", "EngineFailed"), failed
    assert failed["message"].startswith("UpgradeFailed: "), failed
    assert "replicas" in failed["message"], failed
    assert "RetriesExceeded" not in failed["message"], failed
