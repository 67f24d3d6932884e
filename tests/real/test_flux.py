"""Flux's real source-controller and helm-controller install the project's own chart from the
local chart repository; then the operator's ApplicationInstance goes Ready through them.

No hand-written status here: every condition is what the real controllers wrote. Each test
records the HelmRelease's condition sequence (type=status/reason, in the order they appeared)
and prints it as one ``flux-conditions:`` line (run with ``-s`` to see them), the observed
truth the other tiers' fixtures are checked against.

No simulated nodes run in these tests, so the charts' Deployments have ``replicas: 0``. The
direct HelmReleases set ``install.disableWait``; the operator's HelmRelease waits (as in
production), so those tests also start the workload controllers
(``ControlPlane.start_workload_controllers``), which make a zero-replica Deployment Available
without any Pod.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.integration.operator_process import OperatorProcess
from vworkspace.api.meta import ObjectKey
from vworkspace.engines.flux import HELM_RELEASES, HELM_REPOSITORIES
from vworkspace.kube.client import KubeClient
from vworkspace.kube.errors import NotFoundError
from vworkspace.kube.resources import APPLICATION_INSTANCES, ResourceType
from vworkspace.testing import ControlPlane
from vworkspace.testing.chartrepo import DEMO_CHART, FAILING_HOOK_CHART, ChartRepository
from vworkspace.testing.flux import Flux
from vworkspace.testing.kwok import KwokNodes
from vworkspace.testing.objects import managed_instance

CONFIG_MAPS = ResourceType("", "v1", "configmaps", "ConfigMap")
DEPLOYMENTS = ResourceType("apps", "v1", "deployments", "Deployment")
SERVICES = ResourceType("", "v1", "services", "Service")
JsonObj = dict[str, Any]


@pytest.fixture
async def kube(control_plane: ControlPlane) -> AsyncIterator[KubeClient]:
    client = await KubeClient.from_kubeconfig(str(control_plane.kubeconfig_path))
    yield client
    await client.close()


class ConditionLog:
    """The distinct ``Type=Status/Reason`` states of an object's conditions, in order seen.

    Polled (every 50 ms), so a state that lasted less than that can be missed; the sequence is
    what a client watching the object would have seen at that resolution.
    """

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._last: dict[str, str] = {}

    def record(self, obj: JsonObj) -> None:
        for cond in (obj.get("status") or {}).get("conditions") or []:
            state = f"{cond['type']}={cond['status']}/{cond.get('reason', '')}"
            if self._last.get(cond["type"]) != state:
                self._last[cond["type"]] = state
                self.seen.append(state)


async def watch_until(
    kube: KubeClient,
    resource: ResourceType,
    key: ObjectKey,
    done: Any,
    *,
    log: ConditionLog,
    timeout: float,
    flux: Flux | None = None,
) -> JsonObj:
    """Poll the object, recording its conditions, until ``done(obj)``; fail with the sequence
    seen and the controllers' log tails on timeout."""
    deadline = time.monotonic() + timeout
    obj: JsonObj = {}
    while time.monotonic() < deadline:
        try:
            obj = await kube.get(resource, key)
        except NotFoundError:
            obj = {}
        log.record(obj)
        if obj and done(obj):
            return obj
        await asyncio.sleep(0.05)
    tails = flux.log_tails() if flux is not None else ""
    raise AssertionError(
        f"{resource.kind} {key} not done after {timeout}s; conditions seen {log.seen}; "
        f"status {obj.get('status')}\n{tails}"
    )


def condition(obj: JsonObj, type_: str) -> JsonObj:
    conds = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conds if c["type"] == type_), {})


def ready_is(status: str) -> Any:
    return lambda obj: condition(obj, "Ready").get("status") == status


def latest_release(obj: JsonObj) -> JsonObj:
    """The newest ``status.history`` entry, or {}. Seen here: a poll can find Ready=True before
    helm-controller has written the history (it patches the status more than once)."""
    history = (obj.get("status") or {}).get("history") or []
    return history[0] if history else {}


def report(what: str, log: ConditionLog, seconds: float) -> None:
    print(f"\nflux-conditions: {what} ({seconds:.1f}s): {' -> '.join(log.seen)}")


def helm_repository(namespace: str, url: str) -> JsonObj:
    return {
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "HelmRepository",
        "metadata": {"name": "charts", "namespace": namespace},
        "spec": {"interval": "1m0s", "url": url},
    }


