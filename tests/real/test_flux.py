"""Flux's real source-controller and helm-controller install the project's own chart from the
local chart repository; then the operator's ApplicationInstance goes Ready through them, and an
Upgrade Operation (helm engine) takes it to the next chart version.

No hand-written status here: every condition is what the real controllers wrote. Each test
records the condition sequence of the HelmRelease (and of the operator's own objects: the
ApplicationInstance, the Operation with its phase), as type=status/reason in the order they
appeared, and prints it as one ``flux-conditions:`` line (run with ``-s`` to see them): the
observed truth the other tiers' fixtures are checked against.

The direct HelmReleases (no operator) set ``install.disableWait`` and ``replicas: 0``: they
test helm-controller's own answers, not scheduling. The operator's instances have ``replicas:
2`` and their HelmRelease waits (as in production), so those tests run kwok's simulated Nodes
with the real kube-scheduler and workload controllers (``kwok_nodes``): the Deployment becomes
Available because two real Pods are Running on kwok Nodes. The operator is the ``real_operator``
fixture: a ``python -m vworkspace run`` process under the shipped ServiceAccount and RBAC (any
403 fails the test), once through a token-only kubeconfig and once through the in-cluster
loader.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.operator_process import OperatorProcess
from tests.real.conftest import IN_CLUSTER, KUBECONFIG_TOKEN
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.engines.flux import HELM_RELEASES, HELM_REPOSITORIES
from vworkspace.kube.rest.client import KubeClient
from vworkspace.kube.rest.errors import NotFoundError
from vworkspace.kube.rest.resources import APPLICATION_INSTANCES, OPERATIONS, ResourceType
from vworkspace.testing import ControlPlane
from vworkspace.testing.chartrepo import (
    DEMO_CHART,
    FAILING_HOOK_CHART,
    SAMPLE_CHARTS_PORT,
    ChartRepository,
)
from vworkspace.testing.flux import Flux
from vworkspace.testing.kwok import KwokNodes
from vworkspace.testing.objects import managed_instance, operation

CONFIG_MAPS = ResourceType("", "v1", "configmaps", "ConfigMap")
DEPLOYMENTS = ResourceType("apps", "v1", "deployments", "Deployment")
SERVICES = ResourceType("", "v1", "services", "Service")
PODS = ResourceType("", "v1", "pods", "Pod")
REPLICAS = 2


@pytest.fixture
async def kube(control_plane: ControlPlane) -> AsyncIterator[KubeClient]:
    client = await KubeClient.from_kubeconfig(str(control_plane.kubeconfig_path))
    yield client
    await client.close()


class ConditionLog:
    """The distinct ``Type=Status/Reason`` states of an object's conditions, in order seen.

    Polled (every 50 ms), so a state that lasted less than that can be missed; the sequence is
    what a client watching the object would have seen at that resolution. With ``phase`` the
    object's ``status.phase`` (an Operation's) is recorded too, as ``phase=<value>``.
    """

    def __init__(self, *, phase: bool = False) -> None:
        self.seen: list[str] = []
        self._last: dict[str, str] = {}
        self._phase = phase

    def record(self, obj: JsonObj) -> None:
        status = obj.get("status") or {}
        if self._phase and status.get("phase"):
            self._note("phase", f"phase={status['phase']}")
        for cond in status.get("conditions") or []:
            self._note(cond["type"], f"{cond['type']}={cond['status']}/{cond.get('reason', '')}")

    def _note(self, key: str, state: str) -> None:
        if self._last.get(key) != state:
            self._last[key] = state
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
    print both condition sequences. Both are recorded from the start (the instance's states
    while helm-controller works are what the mapping table compares), but the instance counts
    as done only once the HelmRelease is: until then its Ready=True may still be the old one."""
    started = time.monotonic()
    hr_log, ai_log = ConditionLog(), ConditionLog()
    hr_reached = asyncio.Event()

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
            hr_reached.is_set()
            and ready.get("status") == "True"
            and (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"]
        )

    async def release() -> JsonObj:
        hr = await watch_until(kube, HELM_RELEASES, key, hr_done, log=hr_log, timeout=90, flux=flux)
        hr_reached.set()
        report(f"the operator's HelmRelease, {what}", hr_log, time.monotonic() - started)
        return hr

    # A TaskGroup, not gather: when one wait fails, the other is cancelled, not left running.
    async with asyncio.TaskGroup() as group:
        hr_task = group.create_task(release())
        ai_task = group.create_task(
            watch_until(kube, APPLICATION_INSTANCES, key, ai_done, log=ai_log, timeout=120)
        )
    report(f"the ApplicationInstance, {what}", ai_log, time.monotonic() - started)
    return hr_task.result(), ai_task.result()


