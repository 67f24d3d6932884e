"""Models <-> wire dictionaries: camelCase, omitted unset fields, lossless round trips."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import cattrs
import pytest
import yaml

from vworkspace.api import applicationinstance as ai
from vworkspace.api import cluster, operation
from vworkspace.api.converter import describe_error, from_dict, to_dict
from vworkspace.api.meta import ObjectMeta

SAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "samples"
MODELS: dict[str, type] = {
    "ApplicationInstance": ai.ApplicationInstance,
    "Operation": operation.Operation,
    "Cluster": cluster.Cluster,
}


def sample_documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(SAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] in MODELS:
                docs.append((f"{path.name}:{doc['metadata']['name']}", doc))
    return docs


SAMPLE_DOCS = sample_documents()


def test_there_is_a_sample_of_every_kind_and_mode() -> None:
    kinds = {doc["kind"] for _, doc in SAMPLE_DOCS}
    assert kinds == set(MODELS)
    instances = [doc for _, doc in SAMPLE_DOCS if doc["kind"] == "ApplicationInstance"]
    assert {d["spec"].get("chart", {}).get("sourceType") for d in instances} >= {
        "helm",
        "oci",
        None,
    }
    assert {d["spec"].get("values", {}).get("source") for d in instances} >= {"inline", "secretRef"}
    assert {d["spec"]["type"] for _, d in SAMPLE_DOCS if d["kind"] == "Operation"} == {
        "Backup",
        "Restore",
        "Upgrade",
        "RunCommand",
    }


@pytest.mark.parametrize(("name", "doc"), SAMPLE_DOCS, ids=[n for n, _ in SAMPLE_DOCS])
def test_sample_round_trip_is_lossless(name: str, doc: dict[str, Any]) -> None:
    model = from_dict(MODELS[doc["kind"]], doc)
    again = to_dict(model)
    assert again == normalized(doc)
    assert from_dict(MODELS[doc["kind"]], again) == model


def normalized(doc: dict[str, Any]) -> dict[str, Any]:
    """What the converter writes for a sample: the same, with the defaults explicit."""
    out = dict(doc)
    if doc["kind"] == "Cluster":
        out.setdefault("spec", {})
    if doc["kind"] == "ApplicationInstance":
        out["spec"] = {"mode": "managed", **doc["spec"]}
    return out


def test_camel_case_and_unset_fields_omitted() -> None:
    model = ai.ApplicationInstance(
        metadata=ObjectMeta(name="x", namespace="ns"),
        spec=ai.ApplicationInstanceSpec(
            app_ref=ai.AppRef(catalog_id="odoo"),
            values=ai.ValuesSpec(
                source=ai.ValuesSource.CONFIG_MAP_REF,
                config_map_ref=ai.KeyRef(name="v", key="values.yaml"),
            ),
        ),
    )
    assert to_dict(model) == {
        "apiVersion": "apps.vworkspace.io/v1alpha1",
        "kind": "ApplicationInstance",
        "metadata": {"name": "x", "namespace": "ns"},
        "spec": {
            "appRef": {"catalogId": "odoo"},
            "mode": "managed",
            "values": {
                "source": "configMapRef",
                "configMapRef": {"name": "v", "key": "values.yaml"},
            },
        },
    }


def test_unknown_fields_from_a_newer_server_are_ignored() -> None:
    doc = {
        "apiVersion": "ops.vworkspace.io/v1alpha1",
        "kind": "Operation",
        "metadata": {"name": "op", "namespace": "ns", "uid": "u-1", "managedFields": [{"x": 1}]},
        "spec": {
            "targetRef": {
                "apiVersion": "apps.vworkspace.io/v1alpha1",
                "kind": "ApplicationInstance",
                "name": "t",
                "futureField": True,
            },
            "type": "Backup",
            "engine": "velero",
            "priority": "high",
        },
        "status": {"phase": "Running", "progress": {"percent": 40}},
    }
    op = from_dict(operation.Operation, doc)
    assert op.spec.target_ref.name == "t"
    assert op.status is not None
    assert op.status.phase is operation.Phase.RUNNING
    assert op.metadata.uid == "u-1"


def test_status_timestamps_round_trip_in_utc_seconds() -> None:
    doc = {
        "metadata": {"name": "c"},
        "status": {"lastHeartbeat": "2026-11-22T03:04:05Z", "phase": "Connected"},
    }
    model = from_dict(cluster.Cluster, doc)
    assert model.status is not None
    assert model.status.last_heartbeat == datetime.datetime(
        2026, 11, 22, 3, 4, 5, tzinfo=datetime.UTC
    )
    assert to_dict(model)["status"]["lastHeartbeat"] == "2026-11-22T03:04:05Z"


def test_wrong_shapes_are_rejected_with_the_field_named() -> None:
    doc = {"metadata": {"name": "x"}, "spec": {"appRef": {}, "mode": "managed"}}
    with pytest.raises(cattrs.ClassValidationError) as err:
        from_dict(ai.ApplicationInstance, doc)
    assert describe_error(err.value) == ["required field missing @ $.spec.appRef.catalogId"]


def test_unknown_enum_value_is_an_error_not_a_silent_default() -> None:
    doc = {"metadata": {"name": "x"}, "spec": {"appRef": {"catalogId": "a"}, "mode": "hybrid"}}
    with pytest.raises(cattrs.ClassValidationError):
        from_dict(ai.ApplicationInstance, doc)
