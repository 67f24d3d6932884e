"""CustomResourceDefinitions generated from the API models.

``python -m vworkspace manifests crds`` writes them to ``manifests/crds/``; a test regenerates them
and fails when the committed files differ, so the models and the manifests cannot drift.

Output is deterministic: fixed key order, one file per CRD plus a kustomization.yaml.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from vworkspace.api import applicationinstance, cluster, operation
from vworkspace.api.resource import ResourceInfo
from vworkspace.api.schema import JsonSchema, class_doc, object_schema

RESOURCES: tuple[ResourceInfo, ...] = (
    applicationinstance.RESOURCE,
    operation.RESOURCE,
    cluster.RESOURCE,
)
HEADER = "# Generated from vworkspace/api by `python -m vworkspace manifests crds`. Do not edit.\n"


def openapi_schema(info: ResourceInfo) -> JsonSchema:
    spec = {"description": class_doc(info.spec_type), **object_schema(info.spec_type)}
    status = {"description": class_doc(info.status_type), **object_schema(info.status_type)}
    schema: JsonSchema = {
        "description": info.description,
        "type": "object",
        "properties": {
            "apiVersion": {
                "description": "APIVersion defines the versioned schema of this representation "
                "of an object.",
                "type": "string",
            },
            "kind": {
                "description": "Kind is a string value representing the REST resource this "
                "object represents.",
                "type": "string",
            },
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }
    if info.spec_required:
        schema["required"] = ["spec"]
    return schema


def crd(info: ResourceInfo) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind."""
    names: dict[str, Any] = {
        "kind": info.kind,
        "listKind": f"{info.kind}List",
        "plural": info.plural,
        "singular": info.singular,
        "shortNames": list(info.short_names),
    }
    if info.categories:
        names["categories"] = list(info.categories)
    columns = []
    for column in info.printer_columns:
        entry = {"name": column.name, "type": column.type, "jsonPath": column.json_path}
        if column.description:
            entry["description"] = column.description
        columns.append(entry)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": info.crd_name},
        "spec": {
            "group": info.group,
            "names": names,
            "scope": info.scope.value,
            "versions": [
                {
                    "name": info.version,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": openapi_schema(info)},
                }
            ],
        },
    }


def file_name(info: ResourceInfo) -> str:
    return f"{info.group}_{info.plural}.yaml"


def render(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, sort_keys=False, width=100, allow_unicode=True)


def rendered_files() -> dict[str, str]:
    """File name -> content of everything under manifests/crds."""
    files = {file_name(info): HEADER + render(crd(info)) for info in RESOURCES}
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [file_name(info) for info in RESOURCES],
    }
    files["kustomization.yaml"] = HEADER + render(kustomization)
    return files


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in rendered_files().items():
        path = directory / name
        path.write_text(content)
        written.append(path)
    return written


def drift(directory: Path) -> list[str]:
    """Names of files under ``directory`` that differ from what the models generate."""
    stale = []
    for name, content in rendered_files().items():
        path = directory / name
        if not path.is_file() or path.read_text() != content:
            stale.append(name)
    return stale
