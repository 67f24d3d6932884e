"""Sample objects for tests, the e2e suite and benchmarks: one definition of "a valid managed
ApplicationInstance" and of "an Operation on it" instead of a copy per test file."""

from __future__ import annotations

from typing import Any

from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.templates import TEMPLATES

HELM_URL = "https://charts.example.com"
OCI_URL = "oci://registry.example.com/charts"


def managed_instance(
    name: str,
    namespace: str,
    *,
    catalog_id: str = "odoo",
    chart: str = "odoo",
    source: str = "helm",
    version: str = "1.0.0",
    values: JsonObj | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> JsonObj:
    """A managed ApplicationInstance that passes validation (inline values by default)."""
    metadata: JsonObj = {"name": name, "namespace": namespace}
    if labels:
        metadata["labels"] = dict(labels)
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {
        "apiVersion": "apps.vworkspace.io/v1alpha1",
        "kind": "ApplicationInstance",
        "metadata": metadata,
        "spec": {
            "appRef": {"catalogId": catalog_id},
            "mode": "managed",
            "chart": {
                "sourceType": source,
                "url": OCI_URL if source == "oci" else HELM_URL,
                "name": chart,
                "version": version,
            },
            "release": {"name": name, "namespace": namespace},
            "values": values or {"source": "inline", "inline": {"replicaCount": 1}},
        },
    }


def operation(
    name: str,
    namespace: str,
    *,
    type_: str = "Backup",
    engine: str | None = None,
    target: str = "shop",
    **spec: Any,
) -> JsonObj:
    """An Operation of ``type_`` on the ApplicationInstance ``target``. ``engine`` defaults to
    the engine of the type's built-in template; ``spec`` entries (``parameters``,
    ``approvals``, or any field a test wants wrong) are set as given, last."""
    if engine is None:
        engine = next((t.engine for t in TEMPLATES if t.type == type_), "job")
    body: JsonObj = {
        "apiVersion": "ops.vworkspace.io/v1alpha1",
        "kind": "Operation",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "targetRef": {
                "apiVersion": "apps.vworkspace.io/v1alpha1",
                "kind": "ApplicationInstance",
                "name": target,
            },
            "type": type_,
            "engine": engine,
        },
    }
    body["spec"].update(spec)
    return body
