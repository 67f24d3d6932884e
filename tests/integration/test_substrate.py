"""Prove that the test control plane is a real Kubernetes API server.

Each test checks a behaviour that only a real kube-apiserver + etcd (+ kube-controller-manager)
has, and asserts its specifics (the conflicting manager's name, the 410 code, the vanished
dependent), so it fails if the behaviour is missing.
"""

from __future__ import annotations

import asyncio
import copy
import json
import secrets
from typing import Any

import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from vworkspace.testing import ControlPlane
from vworkspace.testing.crds import install_crds
from vworkspace.testing.pytest_plugin import require_controller_manager

pytestmark = pytest.mark.integration

GROUP = "substrate.testing.vworkspace.io"
WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"widgets.{GROUP}"},
    "spec": {
        "group": GROUP,
        "names": {
            "kind": "Widget",
            "listKind": "WidgetList",
            "plural": "widgets",
            "singular": "widget",
        },
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {
                                    "size": {"type": "integer", "minimum": 1},
                                    "color": {"type": "string"},
                                },
                            },
                            "status": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            },
                        },
                    }
                },
            }
        ],
    },
}
APPLY = "application/apply-patch+yaml"


@pytest.fixture(scope="module")
def widget_crd(control_plane: ControlPlane) -> str:
    (name,) = install_crds(control_plane.rest(), [copy.deepcopy(WIDGET_CRD)])
    return name


