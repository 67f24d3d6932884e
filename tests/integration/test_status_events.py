"""Condition transitions reach the control plane: keys, flaps, and an outage with overflow."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from vworkspace.agent.credentials import Overrides
from vworkspace.api.meta import ObjectKey
from vworkspace.app.wiring import AgentSettings, OperatorSettings, build_manager, served_kinds
from vworkspace.kube.rest.client import KubeClient
from vworkspace.kube.rest.resources import APPLICATION_INSTANCES
from vworkspace.mockcontrolplane import Fault, MockControlPlane
from vworkspace.testing.objects import operation

from .test_reconcilers import eventually, flux_failed, flux_succeeded, managed, set_hr_status
from .waits import condition

pytestmark = pytest.mark.integration
CLUSTER = "cluster-events"


@pytest.fixture
async def mock() -> AsyncIterator[MockControlPlane]:
    async with MockControlPlane() as server:
        server.set_bootstrap_token(CLUSTER, "events-token")
        yield server


@pytest.fixture
async def operator(
    kube: KubeClient,
    mock: MockControlPlane,
    third_party_crds: list[str],
    vworkspace_crds: list[str],
    kube_namespace: str,
    request: pytest.FixtureRequest,
) -> AsyncIterator[None]:
    agent = AgentSettings(
        overrides=Overrides(mock.url, CLUSTER, "events-token"),
        poll_interval=1,
        event_buffer_size=5 if request.node.get_closest_marker("tiny_event_buffer") else 1000,
    )
    settings = OperatorSettings(namespace=kube_namespace, agent=agent)
    async with aiohttp.ClientSession() as http:
        manager = build_manager(
            settings, kube, registry=CollectorRegistry(), served=await served_kinds(kube), http=http
        )
        stop = asyncio.Event()
        task = asyncio.create_task(manager.run(stop))
        for informer in manager.informers:
            await asyncio.wait_for(informer.wait_synced(), 20)
        yield
        stop.set()
        assert await asyncio.wait_for(task, 30) == 0


def ready_events(mock: MockControlPlane, namespace: str, name: str) -> list[dict[str, Any]]:
    return [
        e
        for e in mock.events(CLUSTER, namespace=namespace, name=name)
        if e["conditions"][0]["type"] == "Ready"
    ]


async def test_transitions_reach_the_control_plane_and_a_flap_is_not_deduplicated(
    operator: None, mock: MockControlPlane, kube: KubeClient, kube_namespace: str
) -> None:
    await kube.create(
        APPLICATION_INSTANCES, managed("flappy", kube_namespace), field_manager="test"
    )
    first = await eventually(
        lambda: _async(ready_events(mock, kube_namespace, "flappy")), what="first Ready event"
    )
    obj = await kube.get(APPLICATION_INSTANCES, ObjectKey(kube_namespace, "flappy"))
    prefix = f"condition/apps.vworkspace.io/v1alpha1/ApplicationInstance/{kube_namespace}/flappy/{obj['metadata']['uid']}/Ready/"
    assert first[0]["eventKey"].startswith(prefix + "Unknown@1#")
    assert first[0]["kind"] == "ConditionTransition"
    assert first[0]["resourceRef"]["uid"] == obj["metadata"]["uid"]
    # Coherent statuses of the real helm-controller (tests/real): installed; an upgrade that
    # failed and stalled (no remediation); a later upgrade that succeeded. All at one generation
    # here (a spec change would add its own Ready=Unknown in between): the flap is the point.
    # The control plane gets helm-controller's reason and Helm's message with the failure.
    for status, flux, conditions in (
        ("True", "Helm install succeeded", flux_succeeded("install")),
        ("False", "UpgradeFailed: Helm upgrade failed", flux_failed("upgrade")),
        ("True", "Helm upgrade succeeded", flux_succeeded("upgrade")),
    ):
        await set_hr_status(kube, kube_namespace, "flappy", conditions)
        await eventually(
            lambda s=status, f=flux: _async(
                [
                    e
                    for e in ready_events(mock, kube_namespace, "flappy")
                    if e["conditions"][0]["status"] == s and f in e["conditions"][0]["message"]
                ]
            ),
            what=f"Ready={status}",
        )
        # Kept: transition times are whole seconds, and the flap is to cross one.
        await asyncio.sleep(1.1)
    events = ready_events(mock, kube_namespace, "flappy")
    statuses = [e["conditions"][0]["status"] for e in events]
    # Status changes, collapsed: a reason or message change at the same status is an event of
    # its own too (issue 19), e.g. Unknown/HelmReleaseInstalling -> Unknown/Reconciling.
    collapsed = [s for i, s in enumerate(statuses) if i == 0 or statuses[i - 1] != s]
    assert collapsed == ["Unknown", "True", "False", "True"]  # the second True is its own event
    assert len({e["eventKey"] for e in events}) == len(events)
    said = [
        (e["conditions"][0]["status"], e["conditions"][0]["reason"], e["conditions"][0]["message"])
        for e in events
    ]
    assert all(said[i] != said[i - 1] for i in range(1, len(said))), said  # no true repeats


async def _async(value: Any) -> Any:
    return value


async def _every_ready(kube: KubeClient, namespace: str, names: list[str], status: str) -> bool:
    """Every instance's stored Ready condition has ``status``."""
    for name in names:
        ai = await kube.get(APPLICATION_INSTANCES, ObjectKey(namespace, name))
        if condition(ai, "Ready").get("status") != status:
            return False
    return True