async def create_instance(
    kube: KubeClient, chart_repo: ChartRepository, namespace: str, name: str
) -> ObjectKey:
    """A managed instance of demo-app 0.1.0 with ``REPLICAS`` Pods, which allows Upgrade
    Operations through the helm engine (its capability annotation)."""
    instance = managed_instance(
        name,
        namespace,
        values={
            "source": "inline",
            "inline": {"replicas": REPLICAS, "message": "from the operator"},
        },
        annotations={"ops.vworkspace.io/upgrade": "helm"},
    )
    instance["spec"]["chart"] = chart_repo.chart("0.1.0")
    await kube.create(APPLICATION_INSTANCES, instance, field_manager="test")
    return ObjectKey(namespace, name)


async def assert_running_on_kwok(kube: KubeClient, key: ObjectKey, kwok_nodes: KwokNodes) -> None:
    """What a platform team checks: the release's Deployment is Available with all its replicas,
    and each of its Pods is Running on one of kwok's Nodes (placed by the real scheduler)."""
    name = f"{key.name}-demo-app"
    deployment = await kube.get(DEPLOYMENTS, ObjectKey(key.namespace, name))
    assert condition(deployment, "Available")["status"] == "True", deployment.get("status")
    assert deployment["status"].get("availableReplicas") == REPLICAS, deployment["status"]
    selector = f"app.kubernetes.io/name=demo-app,app.kubernetes.io/instance={key.name}"
    pods = (await kube.list(PODS, key.namespace, labelSelector=selector))["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    placed = {
        p["metadata"]["name"]: (p["status"].get("phase"), p["spec"].get("nodeName")) for p in live
    }
    assert len(placed) == REPLICAS, placed
    for pod, (phase, node) in placed.items():
        assert phase == "Running", (pod, phase)
        assert node in kwok_nodes.names, (pod, node, kwok_nodes.names)


@pytest.mark.parametrize("real_operator", [KUBECONFIG_TOKEN, IN_CLUSTER], indirect=True)
async def test_an_application_instance_goes_ready_through_the_real_helm_controller(
    flux: Flux,
    chart_repo: ChartRepository,
    real_operator: OperatorProcess,
    kwok_nodes: KwokNodes,
    kube: KubeClient,
    kube_namespace: str,
    request: pytest.FixtureRequest,
) -> None:
    mode = request.node.callspec.params["real_operator"]
    key = await create_instance(kube, chart_repo, kube_namespace, "shop")
    # The operator's HelmRelease waits for the Deployment (no disableWait), as in production.
    hr, ai = await instance_ready(
        kube,
        flux,
        key,
        what=f"install, operator via {mode}",
        hr_reason="InstallSucceeded",
        version="0.1.0",
    )
    assert condition(ai, "Ready")["reason"] == "HelmReleaseReady"
    assert hr["status"]["history"][0]["chartVersion"] == "0.1.0"
    config = await kube.get(CONFIG_MAPS, ObjectKey(kube_namespace, "shop-demo-app"))
    assert config["data"] == {"message": "from the operator", "chartVersion": "0.1.0"}
    await assert_running_on_kwok(kube, key, kwok_nodes)


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
    await assert_running_on_kwok(kube, key, kwok_nodes)


