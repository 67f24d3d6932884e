"""Acceptance: the control plane is down for 30 s while instances change state; after it comes
back (same state), its admin events API shows every instance's current Ready within 10 s."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from vworkspace.mockcontrolplane import AdminClient, MockControlPlane
from vworkspace.testing import ControlPlane
from vworkspace.testing.objects import managed_instance

from .operator_process import OperatorProcess, free_port, wait_until
from .test_install_manifests import get
from .test_reconcilers import flux_succeeded, stamped
from .waits import eventually

pytestmark = pytest.mark.integration
CLUSTER = "cluster-outage"


async def test_after_30_seconds_down_the_control_plane_learns_the_current_state(
    control_plane: ControlPlane,
    vworkspace_crds: list[str],
    third_party_crds: list[str],
    kube_namespace: str,
    tmp_path: Path,
) -> None:
    port = free_port()
    mock = await MockControlPlane(port=port).start()
    mock.set_bootstrap_token(CLUSTER, "outage-token")
    operator = OperatorProcess(
        control_plane,
        kube_namespace,
        tmp_path / "operator.log",
        "--agent-enabled",
        "--allow-insecure-control-plane",  # the mock is plain http on 127.0.0.1
        "--control-plane-base-url",
        mock.url,
        "--cluster-id",
        CLUSTER,
        "--agent-token",
        "outage-token",
    )
    rest = control_plane.rest()
    names = [f"shop-{i}" for i in range(5)]
    base = f"/apis/apps.vworkspace.io/v1alpha1/namespaces/{kube_namespace}/applicationinstances"
    hrs = f"/apis/helm.toolkit.fluxcd.io/v2/namespaces/{kube_namespace}/helmreleases"
    try:
        await asyncio.to_thread(operator.wait_ready)
        for name in names:
            rest.post(base, managed_instance(name, kube_namespace))
        # Before the outage: the operator made each HelmRelease, and the control plane heard of
        # each instance (not Ready yet), so what it must learn later is a change.
        await asyncio.to_thread(
            wait_until,
            "every HelmRelease created",
            lambda: all(get(rest, f"{hrs}/{name}") for name in names),
        )
        admin = AdminClient(mock.url)

        async def every_instance_reported() -> bool:
            events = await admin.events(
                CLUSTER, kind="ApplicationInstance", namespace=kube_namespace
            )
            return {e["resourceRef"]["name"] for e in events} >= set(names)

        await eventually(every_instance_reported, what="every instance reported")
        await mock.stop()  # the control plane goes away
        down_at = time.monotonic()
        for name in names:  # Flux reports each release Ready while it is down
            hr = rest.get(f"{hrs}/{name}")
            gen = hr["metadata"]["generation"]
            rest.request(
                "PATCH",
                f"{hrs}/{name}/status",
                content_type="application/merge-patch+json",
                body={
                    "status": {
                        "observedGeneration": gen,
                        "conditions": stamped(flux_succeeded("install"), gen),
                    }
                },
            )
        # Kept: the 30 s outage is the scenario under test, not a wait for something.
        await asyncio.sleep(max(0.0, 30 - (time.monotonic() - down_at)))
        mock = await MockControlPlane(port=port, state=mock.state).start()  # back, same state
        back_at = time.monotonic()
        admin = AdminClient(mock.url)

        async def current_ready_known() -> bool:
            events = await admin.events(
                CLUSTER, kind="ApplicationInstance", namespace=kube_namespace
            )
            return all(
                any(
                    e["resourceRef"]["name"] == n
                    and e["conditions"][0]["type"] == "Ready"
                    and e["conditions"][0]["status"] == "True"
                    for e in events
                )
                for n in names
            )

        while not await current_ready_known():
            assert time.monotonic() - back_at < 10, (
                "the control plane did not learn the current state within 10 s"
            )
            await asyncio.sleep(0.1)
        print(
            f"current Ready of all {len(names)} instances at the control plane {time.monotonic() - back_at:.1f}s after the 30 s outage"
        )
    finally:
        operator.stop()
        await mock.stop()
