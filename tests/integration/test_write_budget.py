"""The operator's API writes per ApplicationInstance, counted by its own client-side metrics
(``rest_client_requests_total``) against the real API server: a new managed instance costs at
most four writes (finalizer, its owner entry on the shared HelmRepository, HelmRelease, status),
the first instance of a repository five (the shared source's spec first), and an operator
restarted over instances it already reconciled writes nothing (docs/development.md,
"Performance").
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from prometheus_client import CollectorRegistry

from tests.integration.waits import condition, eventually
from vworkspace.api.meta import ObjectKey
from vworkspace.app.manager import Manager
from vworkspace.app.wiring import OperatorSettings, build_manager, served_kinds
from vworkspace.engines.flux import HELM_RELEASES
from vworkspace.kube.rest.client import KubeClient
from vworkspace.kube.rest.resources import APPLICATION_INSTANCES, NAMESPACES
from vworkspace.testing import ControlPlane
from vworkspace.testing.objects import managed_instance

pytestmark = pytest.mark.integration
COUNT = 12
WRITES = ("POST", "PUT", "PATCH", "DELETE")


def requests_by_method(registry: CollectorRegistry) -> dict[str, float]:
    counts: dict[str, float] = {}
    for family in registry.collect():
        if family.name != "rest_client_requests":
            continue
        for sample in family.samples:
            if sample.name == "rest_client_requests_total":
                method = sample.labels["method"]
                counts[method] = counts.get(method, 0) + sample.value
    return counts


def writes(registry: CollectorRegistry) -> float:
    return sum(n for method, n in requests_by_method(registry).items() if method in WRITES)


@asynccontextmanager
async def operator(
    plane: ControlPlane, namespace: str
) -> AsyncIterator[tuple[Manager, CollectorRegistry]]:
    """An operator with its own client, so that only its requests are counted."""
    client = await KubeClient.from_kubeconfig(str(plane.kubeconfig_path))
    registry = CollectorRegistry()
    settings = OperatorSettings(namespace=namespace, workers=4)
    manager = build_manager(settings, client, registry=registry, served=await served_kinds(client))
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(stop))
    try:
        for informer in manager.informers:
            await asyncio.wait_for(informer.wait_synced(), 20)
        yield manager, registry
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 30) == 0
        await client.close()


def reconciles(registry: CollectorRegistry) -> float:
    """Successful ApplicationInstance reconciles so far."""
    value = registry.get_sample_value(
        "controller_runtime_reconcile_total",
        {"controller": "applicationinstance", "result": "success"},
    )
    return value or 0.0


async def _true(value: bool) -> bool:
    return value


def drained(manager: Manager) -> bool:
    """No key queued, delayed or in a worker, in any controller."""
    return all(
        not len(c.queue) and not c.queue.pending_delayed and not c.queue.in_flight
        for c in manager.controllers
    )


class NotSettled(str):
    """Falsy, but says what is still going on, so a timeout names the namespace that hangs."""

    def __bool__(self) -> bool:
        return False


async def settled(kube: KubeClient, manager: Manager) -> bool | NotSettled:
    """No namespace terminating and nothing queued or in flight."""
    namespaces = (await kube.list(NAMESPACES))["items"]
    terminating = [
        ns for ns in namespaces if (ns.get("status") or {}).get("phase") == "Terminating"
    ]
    if terminating:
        # The namespace controller's conditions say what holds each one (content, finalizers).
        return NotSettled(
            "; ".join(
                f"{ns['metadata']['name']}: "
                + ", ".join(
                    c.get("message", "")
                    for c in (ns.get("status") or {}).get("conditions") or []
                    if c.get("status") == "True"
                )
                for ns in terminating
            )
        )
    return drained(manager)


async def reconciled(kube: KubeClient, namespace: str, indexes: range = range(COUNT)) -> bool:
    for index in indexes:
        key = ObjectKey(namespace, f"app-{index}")
        ai = await kube.get(APPLICATION_INSTANCES, key)
        if not (ai.get("status") or {}).get("helmReleaseRef") or not condition(ai, "Ready"):
            return False
        await kube.get(HELM_RELEASES, ObjectKey(namespace, f"app-{index}"))
    return True


async def test_a_new_instance_costs_four_writes_and_a_restart_over_reconciled_ones_none(
    kube: KubeClient,
    control_plane: ControlPlane,
    third_party_crds: list[str],
    vworkspace_crds: list[str],
    kube_namespace: str,
) -> None:
    async with operator(control_plane, kube_namespace) as (manager, registry):
        # The operator watches every namespace: what earlier tests left behind (namespaces
        # being deleted, whose instances it finalizes) is done before counting starts.
        await eventually(lambda: settled(kube, manager), timeout=120, what="cluster settled")

        async def create(indexes: range) -> float:
            """The writes the operator makes for the instances ``indexes``, all reconciled."""
            before = writes(registry)
            for index in indexes:
                await kube.create(
                    APPLICATION_INSTANCES,
                    managed_instance(f"app-{index}", kube_namespace),
                    field_manager="test",
                )
            await eventually(
                lambda: reconciled(kube, kube_namespace, indexes), timeout=60, what="reconciled"
            )
            # The watch events of the operator's own writes come back and are reconciled too.
            await eventually(lambda: _true(drained(manager)), timeout=60, what="queues drained")
            return writes(registry) - before

        # All instances use one repository: the first creates the shared source (two writes:
        # its spec, then its owner entry), every further one only adds its owner entry.
        first = await create(range(1))
        further = await create(range(1, COUNT))
        by_method = requests_by_method(registry)
    print(f"writes per new instance: first {first:.0f}, further {further / (COUNT - 1):.2f}")
    assert first <= 5, f"{first} writes for the first instance of a source: {by_method}"
    assert further <= 4 * (COUNT - 1), f"{further} writes for {COUNT - 1} more: {by_method}"
    assert further >= 3 * (COUNT - 1), f"too few writes to be the whole story: {by_method}"

    async with operator(control_plane, kube_namespace) as (manager, registry):
        # Every instance comes from the initial list: wait until all were reconciled again.
        await eventually(
            lambda: _true(reconciles(registry) >= COUNT), timeout=30, what="all reconciled"
        )
        await eventually(lambda: _true(drained(manager)), timeout=60, what="queues drained")
        restart_writes = writes(registry)
        restart_requests = requests_by_method(registry)
    assert restart_writes == 0, f"a warm restart wrote: {restart_requests}"
