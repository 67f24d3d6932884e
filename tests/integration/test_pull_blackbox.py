"""Black box: `python -m vworkspace mock-control-plane` and `python -m vworkspace run
--agent-enabled` as separate processes against the test control plane."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from vworkspace.mockcontrolplane import AdminClient
from vworkspace.testing import ApiError, ControlPlane

from .operator_process import MockProcess, OperatorProcess, wait_until

pytestmark = pytest.mark.integration


async def test_an_enqueued_job_becomes_a_reconciled_instance_and_a_result(
    control_plane: ControlPlane, vworkspace_crds: list[str], kube_namespace: str, tmp_path: Path
) -> None:
    mock = MockProcess(
        tmp_path / "mock.log",
        "--cluster-id",
        "cluster-bb",
        "--bootstrap-token",
        "bb-token",
        "--admin-token",
        "bb-admin",
    )
    url = mock.url
    operator = None
    try:
        mock.wait_healthy()
        operator = OperatorProcess(
            control_plane,
            kube_namespace,
            tmp_path / "operator.log",
            "--agent-enabled",
            "--allow-insecure-control-plane",  # the mock is plain http on 127.0.0.1
            "--control-plane-base-url",
            url,
            "--cluster-id",
            "cluster-bb",
            "--agent-token",
            "bb-token",
            "--agent-poll-interval",
            "2s",
        )
        operator.wait_ready()
        admin = AdminClient(url, admin_token="bb-admin")
        await admin.enqueue(
            "cluster-bb",
            {
                "id": "bb-1",
                "kind": "apply",
                "idempotencyKey": f"applicationinstance/{kube_namespace}/crm@1",
                "payload": {
                    "apiVersion": "apps.vworkspace.io/v1alpha1",
                    "kind": "ApplicationInstance",
                    "metadata": {"name": "crm", "namespace": kube_namespace},
                    "spec": {"appRef": {"catalogId": "crm"}, "mode": "placeholder"},
                },
            },
        )
        rest = control_plane.rest()
        path = f"/apis/apps.vworkspace.io/v1alpha1/namespaces/{kube_namespace}/applicationinstances/crm"

        def reconciled() -> bool:
            try:
                obj = rest.get(path)
            except ApiError:
                return False
            return "apps.vworkspace.io/finalizer" in obj["metadata"].get("finalizers", [])

        await asyncio.to_thread(wait_until, "instance applied and reconciled", reconciled, 30)
        result = None
        for _ in range(100):
            result = await admin.job_result("bb-1")
            if result:
                break
            await asyncio.sleep(0.1)
        assert result is not None
        assert result["outcome"] == "succeeded"
        assert result["appliedRef"]["name"] == "crm"
        assert (
            rest.get(path)["metadata"]["labels"]["app.vworkspace.io/managed-by"] == "control-plane"
        )
        assert operator.metric("vworkspace_operator_applied_jobs_total") == 1
        assert operator.metric("vworkspace_operator_connectivity_state", mode="pull") == 1
        assert "bb-token" not in operator.output()  # the token never reaches the logs
    finally:
        if operator is not None:
            operator.stop()
        mock.stop()
