"""The whole Pull loop inside kind: the operator image from the Containerfile, installed with
manifests/mock-control-plane (the base's RBAC, non-root, read-only root filesystem), registered
through a Cluster object, takes a job from the in-cluster mock control plane, turns it into an
ApplicationInstance and a Flux HelmRelease, and reports the result and condition events back."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from vworkspace.mockcontrolplane import AdminClient
from vworkspace.testing.objects import managed_instance

from .conftest import NAMESPACE, Doc, diagnostics, get_json, keep, kubectl_of

pytestmark = pytest.mark.timeout(1800)


@pytest.fixture
def kubectl(kind_cluster: Any) -> Callable[..., str]:
    return kubectl_of(kind_cluster)


@pytest.fixture
def app_namespace(kubectl: Callable[..., str], mock_install: Doc) -> Iterator[str]:
    """A namespace name for one test's application. It does not exist yet (the agent creates
    it); it is deleted afterwards unless VWORKSPACE_E2E_KEEP=1."""
    name = f"e2e-pull-{secrets.token_hex(3)}"
    yield name
    if not keep():
        kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=false")


async def eventually(what: str, probe: Callable[[], Any], timeout: float) -> Any:
    """Await ``probe()`` until it returns something truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(1)


async def test_a_job_from_the_in_cluster_mock_becomes_a_helm_release_and_reports_back(
    kubectl: Callable[..., str], mock_install: Doc, mock_admin_url: str, app_namespace: str
) -> None:
    cluster_id = mock_install["spec"]["clusterId"]  # filled from the registration answer
    admin = AdminClient(mock_admin_url)
    job_id = f"e2e-{app_namespace}"
    await admin.enqueue(
        cluster_id,
        {
            "id": job_id,
            "kind": "apply",
            "idempotencyKey": f"applicationinstance/{app_namespace}/crm@1",
            "payload": managed_instance("crm", app_namespace, catalog_id="crm", chart="crm"),
        },
    )
    try:
        result = await eventually("the job result", lambda: admin.job_result(job_id), 120)
        assert result["outcome"] == "succeeded", result
        assert result["appliedRef"]["name"] == "crm"

        def helm_release() -> Doc | None:
            return get_json(
                kubectl, "-n", app_namespace, "helmreleases.helm.toolkit.fluxcd.io", "crm"
            )

        async def found() -> Doc | None:
            return await asyncio.to_thread(helm_release)

        release = await eventually("the HelmRelease", found, 120)
        assert release["spec"]["chart"]["spec"]["chart"] == "crm"
        instance = get_json(
            kubectl, "-n", app_namespace, "applicationinstances.apps.vworkspace.io", "crm"
        )
        assert instance is not None
        labels = instance["metadata"]["labels"]
        assert labels["app.vworkspace.io/cluster-id"] == cluster_id
        assert labels["app.vworkspace.io/managed-by"] == "control-plane"

        async def condition_events() -> list[Doc]:
            return await admin.events(
                cluster_id, kind="ApplicationInstance", namespace=app_namespace, name="crm"
            )

        events = await eventually("condition events at the mock", condition_events, 120)
        assert {e["kind"] for e in events} == {"ConditionTransition"}
        types = {c["type"] for e in events for c in e.get("conditions", [])}
        assert "Ready" in types, events
    except AssertionError as err:
        raise AssertionError(f"{err}\n{diagnostics(kubectl)}") from None


def test_the_operator_pod_runs_as_installed(kubectl: Callable[..., str], mock_install: Doc) -> None:
    """Non-root with a read-only root filesystem, Ready, not restarting, leader of the Lease."""
    pods = json.loads(
        kubectl(
            "-n",
            NAMESPACE,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=vworkspace-operator",
            "-o",
            "json",
        )
    )["items"]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    pod = pods[0]
    (status,) = pod["status"]["containerStatuses"]
    assert status["ready"] is True
    assert status["restartCount"] == 0, diagnostics(kubectl)
    assert pod["spec"]["securityContext"]["runAsUser"] == 65532
    assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    # The process really runs as 65532, not only as declared.
    assert kubectl("-n", NAMESPACE, "exec", pod["metadata"]["name"], "--", "id", "-u").strip() == (
        "65532"
    )
    lease = get_json(kubectl, "-n", NAMESPACE, "lease", "dad03b25.vworkspace.io")
    assert lease is not None
    assert lease["spec"]["holderIdentity"].startswith(pod["metadata"]["name"])
