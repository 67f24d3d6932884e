"""The informer against the real API server: events, relist after compaction, silent watches."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from vworkspace.api.meta import ObjectKey
from vworkspace.kube.cache.informer import Informer
from vworkspace.kube.cache.predicates import spec_or_metadata_changed
from vworkspace.kube.metrics import Metrics
from vworkspace.kube.rest.api import MERGE_PATCH
from vworkspace.kube.rest.client import KubeClient
from vworkspace.kube.rest.resources import APPLICATION_INSTANCES, CONFIG_MAPS, POD_TEMPLATES
from vworkspace.testing import ControlPlane
from vworkspace.testing.objects import managed_instance
from vworkspace.testing.proxy import Mode, TcpProxy

pytestmark = pytest.mark.integration


@pytest.fixture
def client(kube: KubeClient) -> KubeClient:
    return kube


@pytest.fixture
async def proxy(control_plane: ControlPlane) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy("127.0.0.1", control_plane.apiserver_port)
    await proxy.start()
    yield proxy
    await proxy.stop()


@pytest.fixture
async def proxied_client(
    control_plane: ControlPlane, proxy: TcpProxy, tmp_path: Path
) -> AsyncIterator[KubeClient]:
    kubeconfig = tmp_path / "proxied.kubeconfig"
    kubeconfig.write_text(control_plane.kubeconfig_yaml(server=f"https://127.0.0.1:{proxy.port}"))
    client = await KubeClient.from_kubeconfig(str(kubeconfig))
    yield client
    await client.close()


async def eventually(what: str, check: Callable[[], bool], timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.05)


def config_map(name: str, namespace: str, **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": data,
    }


def pod_template(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PodTemplate",
        "metadata": {"name": name, "namespace": namespace},
        "template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}},
    }


async def test_informer_sees_create_update_delete(client: KubeClient, kube_namespace: str) -> None:
    informer = Informer(client, CONFIG_MAPS, namespace=kube_namespace)
    seen: list[tuple[str, str | None, bool]] = []
    informer.add_handler(
        lambda o, initial: seen.append((o["metadata"]["name"], o.get("data", {}).get("v"), initial))
    )
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.wait_synced(), 10)
        key = ObjectKey(kube_namespace, "watched")
        await client.create(
            CONFIG_MAPS, config_map("watched", kube_namespace, v="1"), field_manager="test"
        )
        await eventually("create", lambda: informer.store.get(key) is not None)
        await client.merge_patch(CONFIG_MAPS, key, {"data": {"v": "2"}}, field_manager="test")
        await eventually(
            "update", lambda: (informer.store.get(key) or {}).get("data", {}).get("v") == "2"
        )
        assert "managedFields" not in informer.store.get(key)["metadata"]  # type: ignore[index]
        await client.delete(CONFIG_MAPS, key)
        await eventually("delete", lambda: informer.store.get(key) is None)
        assert [s for s in seen if s[0] == "watched"] == [
            ("watched", "1", False),
            ("watched", "2", False),
            ("watched", "2", False),
        ]
    finally:
        task.cancel()


@pytest.mark.usefixtures("vworkspace_crds")
async def test_an_update_predicate_skips_status_only_writes(
    client: KubeClient, kube_namespace: str
) -> None:
    informer = Informer(client, APPLICATION_INSTANCES, namespace=kube_namespace)
    notified: list[str] = []
    informer.add_handler(
        lambda o, initial: notified.append(o["metadata"]["resourceVersion"]),
        on_update=spec_or_metadata_changed,
    )
    everything: list[str] = []
    informer.add_handler(lambda o, initial: everything.append(o["metadata"]["resourceVersion"]))
    task = asyncio.create_task(informer.run())
    key = ObjectKey(kube_namespace, "shop")
    try:
        await asyncio.wait_for(informer.wait_synced(), 10)

        async def change(write: Any) -> str:
            rv = str((await write)["metadata"]["resourceVersion"])
            await eventually(rv, lambda: rv in everything)
            return rv

        created = await change(
            client.create(
                APPLICATION_INSTANCES, managed_instance("shop", kube_namespace), field_manager="t"
            )
        )
        status = await change(
            client.request(
                "PATCH",
                APPLICATION_INSTANCES.path(key, "status"),
                body={"status": {"observedGeneration": 1}},
                content_type=MERGE_PATCH,
                query={"fieldManager": "t"},
            )
        )
        labelled = await change(
            client.merge_patch(
                APPLICATION_INSTANCES, key, {"metadata": {"labels": {"a": "b"}}}, field_manager="t"
            )
        )
        spec = await change(
            client.merge_patch(
                APPLICATION_INSTANCES,
                key,
                {"spec": {"chart": {"version": "2.0.0"}}},
                field_manager="t",
            )
        )
        assert everything == [created, status, labelled, spec]
        assert notified == [created, labelled, spec]  # the status-only write was skipped
        await client.delete(APPLICATION_INSTANCES, key)
        await eventually("delete", lambda: informer.store.get(key) is None)
        assert len(notified) == 4  # deletes always pass
    finally:
        task.cancel()


async def test_relist_after_compaction_drops_objects_deleted_while_disconnected(
    control_plane: ControlPlane,
    client: KubeClient,
    proxied_client: KubeClient,
    proxy: TcpProxy,
    kube_namespace: str,
) -> None:
    # PodTemplates are served without the watch cache, so the stale resourceVersion hits etcd.
    for name in ("keep", "doomed"):
        await client.create(POD_TEMPLATES, pod_template(name, kube_namespace), field_manager="test")
    metrics = Metrics(CollectorRegistry())
    informer = Informer(proxied_client, POD_TEMPLATES, namespace=kube_namespace, metrics=metrics)
    notified: list[str] = []
    informer.add_handler(lambda o, initial: notified.append(o["metadata"]["name"]))
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.wait_synced(), 10)
        assert {k.name for k in informer.store.all_keys()} == {"keep", "doomed"}
        proxy.set_mode(Mode.REFUSE)  # the watch drops and reconnects fail
        await client.delete(POD_TEMPLATES, ObjectKey(kube_namespace, "doomed"))
        await client.create(
            POD_TEMPLATES, pod_template("fresh", kube_namespace), field_manager="test"
        )
        control_plane.compact_etcd()

        def reconnect_refused() -> bool:
            # Any list/watch failure but 410 Gone: the informer noticed the cut and retried.
            return any(
                sample.value >= 1
                for family in metrics.registry.collect()
                if family.name == "vworkspace_informer_watch_errors"
                for sample in family.samples
                if sample.name.endswith("_total") and sample.labels["kind"] != "gone"
            )

        await eventually("a reconnect refused", reconnect_refused)
        notified.clear()
        proxy.set_mode(Mode.FORWARD)
        await eventually(
            "relist",
            lambda: {k.name for k in informer.store.all_keys()} == {"keep", "fresh"},
            timeout=60,
        )
        assert informer.relists == 2  # the initial list and the one after 410 Gone
        assert "doomed" in notified  # the delete that happened while disconnected was reported
        gone = metrics.registry.get_sample_value(
            "vworkspace_informer_watch_errors_total", {"resource": informer.name, "kind": "gone"}
        )
        assert gone == 1
    finally:
        task.cancel()


async def test_a_silent_watch_is_detected_and_reopened(
    client: KubeClient, proxied_client: KubeClient, proxy: TcpProxy, kube_namespace: str
) -> None:
    informer = Informer(
        proxied_client, CONFIG_MAPS, namespace=kube_namespace, inactivity_timeout=1.5
    )
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.wait_synced(), 10)
        await client.create(
            CONFIG_MAPS, config_map("before-stall", kube_namespace), field_manager="test"
        )
        await eventually(
            "watch flowing",
            lambda: informer.store.get(ObjectKey(kube_namespace, "before-stall")) is not None,
        )
        assert informer.watches_opened == 1
        proxy.set_mode(Mode.STALL)  # the connection stays open, but nothing arrives any more
        await eventually("watchdog", lambda: informer.watches_opened >= 2, timeout=10)
        proxy.set_mode(Mode.FORWARD)
        await client.create(
            CONFIG_MAPS, config_map("after-stall", kube_namespace), field_manager="test"
        )
        await eventually(
            "event after reopen",
            lambda: informer.store.get(ObjectKey(kube_namespace, "after-stall")) is not None,
        )
        assert informer.relists == 1  # reopened from the last resourceVersion, no relist needed
    finally:
        task.cancel()