async def start_upgrade(
    kube: KubeClient, instance: ObjectKey, name: str, parameters: JsonObj
) -> ObjectKey:
    """Create Upgrade Operation ``name`` (engine helm) on ``instance``; its key."""
    namespace = instance.namespace or ""
    body = operation(
        name,
        namespace,
        type_="Upgrade",
        engine="helm",
        target=instance.name,
        parameters=parameters,
    )
    await kube.create(OPERATIONS, body, field_manager="test")
    return ObjectKey(namespace, name)


def operation_finished(obj: JsonObj) -> bool:
    return (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed", "Cancelled")


async def test_an_upgrade_operation_through_the_helm_engine_is_carried_out_by_the_real_helm_controller(
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
    started = time.monotonic()
    await start_upgrade(kube, key, "upgrade-1", {"targetVersion": "0.2.0"})
    op_log = ConditionLog(phase=True)
    # Both at once: the HelmRelease's sequence during the upgrade is part of the record too.
    async with asyncio.TaskGroup() as group:
        rollout = group.create_task(
            instance_ready(
                kube,
                flux,
                key,
                what="Upgrade Operation 0.1.0 -> 0.2.0",
                hr_reason="UpgradeSucceeded",
                version="0.2.0",
            )
        )
        finished = group.create_task(
            watch_until(
                kube,
                OPERATIONS,
                ObjectKey(kube_namespace, "upgrade-1"),
                operation_finished,
                log=op_log,
                timeout=120,
                flux=flux,
            )
        )
    (hr, ai), op = rollout.result(), finished.result()
    report("the Upgrade Operation (helm engine)", op_log, time.monotonic() - started)
    assert op["status"]["phase"] == "Succeeded", op["status"]
    assert "Ready at 0.2.0" in condition(op, "Succeeded")["message"], op["status"]
    assert condition(hr, "Ready")["reason"] == "UpgradeSucceeded"
    assert [h["chartVersion"] for h in hr["status"]["history"]] == ["0.2.0", "0.1.0"]
    assert ai["spec"]["chart"]["version"] == "0.2.0"  # the engine changed the instance...
    assert ai["status"]["lastAppliedChart"]["version"] == "0.2.0"  # ...and the operator applied it
    config = await kube.get(CONFIG_MAPS, ObjectKey(kube_namespace, "shop-demo-app"))
    assert config["data"]["chartVersion"] == "0.2.0"
    await assert_running_on_kwok(kube, key, kwok_nodes)


SAMPLE = Path(__file__).resolve().parents[2] / "manifests/samples/applicationinstance-demo-app.yaml"


async def test_the_sample_instance_of_demo_app_goes_ready(
    flux: Flux,
    chart_repo: ChartRepository,
    real_operator: OperatorProcess,
    kwok_nodes: KwokNodes,
    kube: KubeClient,
    kube_namespace: str,
) -> None:
    """The sample a newcomer applies after ``testenv start --with kwok,flux`` installs for real.
    Only its namespaces and the repository's port are changed: the fixture's repository listens
    on a free port, testenv's on :data:`SAMPLE_CHARTS_PORT`, which the sample must name."""
    sample = yaml.safe_load(SAMPLE.read_text())
    chart = sample["spec"]["chart"]
    assert chart["url"] == f"http://127.0.0.1:{SAMPLE_CHARTS_PORT}", chart
    chart["url"] = chart_repo.url
    sample["metadata"]["namespace"] = sample["spec"]["release"]["namespace"] = kube_namespace
    await kube.create(APPLICATION_INSTANCES, sample, field_manager="test")
    key = ObjectKey(kube_namespace, sample["metadata"]["name"])
    _, ai = await instance_ready(
        kube, flux, key, what="the sample", hr_reason="InstallSucceeded", version=chart["version"]
    )
    assert condition(ai, "Ready")["reason"] == "HelmReleaseReady"
    config = await kube.get(CONFIG_MAPS, ObjectKey(kube_namespace, f"{key.name}-demo-app"))
    assert config["data"]["message"] == sample["spec"]["values"]["inline"]["message"]
    await assert_running_on_kwok(kube, key, kwok_nodes)