def helm_release(namespace: str, name: str, chart: str, values: JsonObj) -> JsonObj:
    return {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "interval": "5m0s",
            "chart": {
                "spec": {
                    "chart": chart,
                    "version": "0.1.0",
                    "sourceRef": {"kind": "HelmRepository", "name": "charts"},
                }
            },
            # No nodes run Pods here: do not wait for them. No retries: fail at the first error.
            "install": {"disableWait": True, "remediation": {"retries": 0}},
            "values": values,
        },
    }


async def install(
    kube: KubeClient, chart_repo: ChartRepository, namespace: str, release: JsonObj
) -> None:
    await kube.create(
        HELM_REPOSITORIES, helm_repository(namespace, chart_repo.url), field_manager="test"
    )
    await kube.create(HELM_RELEASES, release, field_manager="test")


async def test_a_helm_release_of_demo_app_is_installed_by_the_real_controllers(
    flux: Flux, chart_repo: ChartRepository, kube: KubeClient, kube_namespace: str
) -> None:
    values = {"replicas": 0, "message": "installed by the real helm-controller"}
    started = time.monotonic()
    await install(
        kube, chart_repo, kube_namespace, helm_release(kube_namespace, "demo", DEMO_CHART, values)
    )
    log = ConditionLog()
    hr = await watch_until(
        kube,
        HELM_RELEASES,
        ObjectKey(kube_namespace, "demo"),
        lambda obj: ready_is("True")(obj) and latest_release(obj).get("status") == "deployed",
        log=log,
        timeout=60,
        flux=flux,
    )
    report("HelmRelease demo-app 0.1.0 install", log, time.monotonic() - started)
    assert condition(hr, "Ready")["reason"] == "InstallSucceeded"
    assert hr["status"]["history"][0]["chartVersion"] == "0.1.0"
    assert hr["status"]["history"][0]["status"] == "deployed"
    name = ObjectKey(kube_namespace, "demo-demo-app")
    config = await kube.get(CONFIG_MAPS, name)
    assert config["data"] == {"message": values["message"], "chartVersion": "0.1.0"}
    deployment = await kube.get(DEPLOYMENTS, name)
    assert deployment["spec"]["replicas"] == 0
    assert (
        deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        == "registry.example/demo-app:1.0.0"
    )
    assert (await kube.get(SERVICES, name))["spec"]["ports"][0]["port"] == 80
    # helm-controller labels what it installed with the release's name and namespace.
    assert deployment["metadata"]["labels"]["helm.toolkit.fluxcd.io/name"] == "demo"
    assert chart_repo.index_downloads() >= 1


