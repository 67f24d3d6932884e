"""Shared chart sources on the real API server with kube-controller-manager's garbage collector
(engines/flux.py): the instances of one namespace that use one repository share one
HelmRepository, each listed as an owner; the source outlives all but its last owner; another
namespace gets its own; an instance that moves to another repository leaves its old source;
and a per-instance ``<release>-source`` of an older version is replaced on the next reconcile.
No Flux controller runs: only the objects are checked.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.integration.waits import eventually
from vworkspace.api.applicationinstance import ApplicationInstanceView
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.app.wiring import OperatorSettings, build_manager, served_kinds
from vworkspace.engines.flux import HELM_RELEASES, HELM_REPOSITORIES, desired_source
from vworkspace.kube.rest.client import KubeClient
from vworkspace.kube.rest.errors import NotFoundError
from vworkspace.kube.rest.resources import APPLICATION_INSTANCES, NAMESPACES
from vworkspace.testing import ControlPlane
from vworkspace.testing.objects import managed_instance
from vworkspace.testing.pytest_plugin import require_controller_manager

pytestmark = [pytest.mark.integration, pytest.mark.controller_manager]
GC_TIMEOUT = 60  # the garbage collector acts within seconds; a loaded CI machine is slower


@contextlib.asynccontextmanager
async def running(kube: KubeClient, namespace: str) -> AsyncIterator[None]:
    """An operator, its caches synced."""
    settings = OperatorSettings(namespace=namespace, workers=2)
    manager = build_manager(
        settings, kube, registry=CollectorRegistry(), served=await served_kinds(kube)
    )
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(stop))
    try:
        for informer in manager.informers:
            await asyncio.wait_for(informer.wait_synced(), 20)
        yield
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 30) == 0


@pytest.fixture
def gc(
    control_plane: ControlPlane, third_party_crds: list[str], vworkspace_crds: list[str]
) -> None:
    require_controller_manager(control_plane)


@pytest.fixture
async def operator(gc: None, kube: KubeClient, kube_namespace: str) -> AsyncIterator[None]:
    async with running(kube, kube_namespace):
        yield


@pytest.fixture
async def other_namespace(kube: KubeClient, kube_namespace: str) -> AsyncIterator[str]:
    name = f"{kube_namespace}-b"
    await kube.create(
        NAMESPACES,
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        field_manager="test",
    )
    yield name
    with contextlib.suppress(NotFoundError):
        await kube.delete(NAMESPACES, ObjectKey(None, name))


def instance(name: str, namespace: str, url: str) -> JsonObj:
    ai = managed_instance(name, namespace)
    ai["spec"]["chart"]["url"] = url
    return ai


async def create(kube: KubeClient, ai: JsonObj) -> str:
    """Create ``ai``; its uid."""
    created = await kube.create(APPLICATION_INSTANCES, ai, field_manager="test")
    return str(created["metadata"]["uid"])


async def source_of(kube: KubeClient, namespace: str, name: str) -> str:
    """The name of the HelmRepository the instance's HelmRelease points at (once it exists)."""
    hr = await eventually(
        lambda: kube.get(HELM_RELEASES, ObjectKey(namespace, name)), what=f"HelmRelease {name}"
    )
    return str(hr["spec"]["chart"]["spec"]["sourceRef"]["name"])


async def sources(kube: KubeClient, namespace: str) -> list[JsonObj]:
    return list((await kube.list(HELM_REPOSITORIES, namespace))["items"])


async def owned_by(kube: KubeClient, namespace: str, name: str, uids: set[str]) -> JsonObj | None:
    """The source, once its owners are exactly ``uids``."""
    repo = await kube.get(HELM_REPOSITORIES, ObjectKey(namespace, name))
    owners = {ref["uid"] for ref in repo["metadata"].get("ownerReferences") or []}
    return repo if owners == uids else None


async def gone(kube: KubeClient, resource: Any, key: ObjectKey) -> bool:
    try:
        await kube.get(resource, key)
    except NotFoundError:
        return True
    return False


