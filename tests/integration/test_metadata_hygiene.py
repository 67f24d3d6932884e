"""Metadata hygiene against the real API server and its garbage collector (issue 24, F2): a job
may set only name, namespace, labels and annotations; what the server would act on is refused."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from vworkspace.api.meta import ObjectKey
from vworkspace.kube.rest.client import KubeClient
from vworkspace.kube.rest.errors import NotFoundError
from vworkspace.kube.rest.resources import APPLICATION_INSTANCES, NAMESPACES
from vworkspace.mockcontrolplane import MockControlPlane
from vworkspace.testing import ControlPlane
from vworkspace.testing.pytest_plugin import require_controller_manager

from .agent_harness import CLUSTER, TOKEN, Agent, instance, wait_result

pytestmark = pytest.mark.integration

# An owner that does not exist: by the garbage collector's rules its dependents are deleted.
GHOST_OWNER = {
    "apiVersion": "v1",
    "kind": "Namespace",
    "name": "ghost-owner",
    "uid": "00000000-0000-0000-0000-00000000dead",
}


@pytest.fixture
async def mock() -> AsyncIterator[MockControlPlane]:
    async with MockControlPlane(visibility_timeout=1.0) as server:
        server.set_bootstrap_token(CLUSTER, TOKEN)
        yield server


@pytest.fixture
async def agent(
    kube: KubeClient, mock: MockControlPlane, kube_namespace: str, vworkspace_crds: list[str]
) -> AsyncIterator[Agent]:
    running = await Agent(kube, mock, kube_namespace).start()
    yield running
    await running.stop()


async def apply(mock: MockControlPlane, job_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    await mock.enqueue(CLUSTER, {"id": job_id, "kind": "apply", "payload": payload})
    return await wait_result(mock, job_id)


def namespace(name: str, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, **meta}}


async def collected(kube: KubeClient, name: str, *, within: float = 60) -> None:
    """Wait until the garbage collector has acted on Namespace ``name`` (Terminating or gone)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            found = await kube.get(NAMESPACES, ObjectKey(None, name))
        except NotFoundError:
            return
        if found["metadata"].get("deletionTimestamp"):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"the garbage collector left namespace {name} alone for {within}s")


@pytest.mark.controller_manager
async def test_a_namespace_with_a_missing_owner_is_refused_and_survives_the_collector(
    control_plane: ControlPlane,
    agent: Agent,
    mock: MockControlPlane,
    kube: KubeClient,
    kube_namespace: str,
) -> None:
    """The F2 reproduction: on main the apply went out with the ownerReference and
    kube-controller-manager's garbage collector put the namespace into Terminating."""
    require_controller_manager(control_plane)
    target, control = f"{kube_namespace}-owned", f"{kube_namespace}-control"
    try:
        assert (await apply(mock, "ns-plain", namespace(target)))["outcome"] == "succeeded"
        result = await apply(mock, "ns-owned", namespace(target, ownerReferences=[GHOST_OWNER]))
        assert result["outcome"] == "failed", result
        assert result["error"].startswith("metadata.ownerReferences is refused: the garbage ")

        # The same owner on a namespace written directly: the collector is running and acts on
        # it. Once it has, it has had every chance to act on the target too.
        await kube.create(
            NAMESPACES,
            namespace(control, ownerReferences=[GHOST_OWNER]),
            field_manager="test",
        )
        await collected(kube, control)
        stored = await kube.get(NAMESPACES, ObjectKey(None, target))
        assert "deletionTimestamp" not in stored["metadata"]
        assert "ownerReferences" not in stored["metadata"]
    finally:
        for name in (target, control):
            with contextlib.suppress(NotFoundError):
                await kube.delete(NAMESPACES, ObjectKey(None, name))


async def test_finalizers_are_refused_and_nothing_is_written(
    agent: Agent, mock: MockControlPlane, kube: KubeClient, kube_namespace: str
) -> None:
    payload = instance("pinned", kube_namespace)
    payload["metadata"]["finalizers"] = ["example.com/never-let-go"]
    result = await apply(mock, "fin", payload)
    assert result["outcome"] == "failed", result
    assert result["error"].startswith("metadata.finalizers is refused")
    with pytest.raises(NotFoundError):
        await kube.get(APPLICATION_INSTANCES, ObjectKey(kube_namespace, "pinned"))


async def test_a_round_tripped_object_applies_as_its_content(
    agent: Agent, mock: MockControlPlane, kube: KubeClient, kube_namespace: str
) -> None:
    """What the API server returned (uid, a stale resourceVersion, managedFields,
    creationTimestamp, generation) is a valid job: the read-only fields are dropped."""
    assert (await apply(mock, "rt-1", instance("shop", kube_namespace)))["outcome"] == "succeeded"
    exported = await kube.get(APPLICATION_INSTANCES, ObjectKey(kube_namespace, "shop"))
    exported["metadata"]["resourceVersion"] = "1"  # stale: as a precondition it would fail
    exported["spec"]["integrations"] = {"ingress": {"enabled": True}}
    exported.pop("status", None)
    result = await apply(mock, "rt-2", exported)
    assert result["outcome"] == "succeeded", result
    stored = await kube.get(APPLICATION_INSTANCES, ObjectKey(kube_namespace, "shop"))
    assert stored["spec"]["integrations"] == {"ingress": {"enabled": True}}
    assert stored["metadata"]["uid"] == exported["metadata"]["uid"]