async def test_a_failing_post_install_hook_ends_with_helm_controllers_own_reason(
    flux: Flux, chart_repo: ChartRepository, kube: KubeClient, kube_namespace: str
) -> None:
    started = time.monotonic()
    await install(
        kube,
        chart_repo,
        kube_namespace,
        helm_release(kube_namespace, "hooked", FAILING_HOOK_CHART, {}),
    )
    log = ConditionLog()
    hr = await watch_until(
        kube,
        HELM_RELEASES,
        ObjectKey(kube_namespace, "hooked"),
        lambda obj: (
            condition(obj, "Stalled").get("status") == "True"
            and latest_release(obj).get("status") == "failed"
        ),
        log=log,
        timeout=60,
        flux=flux,
    )
    report("HelmRelease with a failing post-install hook", log, time.monotonic() - started)
    ready = condition(hr, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InstallFailed"), ready
    assert "post-install" in ready["message"], ready["message"]
    assert "Ready=False/InstallFailed" in log.seen
    assert hr["status"]["history"][0]["status"] == "failed"


async def test_a_value_that_renders_an_invalid_object_ends_with_helm_controllers_own_reason(
    flux: Flux, chart_repo: ChartRepository, kube: KubeClient, kube_namespace: str
) -> None:
    started = time.monotonic()
    values = {"replicas": "many"}
    await install(
        kube, chart_repo, kube_namespace, helm_release(kube_namespace, "bad", DEMO_CHART, values)
    )
    log = ConditionLog()
    hr = await watch_until(
        kube,
        HELM_RELEASES,
        ObjectKey(kube_namespace, "bad"),
        lambda obj: condition(obj, "Stalled").get("status") == "True",
        log=log,
        timeout=60,
        flux=flux,
    )
    report("HelmRelease of demo-app with replicas: many", log, time.monotonic() - started)
    ready = condition(hr, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InstallFailed"), ready
    assert "replicas" in ready["message"], ready["message"]
    with pytest.raises(NotFoundError):
        await kube.get(DEPLOYMENTS, ObjectKey(kube_namespace, "bad-demo-app"))


async def instance_ready(
    kube: KubeClient, flux: Flux, key: ObjectKey, *, what: str, hr_reason: str, version: str
) -> tuple[JsonObj, JsonObj]:
    """Wait for the HelmRelease, then the instance, to be Ready at their current generation;
    print both condition sequences."""
    started = time.monotonic()
    hr_log, ai_log = ConditionLog(), ConditionLog()

    def hr_done(obj: JsonObj) -> bool:
        ready = condition(obj, "Ready")
        current = ready.get("observedGeneration") == obj["metadata"]["generation"]
        reached = (ready.get("status"), ready.get("reason")) == ("True", hr_reason)
        latest = latest_release(obj)
        deployed = (latest.get("status"), latest.get("chartVersion")) == ("deployed", version)
        return current and reached and deployed

    def ai_done(obj: JsonObj) -> bool:
        ready = condition(obj, "Ready")
        return (
            ready.get("status") == "True"
            and (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"]
        )

    hr = await watch_until(kube, HELM_RELEASES, key, hr_done, log=hr_log, timeout=90, flux=flux)
    report(f"the operator's HelmRelease, {what}", hr_log, time.monotonic() - started)
    ai = await watch_until(kube, APPLICATION_INSTANCES, key, ai_done, log=ai_log, timeout=30)
    report(f"the ApplicationInstance, {what}", ai_log, time.monotonic() - started)
    return hr, ai


async def create_instance(
    kube: KubeClient, chart_repo: ChartRepository, namespace: str, name: str
) -> ObjectKey:
    instance = managed_instance(
        name,
        namespace,
        values={"source": "inline", "inline": {"replicas": 2, "message": "from the operator"}},
    )
    instance["spec"]["chart"] = chart_repo.chart("0.1.0")
    await kube.create(APPLICATION_INSTANCES, instance, field_manager="test")
    return ObjectKey(namespace, name)


async def test_an_application_instance_goes_ready_through_the_real_helm_controller(
    flux: Flux,
    chart_repo: ChartRepository,
    real_operator: OperatorProcess,
    kwok_nodes: KwokNodes,
    kube: KubeClient,
    kube_namespace: str,
) -> None:
    key = await create_instance(kube, chart_repo, kube_namespace, "shop")
    # The operator's HelmRelease waits for the Deployment (no disableWait), as in production.
    hr, ai = await instance_ready(
        kube, flux, key, what="install", hr_reason="InstallSucceeded", version="0.1.0"
    )
    assert condition(ai, "Ready")["reason"] == "HelmReleaseReady"
    assert hr["status"]["history"][0]["chartVersion"] == "0.1.0"
    config = await kube.get(CONFIG_MAPS, ObjectKey(kube_namespace, "shop-demo-app"))
    assert config["data"] == {"message": "from the operator", "chartVersion": "0.1.0"}
    deployment = await kube.get(DEPLOYMENTS, ObjectKey(kube_namespace, "shop-demo-app"))
    assert condition(deployment, "Available")["status"] == "True"


async def test_a_new_chart_version_on_the_instance_is_upgraded_by_the_real_helm_controller(
    flux: Flux,
    chart_repo: ChartRepository,
    real_operator: OperatorProcess,
    kwok_nodes: KwokNodes,
    kube: KubeClient,
    kube_namespace: str,
) -> None:
    key = await create_instance(kube, chart_repo, kube_namespace, "shop")
    await instance_ready(
        kube, flux, key, what="install", hr_reason="InstallSucceeded", version="0.1.0"
    )
    await kube.merge_patch(
        APPLICATION_INSTANCES,
        key,
        {"spec": {"chart": {"version": "0.2.0"}}},
        field_manager="test",
    )
    hr, ai = await instance_ready(
        kube, flux, key, what="0.1.0 -> 0.2.0", hr_reason="UpgradeSucceeded", version="0.2.0"
    )
    assert [h["chartVersion"] for h in hr["status"]["history"]] == ["0.2.0", "0.1.0"]
    assert ai["status"]["lastAppliedChart"]["version"] == "0.2.0"
    config = await kube.get(CONFIG_MAPS, ObjectKey(kube_namespace, "shop-demo-app"))
    assert config["data"]["chartVersion"] == "0.2.0"