@pytest.mark.tiny_event_buffer
async def test_after_an_outage_the_control_plane_gets_the_final_state_of_everything(
    operator: None, mock: MockControlPlane, kube: KubeClient, kube_namespace: str
) -> None:
    mock.state.inject(Fault("/events", status=503, count=10_000))  # the control plane is down
    names = [f"app-{i}" for i in range(8)]
    for name in names:  # each yields several transitions: far more than the buffer of 5 holds
        await kube.create(
            APPLICATION_INSTANCES, managed(name, kube_namespace), field_manager="test"
        )
    # Each instance's first transitions are committed (and handed to the batcher) while the
    # control plane is down.
    await eventually(lambda: _every_ready(kube, kube_namespace, names, "Unknown"), what="Unknown")
    for name in names:
        await set_hr_status(
            kube,
            kube_namespace,
            name,
            flux_succeeded("install"),
        )
    await eventually(lambda: _every_ready(kube, kube_namespace, names, "True"), what="Ready")
    assert mock.events(CLUSTER, namespace=kube_namespace) == []
    mock.state.faults.clear()  # the control plane is back
    started = time.monotonic()

    async def final_state_known() -> bool:
        return all(
            any(
                e["conditions"][0]["status"] == "True"
                for e in ready_events(mock, kube_namespace, n)
            )
            for n in names
        )

    await eventually(final_state_known, timeout=10, what="final Ready=True of every instance")
    print(f"final state at the control plane {time.monotonic() - started:.1f}s after it came back")


async def test_operation_transitions_reach_the_control_plane(
    operator: None, mock: MockControlPlane, kube: KubeClient, kube_namespace: str
) -> None:
    from vworkspace.kube.rest.resources import OPERATIONS

    await kube.create(
        APPLICATION_INSTANCES, managed("target", kube_namespace), field_manager="test"
    )
    await kube.create(
        OPERATIONS, operation("nightly", kube_namespace, target="target"), field_manager="test"
    )

    async def transitions() -> list[dict[str, Any]]:
        events = mock.events(CLUSTER, kind="Operation", namespace=kube_namespace, name="nightly")
        # Without a "velero" namespace here the Backup cannot be created: the Operation fails.
        # Either way its condition transitions must reach the control plane.
        done = {(e["conditions"][0]["type"], e["conditions"][0]["status"]) for e in events}
        return events if ("Failed", "True") in done or ("Running", "True") in done else []

    events = await eventually(transitions, what="Operation transitions")
    assert all(
        e["eventKey"].startswith("condition/ops.vworkspace.io/v1alpha1/Operation/") for e in events
    )
    assert all(e["kind"] == "ConditionTransition" for e in events)