def widget(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Widget",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


async def test_crd_becomes_established_and_objects_round_trip(
    widget_crd: str, kube_api: client.ApiClient, kube_namespace: str
) -> None:
    ext = client.ApiextensionsV1Api(kube_api)
    crd = await ext.read_custom_resource_definition(widget_crd)
    established = {c.type: c.status for c in crd.status.conditions}
    assert established["Established"] == "True"

    api = client.CustomObjectsApi(kube_api)
    created = await api.create_namespaced_custom_object(
        GROUP, "v1", kube_namespace, "widgets", widget("w1", kube_namespace, size=1)
    )
    assert created["metadata"]["uid"]
    created["spec"]["size"] = 3
    updated = await api.replace_namespaced_custom_object(
        GROUP, "v1", kube_namespace, "widgets", "w1", created
    )
    assert updated["spec"]["size"] == 3
    assert int(updated["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])

    # The schema is enforced: size must be >= 1.
    with pytest.raises(ApiException) as bad:
        await api.create_namespaced_custom_object(
            GROUP, "v1", kube_namespace, "widgets", widget("bad", kube_namespace, size=0)
        )
    assert bad.value.status == 422
    assert "spec.size" in bad.value.body

    await api.delete_namespaced_custom_object(GROUP, "v1", kube_namespace, "widgets", "w1")
    with pytest.raises(ApiException) as gone:
        await api.get_namespaced_custom_object(GROUP, "v1", kube_namespace, "widgets", "w1")
    assert gone.value.status == 404


async def test_server_side_apply_conflict_names_the_other_manager(
    widget_crd: str, kube_api: client.ApiClient, kube_namespace: str
) -> None:
    api = client.CustomObjectsApi(kube_api)

    async def apply(manager: str, color: str, *, force: bool) -> dict[str, Any]:
        result: dict[str, Any] = await api.patch_namespaced_custom_object(
            GROUP,
            "v1",
            kube_namespace,
            "widgets",
            "shared",
            widget("shared", kube_namespace, size=1, color=color),
            field_manager=manager,
            force=force,
            _content_type=APPLY,
        )
        return result

    await apply("manager-a", "red", force=False)
    with pytest.raises(ApiException) as conflict:
        await apply("manager-b", "blue", force=False)
    assert conflict.value.status == 409
    status = json.loads(conflict.value.body)
    assert status["reason"] == "Conflict"
    causes = status["details"]["causes"]
    assert any(c["field"] == ".spec.color" and "manager-a" in c["message"] for c in causes), causes

    forced = await apply("manager-b", "blue", force=True)
    assert forced["spec"]["color"] == "blue"
    owners = {
        entry["manager"]: entry.get("fieldsV1", {}).get("f:spec", {})
        for entry in forced["metadata"]["managedFields"]
    }
    assert "f:color" in owners["manager-b"]
    assert "f:color" not in owners.get("manager-a", {})


async def test_watch_sees_added_modified_deleted(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    core = client.CoreV1Api(kube_api)
    listed = await core.list_namespaced_config_map(kube_namespace)
    rv = listed.metadata.resource_version
    seen: list[tuple[str, str]] = []

    async def consume() -> None:
        w = watch.Watch()
        async with w.stream(
            core.list_namespaced_config_map, kube_namespace, resource_version=rv, timeout_seconds=30
        ) as stream:
            async for event in stream:
                seen.append((event["type"], event["object"].metadata.name))
                if event["type"] == "DELETED":
                    return

    consumer = asyncio.create_task(consume())
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="watched"), data={"a": "1"})
    await core.create_namespaced_config_map(kube_namespace, body)
    await core.patch_namespaced_config_map("watched", kube_namespace, {"data": {"a": "2"}})
    await core.delete_namespaced_config_map("watched", kube_namespace)
    await asyncio.wait_for(consumer, timeout=30)
    assert seen == [("ADDED", "watched"), ("MODIFIED", "watched"), ("DELETED", "watched")]


async def test_watch_from_compacted_resource_version_gets_410(
    control_plane: ControlPlane, kube_api: client.ApiClient, kube_namespace: str
) -> None:
    # PodTemplates are served without the watch cache (see vworkspace.testing.controlplane), so
    # the watch reads etcd's history directly, exactly as a real cluster does once a
    # resourceVersion has fallen out of its watch cache.
    core = client.CoreV1Api(kube_api)
    template = client.V1PodTemplate(
        metadata=client.V1ObjectMeta(name="tpl"),
        template=client.V1PodTemplateSpec(
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")])
        ),
    )
    created = await core.create_namespaced_pod_template(kube_namespace, template)
    old_rv = created.metadata.resource_version

    # Before compaction the old resourceVersion is still watchable: we get the change after it.
    await core.patch_namespaced_pod_template(
        "tpl", kube_namespace, {"metadata": {"labels": {"n": "1"}}}
    )
    async with watch.Watch().stream(
        core.list_namespaced_pod_template,
        kube_namespace,
        resource_version=old_rv,
        timeout_seconds=5,
    ) as stream:
        first = await asyncio.wait_for(stream.__anext__(), timeout=10)
    assert first["type"] == "MODIFIED"

    await core.patch_namespaced_pod_template(
        "tpl", kube_namespace, {"metadata": {"labels": {"n": "2"}}}
    )
    compacted_to = control_plane.compact_etcd()
    assert compacted_to > int(old_rv)

    async def watch_from_old_rv() -> None:
        async with watch.Watch().stream(
            core.list_namespaced_pod_template,
            kube_namespace,
            resource_version=old_rv,
            timeout_seconds=5,
        ) as stream:
            async for _ in stream:
                pass

    with pytest.raises(ApiException) as expired:
        await watch_from_old_rv()
    assert expired.value.status == 410


async def _wait_gone(read: Any, *args: Any, within: float) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            await read(*args)
        except ApiException as err:
            if err.status == 404:
                return
            raise
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{args} still exists after {within}s")
        await asyncio.sleep(0.25)


@pytest.mark.controller_manager
async def test_garbage_collector_removes_dependents(
    control_plane: ControlPlane, kube_api: client.ApiClient, kube_namespace: str
) -> None:
    require_controller_manager(control_plane)
    core = client.CoreV1Api(kube_api)
    owner = await core.create_namespaced_config_map(
        kube_namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    ref = client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
    )
    await core.create_namespaced_config_map(
        kube_namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="dependent", owner_references=[ref])),
    )
    await core.delete_namespaced_config_map("owner", kube_namespace)
    await _wait_gone(core.read_namespaced_config_map, "dependent", kube_namespace, within=60)


@pytest.mark.controller_manager
async def test_deleted_namespace_goes_away(
    control_plane: ControlPlane, kube_api: client.ApiClient
) -> None:
    require_controller_manager(control_plane)
    core = client.CoreV1Api(kube_api)
    name = f"t-ns-delete-{secrets.token_hex(3)}"
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    await core.create_namespaced_config_map(
        name, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="content"))
    )
    await core.delete_namespace(name)
    # Without the namespace controller it would stay Terminating forever.
    await _wait_gone(core.read_namespace, name, within=60)