async def delete_instance(kube: KubeClient, namespace: str, name: str) -> None:
    key = ObjectKey(namespace, name)
    await kube.delete(APPLICATION_INSTANCES, key)
    await eventually(lambda: gone(kube, APPLICATION_INSTANCES, key), what=f"{name} deleted")


async def test_instances_of_one_repository_share_one_source_until_the_last_leaves(
    operator: None, kube: KubeClient, kube_namespace: str
) -> None:
    spellings = (
        "https://charts.example.com/shared",
        "HTTPS://Charts.Example.com/shared/",
        "https://charts.example.com:443/shared",
    )
    # Created at once: each user's entry is its own, none overwrites another's.
    uids = await asyncio.gather(
        *(
            create(kube, instance(f"app-{i}", kube_namespace, url))
            for i, url in enumerate(spellings)
        )
    )
    names = {await source_of(kube, kube_namespace, f"app-{i}") for i in range(3)}
    assert len(names) == 1, names
    (name,) = names
    repo = await eventually(
        lambda: owned_by(kube, kube_namespace, name, set(uids)), what="three owners"
    )
    assert [r["metadata"]["name"] for r in await sources(kube, kube_namespace)] == [name]
    assert repo["spec"]["url"] == "https://charts.example.com/shared"
    assert repo["metadata"]["labels"] == {"app.vworkspace.io/managed-by": "vworkspace-operator"}
    for ref in repo["metadata"]["ownerReferences"]:
        assert ref["kind"] == "ApplicationInstance"
        assert not ref.get("controller")
        assert not ref.get("blockOwnerDeletion")

    await delete_instance(kube, kube_namespace, "app-0")
    await delete_instance(kube, kube_namespace, "app-1")
    # The garbage collector drops the gone owners' entries and keeps the source.
    await eventually(
        lambda: owned_by(kube, kube_namespace, name, {uids[2]}),
        timeout=GC_TIMEOUT,
        what="one owner left",
    )
    await delete_instance(kube, kube_namespace, "app-2")
    key = ObjectKey(kube_namespace, name)
    await eventually(lambda: gone(kube, HELM_REPOSITORIES, key), timeout=GC_TIMEOUT, what="gone")


async def test_each_namespace_gets_its_own_source(
    operator: None, kube: KubeClient, kube_namespace: str, other_namespace: str
) -> None:
    url = "https://charts.example.com/per-namespace"
    here = await create(kube, instance("a", kube_namespace, url))
    there = await create(kube, instance("a", other_namespace, url))
    name = await source_of(kube, kube_namespace, "a")
    assert await source_of(kube, other_namespace, "a") == name
    await eventually(lambda: owned_by(kube, kube_namespace, name, {here}), what="own source")
    await eventually(lambda: owned_by(kube, other_namespace, name, {there}), what="its own")
    await delete_instance(kube, other_namespace, "a")
    key = ObjectKey(other_namespace, name)
    await eventually(lambda: gone(kube, HELM_REPOSITORIES, key), timeout=GC_TIMEOUT, what="gone")
    assert await owned_by(kube, kube_namespace, name, {here})


async def test_an_instance_that_moves_repository_leaves_its_old_source(
    operator: None, kube: KubeClient, kube_namespace: str
) -> None:
    old, new = "https://charts.example.com/old", "https://charts.example.com/new"
    a = await create(kube, instance("a", kube_namespace, old))
    b = await create(kube, instance("b", kube_namespace, old))
    old_name = await source_of(kube, kube_namespace, "a")
    await eventually(lambda: owned_by(kube, kube_namespace, old_name, {a, b}), what="shared")

    async def move(name: str) -> str:
        key = ObjectKey(kube_namespace, name)
        patch = {"spec": {"chart": {"url": new}}}
        await kube.merge_patch(APPLICATION_INSTANCES, key, patch, field_manager="test")

        async def moved() -> str | None:
            source = await source_of(kube, kube_namespace, name)
            return source if source != old_name else None

        return str(await eventually(moved, what=f"{name} moved"))

    new_name = await move("b")
    # b's entry is removed from the old source (a still uses it), b is an owner of the new one.
    await eventually(lambda: owned_by(kube, kube_namespace, old_name, {a}), what="b left")
    await eventually(lambda: owned_by(kube, kube_namespace, new_name, {b}), what="b joined")
    assert await move("a") == new_name
    # a was the old source's last owner: it is deleted at once, not left for the collector.
    old_key = ObjectKey(kube_namespace, old_name)
    await eventually(lambda: gone(kube, HELM_REPOSITORIES, old_key), what="old source gone")
    await eventually(lambda: owned_by(kube, kube_namespace, new_name, {a, b}), what="both")


