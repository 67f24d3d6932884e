"""The manager and `python -m vworkspace run` against the real API server: retries visible in
/metrics, readiness, leader election hand-over, graceful shutdown under load."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from vworkspace.api.meta import ObjectKey
from vworkspace.app.http import Address
from vworkspace.app.manager import Manager, ManagerSettings
from vworkspace.kube.cache.informer import Informer
from vworkspace.kube.clock import RealClock
from vworkspace.kube.metrics import Metrics
from vworkspace.kube.rest.client import KubeClient
from vworkspace.kube.rest.resources import CONFIG_MAPS
from vworkspace.kube.runtime.controller import Controller, Result
from vworkspace.kube.runtime.workqueue import WorkQueue
from vworkspace.testing import ControlPlane

from .operator_process import OperatorProcess, free_port, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def client(kube: KubeClient) -> KubeClient:
    return kube


def instance(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps.vworkspace.io/v1alpha1",
        "kind": "ApplicationInstance",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"appRef": {"catalogId": "demo"}, "mode": "placeholder"},
    }


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


async def test_a_failing_reconcile_is_retried_with_growing_delays_and_shows_in_metrics(
    client: KubeClient, kube_namespace: str
) -> None:
    calls: list[float] = []

    class Failing:
        async def reconcile(self, key: ObjectKey) -> Result:
            calls.append(time.monotonic())
            if len(calls) <= 7:
                raise RuntimeError("the API of something else is down")
            return Result.done()

    metrics = Metrics(CollectorRegistry())
    port = free_port()
    manager = Manager(
        settings=ManagerSettings(
            probes=Address("127.0.0.1", port), metrics=Address("127.0.0.1", port)
        ),
        metrics=metrics,
        clock=RealClock(),
    )
    informer = manager.add_informer(Informer(client, CONFIG_MAPS, namespace=kube_namespace))
    controller = Controller(
        "failing",
        Failing(),
        WorkQueue("failing", metrics=metrics.queue("failing")),
        workers=1,
        metrics=metrics.controller("failing"),
    )
    controller.watch(informer)
    manager.add_controller(controller)
    stop = asyncio.Event()
    run = asyncio.create_task(manager.run(stop))
    await client.create(
        CONFIG_MAPS,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "x", "namespace": kube_namespace},
        },
        field_manager="t",
    )
    async with asyncio.timeout(30):
        while len(calls) < 8:
            await asyncio.sleep(0.05)
    status, ready = await asyncio.to_thread(http_get, port, "/readyz")
    status_m, text = await asyncio.to_thread(http_get, port, "/metrics")
    stop.set()
    assert await run == 0
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    # 5 ms, 10 ms, ... doubling. A loaded machine can only make a gap longer, never shorter, so
    # each gap is checked against its floor (1 ms of timer slack) rather than against its
    # neighbour: the last one alone proves the doubling went on (7 retries -> 320 ms).
    floors = [0.005 * 2**i - 0.001 for i in range(len(gaps))]
    assert all(gap >= floor for gap, floor in zip(gaps, floors, strict=True)), gaps
    assert (status, ready) == (200, "ok")
    assert status_m == 200
    assert 'controller_runtime_reconcile_errors_total{controller="failing"} 7.0' in text
    assert 'controller_runtime_reconcile_total{controller="failing",result="success"} 1.0' in text
    assert 'workqueue_retries_total{name="failing"} 7.0' in text
    assert 'controller_runtime_reconcile_time_seconds_count{controller="failing"} 8.0' in text


def finalized(client_rest: Any, namespace: str, name: str) -> bool:
    obj = client_rest.get(
        f"/apis/apps.vworkspace.io/v1alpha1/namespaces/{namespace}/applicationinstances/{name}"
    )
    conditions = obj.get("status", {}).get("conditions", [])
    return "apps.vworkspace.io/finalizer" in obj["metadata"].get("finalizers", []) and any(
        c["type"] == "Ready" and c["status"] == "True" and c["reason"] == "Placeholder"
        for c in conditions
    )


def test_only_the_leader_reconciles_and_a_killed_leader_is_replaced(
    control_plane: ControlPlane, vworkspace_crds: list[str], kube_namespace: str, tmp_path: Path
) -> None:
    rest = control_plane.rest()
    first = OperatorProcess(control_plane, kube_namespace, tmp_path / "a.log", "--leader-elect")
    second = None
    try:
        first.wait_ready()
        wait_until(
            "first leads",
            lambda: (
                first.metric("leader_election_master_status", name="dad03b25.vworkspace.io") == 1
            ),
        )
        second = OperatorProcess(
            control_plane, kube_namespace, tmp_path / "b.log", "--leader-elect"
        )
        second.wait_ready()  # followers keep warm caches: ready, but not leading
        assert second.metric("leader_election_master_status", name="dad03b25.vworkspace.io") == 0
        rest.post(
            f"/apis/apps.vworkspace.io/v1alpha1/namespaces/{kube_namespace}/applicationinstances",
            instance("one", kube_namespace),
        )
        wait_until("first reconciles", lambda: finalized(rest, kube_namespace, "one"))
        assert (
            first.metric(
                "controller_runtime_reconcile_total",
                controller="applicationinstance",
                result="success",
            )
            or 0
        ) >= 1
        assert (
            second.metric(
                "controller_runtime_reconcile_total",
                controller="applicationinstance",
                result="success",
            )
            is None
        )

        first.proc.send_signal(signal.SIGKILL)  # no chance to release the Lease
        took = wait_until(
            "second takes over",
            lambda: (
                second.metric("leader_election_master_status", name="dad03b25.vworkspace.io") == 1
            ),
            timeout=30,
        )
        # Take-over needs the Lease record to stay unchanged for the lease duration (15 s),
        # observed every retry period (2 s).
        assert took <= 15 + 2 * 2, took
        rest.post(
            f"/apis/apps.vworkspace.io/v1alpha1/namespaces/{kube_namespace}/applicationinstances",
            instance("two", kube_namespace),
        )
        wait_until("second reconciles", lambda: finalized(rest, kube_namespace, "two"))
        lease = rest.get(
            f"/apis/coordination.k8s.io/v1/namespaces/{kube_namespace}/leases/dad03b25.vworkspace.io"
        )
        assert lease["spec"]["leaseTransitions"] == 1
        print(f"leader hand-over after SIGKILL: {took:.1f}s")
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_sigterm_under_load_exits_cleanly_within_25_seconds(
    control_plane: ControlPlane, vworkspace_crds: list[str], kube_namespace: str, tmp_path: Path
) -> None:
    rest = control_plane.rest()
    operator = OperatorProcess(control_plane, kube_namespace, tmp_path / "op.log", "--workers", "4")
    try:
        operator.wait_ready()
        assert operator.get(operator.probes, "/healthz") == (200, "ok")
        path = f"/apis/apps.vworkspace.io/v1alpha1/namespaces/{kube_namespace}/applicationinstances"
        for index in range(150):
            rest.post(path, instance(f"load-{index}", kube_namespace))
        wait_until(
            "reconciling",
            lambda: (
                (
                    operator.metric(
                        "controller_runtime_reconcile_total",
                        controller="applicationinstance",
                        result="success",
                    )
                    or 0
                )
                >= 10
            ),
        )
        started = time.monotonic()
        operator.proc.send_signal(signal.SIGTERM)
        code = operator.proc.wait(timeout=30)
        took = time.monotonic() - started
        assert code == 0, operator.output()
        assert took < 25, took
        lines = [
            json.loads(line) for line in operator.output().splitlines() if line.startswith("{")
        ]
        exit_line = next(line for line in lines if line.get("msg") == "exiting")
        assert exit_line["pending_tasks"] == 0, exit_line
        assert "Task was destroyed but it is pending" not in operator.output()
        print(f"SIGTERM under load: exit 0 after {took:.2f}s")
    finally:
        operator.stop()
