"""The generated CRDs on a real API server: installed, samples accepted and read back equal,
invalid objects refused with the field named, kubectl explain and printer columns useful."""

from __future__ import annotations

import copy
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from vworkspace.api import applicationinstance as ai
from vworkspace.api import cluster, operation
from vworkspace.api.converter import from_dict
from vworkspace.testing import ApiError, ControlPlane

pytestmark = pytest.mark.integration

SAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "samples"
MODELS: dict[str, type] = {
    "ApplicationInstance": ai.ApplicationInstance,
    "Operation": operation.Operation,
    "Cluster": cluster.Cluster,
}
PLURALS = {
    "ApplicationInstance": "applicationinstances",
    "Operation": "operations",
    "Cluster": "clusters",
    "Namespace": "namespaces",
    "Secret": "secrets",
    "ConfigMap": "configmaps",
}


def object_path(doc: dict[str, Any], *, collection: bool = False) -> str:
    api_version, kind = doc["apiVersion"], doc["kind"]
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    namespace = doc["metadata"].get("namespace")
    if namespace:
        base += f"/namespaces/{namespace}"
    base += f"/{PLURALS[kind]}"
    return base if collection else f"{base}/{doc['metadata']['name']}"


@pytest.fixture(scope="module")
def samples(
    control_plane: ControlPlane, vworkspace_crds: list[str]
) -> Iterator[list[dict[str, Any]]]:
    rest = control_plane.rest()
    docs = [
        d for p in sorted(SAMPLES.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d
    ]
    for doc in docs:
        rest.apply(object_path(doc), doc, field_manager="samples-test")
    yield docs
    for doc in reversed(docs):
        if doc["kind"] in MODELS or doc["kind"] == "Namespace":
            rest.delete(object_path(doc))


def test_crds_are_established(vworkspace_crds: list[str]) -> None:
    assert sorted(vworkspace_crds) == [
        "applicationinstances.apps.vworkspace.io",
        "clusters.ops.vworkspace.io",
        "operations.ops.vworkspace.io",
    ]


def test_every_sample_is_accepted_and_reads_back_equal(
    control_plane: ControlPlane, samples: list[dict[str, Any]]
) -> None:
    rest = control_plane.rest()
    checked = 0
    for doc in samples:
        if doc["kind"] not in MODELS:
            continue
        stored = rest.get(object_path(doc))
        model_type = MODELS[doc["kind"]]
        sent, got = from_dict(model_type, doc), from_dict(model_type, stored)
        assert got.spec == sent.spec, doc["metadata"]["name"]
        assert got.metadata.labels == sent.metadata.labels
        assert got.metadata.annotations == sent.metadata.annotations
        checked += 1
    assert checked == 10  # every ApplicationInstance, Operation and Cluster sample


BASE_AI: dict[str, Any] = {
    "apiVersion": "apps.vworkspace.io/v1alpha1",
    "kind": "ApplicationInstance",
    "metadata": {"name": "bad"},
    "spec": {
        "appRef": {"catalogId": "odoo"},
        "chart": {
            "sourceType": "helm",
            "url": "https://charts.example.com",
            "name": "odoo",
            "version": "1.0.0",
        },
        "release": {"name": "bad", "namespace": "NS"},
        "values": {"source": "inline", "inline": {"a": 1}},
    },
}
BASE_OP: dict[str, Any] = {
    "apiVersion": "ops.vworkspace.io/v1alpha1",
    "kind": "Operation",
    "metadata": {"name": "bad"},
    "spec": {
        "targetRef": {
            "apiVersion": "apps.vworkspace.io/v1alpha1",
            "kind": "ApplicationInstance",
            "name": "app",
        },
        "type": "Backup",
        "engine": "velero",
    },
}
BASE_CLUSTER: dict[str, Any] = {
    "apiVersion": "ops.vworkspace.io/v1alpha1",
    "kind": "Cluster",
    "metadata": {"name": "bad-cluster"},
    "spec": {"controlPlaneEndpoint": "https://cp.example.com"},
}


def mutate(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``base`` with the dotted ``path`` set to ``value`` (``...`` deletes it)."""
    doc = copy.deepcopy(base)
    *parents, last = path.split(".")
    node = doc
    for key in parents:
        node = node[key]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return doc


INVALID = [
    (
        "ai missing appRef.catalogId",
        mutate(BASE_AI, "spec.appRef.catalogId", ...),
        "spec.appRef.catalogId",
    ),
    (
        "ai empty appRef.catalogId",
        mutate(BASE_AI, "spec.appRef.catalogId", ""),
        "spec.appRef.catalogId",
    ),
    ("ai missing appRef", mutate(BASE_AI, "spec.appRef", ...), "spec.appRef"),
    ("ai missing spec", mutate(BASE_AI, "spec", ...), "spec"),
    ("ai bad sourceType", mutate(BASE_AI, "spec.chart.sourceType", "git"), "spec.chart.sourceType"),
    ("ai empty chart version", mutate(BASE_AI, "spec.chart.version", ""), "spec.chart.version"),
    ("ai missing chart url", mutate(BASE_AI, "spec.chart.url", ...), "spec.chart.url"),
    (
        "ai unknown values source",
        mutate(BASE_AI, "spec.values.source", "merge"),
        "spec.values.source",
    ),
    ("ai bad mode", mutate(BASE_AI, "spec.mode", "hybrid"), "spec.mode"),
    ("ai empty release name", mutate(BASE_AI, "spec.release.name", ""), "spec.release.name"),
    (
        "ai secretRef without key",
        mutate(BASE_AI, "spec.values.secretRef", {"name": "s"}),
        "spec.values.secretRef.key",
    ),
    ("ai chart is not an object", mutate(BASE_AI, "spec.chart", "odoo"), "spec.chart"),
    ("op bad type", mutate(BASE_OP, "spec.type", "Snapshot"), "spec.type"),
    ("op bad engine", mutate(BASE_OP, "spec.engine", "argo"), "spec.engine"),
    ("op missing type", mutate(BASE_OP, "spec.type", ...), "spec.type"),
    ("op missing targetRef", mutate(BASE_OP, "spec.targetRef", ...), "spec.targetRef"),
    (
        "op targetRef without name",
        mutate(BASE_OP, "spec.targetRef.name", ...),
        "spec.targetRef.name",
    ),
    (
        "cluster endpoint not http(s)",
        mutate(BASE_CLUSTER, "spec.controlPlaneEndpoint", "ftp://cp"),
        "spec.controlPlaneEndpoint",
    ),
    (
        "cluster token ref without name",
        mutate(BASE_CLUSTER, "spec.registrationTokenSecretRef", {"key": "t"}),
        "spec.registrationTokenSecretRef.name",
    ),
]


def test_the_invalid_table_is_large_enough() -> None:
    assert len(INVALID) >= 15


@pytest.mark.parametrize(("case", "doc", "field"), INVALID, ids=[c for c, _, _ in INVALID])
def test_invalid_objects_are_rejected_naming_the_field(
    control_plane: ControlPlane,
    vworkspace_crds: list[str],
    kube_namespace: str,
    case: str,
    doc: dict[str, Any],
    field: str,
) -> None:
    doc = copy.deepcopy(doc)
    if doc["kind"] != "Cluster":
        doc["metadata"]["namespace"] = kube_namespace
        if "release" in doc.get("spec", {}) and isinstance(doc["spec"].get("release"), dict):
            doc["spec"]["release"]["namespace"] = kube_namespace
    rest = control_plane.rest()
    with pytest.raises(ApiError) as rejected:
        rest.post(object_path(doc, collection=True), doc)
    assert rejected.value.status == 422, rejected.value.message
    assert f"{field}:" in rejected.value.message, rejected.value.message


def test_a_valid_base_object_is_accepted(
    control_plane: ControlPlane, vworkspace_crds: list[str], kube_namespace: str
) -> None:
    # Guards the table above: each case is rejected for its mutation, not for the base.
    rest = control_plane.rest()
    for base in (BASE_AI, BASE_OP):
        doc = copy.deepcopy(base)
        doc["metadata"]["namespace"] = kube_namespace
        if "release" in doc["spec"]:
            doc["spec"]["release"]["namespace"] = kube_namespace
        rest.post(object_path(doc, collection=True), doc)
    rest.post(object_path(BASE_CLUSTER, collection=True), BASE_CLUSTER)
    rest.delete(object_path(BASE_CLUSTER))


def test_printer_columns(control_plane: ControlPlane, samples: list[dict[str, Any]]) -> None:
    rest = control_plane.rest()
    table_accept = "application/json;as=Table;v=v1;g=meta.k8s.io"
    expect = {
        "/apis/apps.vworkspace.io/v1alpha1/namespaces/demo/applicationinstances": [
            "Name",
            "Ready",
            "Chart",
            "Version",
            "Age",
        ],
        "/apis/ops.vworkspace.io/v1alpha1/namespaces/demo/operations": [
            "Name",
            "Phase",
            "Type",
            "Engine",
            "Age",
        ],
        "/apis/ops.vworkspace.io/v1alpha1/clusters": ["Name", "Phase", "Connected", "Age"],
    }
    for path, columns in expect.items():
        table = rest.request("GET", path, accept=table_accept)
        assert [c["name"] for c in table["columnDefinitions"]] == columns
    table = rest.request("GET", expect_path := next(iter(expect)), accept=table_accept)
    rows = {row["cells"][0]: row["cells"] for row in table["rows"]}
    assert rows["odoo-helm"][2:4] == ["odoo", "28.2.1"], expect_path


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_explain_shows_the_field_descriptions(
    control_plane: ControlPlane, vworkspace_crds: list[str]
) -> None:
    result = subprocess.run(
        [
            "kubectl",
            "--kubeconfig",
            str(control_plane.kubeconfig_path),
            "explain",
            "applicationinstance.spec.chart",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert "The chart to install. Required in managed mode" in out
    assert "sourceType" in out
    assert "Where the chart is published" in out
    assert "version" in out
    assert "Chart version to install" in out