async def test_an_instance_replaced_while_its_source_is_collected_gets_it_back(
    operator: None, kube: KubeClient, kube_namespace: str
) -> None:
    url = "https://charts.example.com/churn"
    await create(kube, instance("first", kube_namespace, url))
    name = await source_of(kube, kube_namespace, "first")
    await eventually(lambda: kube.get(HELM_REPOSITORIES, ObjectKey(kube_namespace, name)))
    # The last user leaves while a new one arrives: whichever of the garbage collector's
    # deletion and the new owner entry comes first, the new instance ends with its source.
    _, second = await asyncio.gather(
        delete_instance(kube, kube_namespace, "first"),
        create(kube, instance("second", kube_namespace, url)),
    )
    assert await source_of(kube, kube_namespace, "second") == name
    await eventually(
        lambda: owned_by(kube, kube_namespace, name, {second}),
        timeout=GC_TIMEOUT,
        what="owned by the new instance only",
    )


def legacy_source(namespace: str, instance_name: str) -> JsonObj:
    """What the previous version made: ``<release>-source``, labelled with its instance, no
    owner."""
    return {
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "HelmRepository",
        "metadata": {
            "name": f"{instance_name}-source",
            "namespace": namespace,
            "labels": {
                "app.vworkspace.io/managed-by": "control-plane",
                "app.vworkspace.io/application-instance": instance_name,
            },
        },
        "spec": {"interval": "1m0s", "url": "https://charts.example.com"},
    }


async def test_a_per_instance_source_of_an_older_version_moves_to_the_shared_one(
    operator: None, kube: KubeClient, kube_namespace: str
) -> None:
    for owner in ("old", "someone-else"):
        await kube.create(
            HELM_REPOSITORIES,
            legacy_source(kube_namespace, owner),
            field_manager="vworkspace-operator",
        )
    uid = await create(kube, instance("old", kube_namespace, "https://charts.example.com"))
    name = await source_of(kube, kube_namespace, "old")
    assert name != "old-source"
    await eventually(lambda: owned_by(kube, kube_namespace, name, {uid}), what="shared source")
    legacy = ObjectKey(kube_namespace, "old-source")
    await eventually(lambda: gone(kube, HELM_REPOSITORIES, legacy), what="legacy source gone")
    # Another instance's source is not this one's to delete.
    assert not await gone(kube, HELM_REPOSITORIES, ObjectKey(kube_namespace, "someone-else-source"))


async def test_a_source_left_without_owner_by_a_stopped_operator_goes_with_its_instance(
    gc: None, kube: KubeClient, kube_namespace: str
) -> None:
    # The operator stopped between the shared source's two writes (spec, then owner entry),
    # and its instance was deleted meanwhile: the collector can never delete an unowned object.
    ai = instance("orphan", kube_namespace, "https://charts.example.com/orphan")
    _, source = desired_source(ApplicationInstanceView(ai))
    await kube.apply(HELM_REPOSITORIES, source, field_manager="vworkspace-operator")
    ai["metadata"]["finalizers"] = ["apps.vworkspace.io/finalizer"]
    await create(kube, ai)
    await kube.delete(APPLICATION_INSTANCES, ObjectKey(kube_namespace, "orphan"))
    key = ObjectKey(kube_namespace, source["metadata"]["name"])
    assert not await gone(kube, HELM_REPOSITORIES, key)
    async with running(kube, kube_namespace):
        await eventually(
            lambda: gone(kube, APPLICATION_INSTANCES, ObjectKey(kube_namespace, "orphan")),
            what="instance finalized",
        )
        await eventually(lambda: gone(kube, HELM_REPOSITORIES, key), what="unowned source gone")
