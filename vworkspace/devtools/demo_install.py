"""The demo's second half: the ApplicationInstance installed by the real controllers.

Once the agent has applied the ApplicationInstance, each step here waits for the next thing a
real cluster does with it, and prints it as it is seen:

1. the operator creates the chart source (a HelmRepository shared by the namespace's instances
   of that repository) and the HelmRelease;
2. source-controller fetches the repository's ``index.yaml`` (HelmRepository Ready) and the
   chart's package (HelmChart Ready, with the artifact helm-controller downloads);
3. helm-controller installs the chart: its Deployment appears, labelled with the release;
4. the Deployment controller, kube-scheduler and kwok make it Available: Pods placed on
   simulated Nodes, Running;
5. helm-controller, which waited for that, marks the HelmRelease Ready (``InstallSucceeded``);
6. the operator rolls that up: the ApplicationInstance Ready;
7. the agent sends the condition to the control plane: Ready=True in its events.

A HelmRelease that Flux gives up on (``Stalled=True``, e.g. a chart that does not render) fails
the step at once with helm-controller's own message, rather than after the timeout. The
condition sequences seen are kept (:class:`~vworkspace.devtools.demo_watch.ConditionLog`) and
printed when each object is Ready.
"""

from __future__ import annotations

import time

from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.devtools.demo_core import CLUSTER_ID, Demo, wait_for
from vworkspace.devtools.demo_watch import (
    HELM_CHARTS,
    Watch,
    condition,
    deployment_available,
    describe_pod,
    pods_of,
    ready_now,
    released_deployments,
    stalled,
    state_of,
)
from vworkspace.engines.flux import HELM_RELEASES, HELM_REPOSITORIES
from vworkspace.kube.rest.client import KubeClient
from vworkspace.kube.rest.resources import APPLICATION_INSTANCES
from vworkspace.mockcontrolplane import AdminClient


async def follow_install(demo: Demo) -> None:
    """Steps ``source`` to ``reported``, in the order a real cluster goes through them."""
    kube = demo.kube
    assert kube is not None
    demo.release = Watch(kube, HELM_RELEASES, demo.release_key())
    demo.application = Watch(kube, APPLICATION_INSTANCES, demo.instance_key())
    await _source(demo, kube)
    await _fetched(demo, kube)
    await _installed(demo, kube)
    await _available(demo, kube)
    await _released(demo)
    await _ready(demo)
    await _reported(demo)


async def _release_now(demo: Demo) -> JsonObj | None:
    """The HelmRelease now (its conditions recorded, and the instance's too, so both
    sequences are complete); raises if Flux has given up on it."""
    assert demo.release is not None
    assert demo.application is not None
    await demo.application.fetch()
    release = await demo.release.fetch()
    if release is not None and stalled(release):
        raise RuntimeError(
            f"helm-controller gave up (Stalled=True): {demo.release.explain()}; "
            f"kubectl --kubeconfig {demo.kubeconfig} describe helmrelease -n "
            f"{demo.release.key.namespace} {demo.release.key.name}"
        )
    return release


async def _source(demo: Demo, kube: KubeClient) -> None:
    assert demo.release is not None
    with demo.out.step("source"):
        release = await wait_for(
            demo,
            what=f"the operator's HelmRelease {demo.release.key}",
            probe=lambda: _release_now(demo),
            explain=demo.release.explain,
        )
        chart = ((release.get("spec") or {}).get("chart") or {}).get("spec") or {}
        source = chart.get("sourceRef") or {}
        repo = await kube.get(
            HELM_REPOSITORIES, ObjectKey(demo.release.key.namespace, source["name"])
        )
        demo.out.detail(
            f"HelmRepository {demo.release.key.namespace}/{source.get('name')} for "
            f"{repo['spec']['url']} (one per namespace and repository, shared)"
        )
        demo.out.detail(
            f"HelmRelease {demo.release.key}: chart {chart.get('chart')} {chart.get('version')}, "
            f"values {release['spec'].get('values')}"
        )


async def _fetched(demo: Demo, kube: KubeClient) -> None:
    """helm-controller makes a HelmChart of the HelmRelease (named in its status); source-
    controller fetches the repository's index and then the chart into an artifact."""
    assert demo.release is not None
    watches: dict[str, Watch] = {}

    async def fetched() -> tuple[JsonObj, JsonObj] | None:
        release = await _release_now(demo)
        name = ((release or {}).get("status") or {}).get("helmChart", "")
        if "/" not in name:
            return None
        namespace, chart_name = name.split("/", 1)
        chart_watch = watches.setdefault(
            "chart", Watch(kube, HELM_CHARTS, ObjectKey(namespace, chart_name))
        )
        chart = await chart_watch.fetch()
        if chart is None:
            return None
        repo_key = ObjectKey(namespace, chart["spec"]["sourceRef"]["name"])
        repo = await watches.setdefault("repo", Watch(kube, HELM_REPOSITORIES, repo_key)).fetch()
        # Ready can be written a moment before the artifact helm-controller downloads.
        artifact = (chart.get("status") or {}).get("artifact")
        done = repo is not None and ready_now(repo) and ready_now(chart) and bool(artifact)
        return (repo, chart) if done and repo is not None else None

    def explain() -> str:
        assert demo.release is not None
        if "chart" not in watches:
            return f"{demo.release.explain()}; no HelmChart yet (helm-controller makes it)"
        return "; ".join(watch.explain() for watch in watches.values())

    with demo.out.step("fetched"):
        repo, chart = await wait_for(
            demo, what="the HelmRepository and HelmChart Ready", probe=fetched, explain=explain
        )
        meta = chart["metadata"]
        demo.out.detail(
            f"HelmRepository Ready: {condition(repo, 'Ready').get('message', '')}; "
            f"HelmChart {meta['namespace']}/{meta['name']} Ready: "
            f"{condition(chart, 'Ready').get('message', '')}"
        )
        artifact = (chart.get("status") or {}).get("artifact") or {}
        demo.out.detail(f"chart artifact served by source-controller: {artifact.get('url')}")


