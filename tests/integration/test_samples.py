"""Acceptance: `python -m vworkspace run` and the samples of manifests/samples yield the
HelmReleases and Velero objects the samples describe."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from vworkspace.engines.workload import workload_name
from vworkspace.testing import ApiError, ControlPlane

from .operator_process import OperatorProcess, wait_until

pytestmark = pytest.mark.integration
SAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "samples"
PLURALS = {
    "Namespace": "namespaces",
    "Secret": "secrets",
    "ConfigMap": "configmaps",
    "ApplicationInstance": "applicationinstances",
    "Operation": "operations",
    "Cluster": "clusters",
}


def path_of(doc: dict[str, Any]) -> str:
    group = doc["apiVersion"]
    base = f"/apis/{group}" if "/" in group else f"/api/{group}"
    namespace = doc["metadata"].get("namespace")
    return f"{base}{f'/namespaces/{namespace}' if namespace else ''}/{PLURALS[doc['kind']]}/{doc['metadata']['name']}"


def get(rest: Any, path: str) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = rest.get(path)
    except ApiError:
        return None
    return found


def test_the_samples_become_flux_and_velero_objects(
    control_plane: ControlPlane,
    vworkspace_crds: list[str],
    third_party_crds: list[str],
    kube_namespace: str,
    tmp_path: Path,
) -> None:
    rest = control_plane.rest()
    velero = f"{kube_namespace}-velero"
    text = "\n---\n".join(p.read_text() for p in sorted(SAMPLES.glob("*.yaml")))
    text = text.replace("namespace: demo", f"namespace: {kube_namespace}").replace(
        "vworkspace-system", kube_namespace
    )
    docs = [d for d in yaml.safe_load_all(text) if d and d["kind"] != "Namespace"]
    rest.post(
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": velero}},
    )
    operator = OperatorProcess(
        control_plane, kube_namespace, tmp_path / "operator.log", "--velero-namespace", velero
    )
    try:
        operator.wait_ready()
        for doc in docs:
            rest.apply(path_of(doc), doc, field_manager="kubectl")
        hr = f"/apis/helm.toolkit.fluxcd.io/v2/namespaces/{kube_namespace}/helmreleases"
        wait_until(
            "HelmReleases",
            lambda: all(get(rest, f"{hr}/{n}") for n in ("odoo-helm", "podinfo-oci", "nextcloud")),
            timeout=60,
        )
        odoo = rest.get(f"{hr}/odoo-helm")
        assert odoo["spec"]["chart"]["spec"]["chart"] == "odoo"
        assert odoo["spec"]["values"]["persistence"] == {"size": "10Gi"}
        chart_ref = rest.get(f"{hr}/podinfo-oci")["spec"]["chartRef"]
        assert chart_ref["kind"] == "OCIRepository"
        assert chart_ref["name"].startswith("vws-src-")  # shared per repository (docs/api.md)
        nextcloud = rest.get(f"{hr}/nextcloud")
        assert nextcloud["spec"]["valuesFrom"] == [
            {"kind": "Secret", "name": "nextcloud-values", "valuesKey": "values.yaml"}
        ]
        assert "example-not-a-real-password" not in json.dumps(nextcloud)
        ops = f"/apis/ops.vworkspace.io/v1alpha1/namespaces/{kube_namespace}/operations"
        # Velero objects are named <namespace>--<name> (the Operation UID when that is too long).
        backup_name = workload_name(rest.get(f"{ops}/odoo-backup-1"))
        backup_path = f"/apis/velero.io/v1/namespaces/{velero}/backups/{backup_name}"
        wait_until("Backup", lambda: get(rest, backup_path), timeout=60)
        backup = rest.get(backup_path)
        assert backup["spec"]["includedNamespaces"] == [kube_namespace]
        assert (
            backup["spec"]["storageLocation"],
            backup["spec"]["ttl"],
            backup["spec"]["snapshotVolumes"],
        ) == ("default", "720h0m0s", True)
        shell = rest.get(f"{ops}/odoo-shell-1")
        jobs = f"/apis/batch/v1/namespaces/{kube_namespace}/jobs"
        wait_until(
            "RunCommand Job", lambda: get(rest, f"{jobs}/{workload_name(shell)}"), timeout=60
        )
        job = rest.get(f"{jobs}/{workload_name(shell)}")
        assert job["spec"]["template"]["spec"]["containers"][0]["args"] == [
            "echo hello from $TARGET"
        ]
        restore = rest.get(f"{ops}/odoo-restore-1")
        wait_until(
            "restore blocked",
            lambda: (
                (get(rest, f"{ops}/odoo-restore-1") or {}).get("status", {}).get("phase")
                == "Pending"
            ),
            timeout=30,
        )
        restore = rest.get(f"{ops}/odoo-restore-1")
        blocked = next(c for c in restore["status"]["conditions"] if c["type"] == "Blocked")
        assert blocked["reason"] in ("AwaitingApproval", "ConflictingOperation")
        placeholder = rest.get(
            f"/apis/apps.vworkspace.io/v1alpha1/namespaces/{kube_namespace}/applicationinstances/cluster-ops"
        )
        wait_until(
            "placeholder ready",
            lambda: any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (
                    get(
                        rest,
                        f"/apis/apps.vworkspace.io/v1alpha1/namespaces/{kube_namespace}/applicationinstances/cluster-ops",
                    )
                    or {}
                )
                .get("status", {})
                .get("conditions", [])
            ),
            timeout=30,
        )
        assert placeholder["spec"]["mode"] == "placeholder"
    finally:
        operator.stop()
        with contextlib.suppress(ApiError):
            rest.delete(f"/api/v1/namespaces/{velero}")
        with contextlib.suppress(ApiError):
            rest.delete("/apis/ops.vworkspace.io/v1alpha1/clusters/production-eu-1")