async def _installed(demo: Demo, kube: KubeClient) -> None:
    assert demo.release is not None
    release_key = demo.release.key

    async def installed() -> JsonObj | None:
        await _release_now(demo)
        found = await released_deployments(kube, release_key)
        return found[0] if found else None

    with demo.out.step("installed"):
        deployment = await wait_for(
            demo,
            what=f"a Deployment installed by helm-controller for HelmRelease {release_key}",
            probe=installed,
            explain=demo.release.explain,
        )
        meta = deployment["metadata"]
        demo.out.detail(
            f"Deployment {meta['namespace']}/{meta['name']} created by helm-controller "
            f"(replicas {deployment['spec'].get('replicas')}, image "
            f"{deployment['spec']['template']['spec']['containers'][0].get('image')}); "
            "it waits for it to become Available"
        )


async def _available(demo: Demo, kube: KubeClient) -> None:
    assert demo.release is not None
    release_key = demo.release.key

    async def available() -> tuple[JsonObj, list[JsonObj]] | None:
        await _release_now(demo)
        found = await released_deployments(kube, release_key)
        if not found or not deployment_available(found[0]):
            return None
        pods = await pods_of(kube, found[0])
        running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
        return (found[0], running) if running else None

    with demo.out.step("available"):
        demo.deployment, demo.pods = await wait_for(
            demo,
            what=f"the Deployment of HelmRelease {release_key} Available with Running Pods",
            probe=available,
            explain=demo.release.explain,
        )
        status = demo.deployment.get("status") or {}
        demo.out.detail(
            f"Available=True, {status.get('readyReplicas')}/{demo.deployment['spec']['replicas']}"
            " replicas ready (kwok plays the kubelet: no container runs)"
        )
        for pod in demo.pods:
            demo.out.detail(describe_pod(pod))


async def _released(demo: Demo) -> None:
    assert demo.release is not None
    watch = demo.release

    async def released() -> JsonObj | None:
        release = await _release_now(demo)
        return release if release is not None and ready_now(release) else None

    with demo.out.step("released"):
        release = await wait_for(
            demo, what=f"HelmRelease {watch.key} Ready", probe=released, explain=watch.explain
        )
        history = ((release.get("status") or {}).get("history") or [{}])[0]
        ready = condition(release, "Ready")
        demo.out.detail(
            f"{state_of(ready)}: {ready.get('message', '')} "
            f"(release {history.get('status', '?')}, chart {history.get('chartVersion', '?')})"
        )
        demo.out.detail(f"HelmRelease conditions seen: {watch.log.text()}")


async def _ready(demo: Demo) -> None:
    assert demo.application is not None
    watch = demo.application

    async def ready() -> JsonObj | None:
        await _release_now(demo)
        instance = watch.last
        return instance if instance is not None and ready_now(instance) else None

    with demo.out.step("ready"):
        instance = await wait_for(
            demo, what=f"ApplicationInstance {watch.key} Ready", probe=ready, explain=watch.explain
        )
        cond = condition(instance, "Ready")
        demo.out.detail(f"{state_of(cond)}: {cond.get('message', '')}")
        demo.out.detail(f"ApplicationInstance conditions seen: {watch.log.text()}")


def _ready_true(events: list[JsonObj]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for event in events
        for c in event.get("conditions") or []
    )


async def _reported(demo: Demo) -> None:
    admin = demo.admin
    assert admin is not None
    key = demo.instance_key()

    async def delivered() -> list[JsonObj] | None:
        found = await _events(admin, key.namespace or "", key.name)
        return found if _ready_true(found) else None

    with demo.out.step("reported"):
        demo.events = await wait_for(
            demo,
            what=f"a Ready=True condition event for {key} at the control plane",
            probe=delivered,
        )
        readies: list[str] = []
        for event in demo.events:
            for cond in event.get("conditions") or []:
                state = f"{cond.get('status')}/{cond.get('reason')}"
                if cond.get("type") == "Ready" and readies[-1:] != [state]:
                    readies.append(state)
        demo.out.detail(
            f"{len(demo.events)} condition events for ApplicationInstance {key} at the control "
            f"plane; Ready went {' -> '.join(readies)}, "
            f"{time.monotonic() - demo.enqueued_at:.1f}s after the job was queued"
        )


async def _events(admin: AdminClient, namespace: str, name: str) -> list[JsonObj]:
    return await admin.events(
        CLUSTER_ID, kind="ApplicationInstance", namespace=namespace, name=name
    )
