"""CRDs generated from the models: names, columns, validation, descriptions, and no drift."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from vworkspace.api import applicationinstance as ai
from vworkspace.api import crdgen
from vworkspace.api.schema import field

CRDS_DIR = Path(__file__).resolve().parents[2] / "manifests" / "crds"


def schema_of(kind: str) -> dict[str, Any]:
    info = next(i for i in crdgen.RESOURCES if i.kind == kind)
    result: dict[str, Any] = crdgen.crd(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return result


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    for name, prop in schema.get("properties", {}).items():
        yield f"{path}.{name}", prop
        yield from walk(prop, f"{path}.{name}")
        if "items" in prop:
            yield from walk(prop["items"], f"{path}.{name}[]")


def test_committed_manifests_match_the_models() -> None:
    stale = crdgen.drift(CRDS_DIR)
    assert stale == [], f"run 'python -m vworkspace manifests crds': stale {stale}"


@attrs.frozen
class AppRefWithChannel(ai.AppRef):
    """Reference to the application in the control plane's catalog."""

    channel: str | None = field(default=None)
    """A new field nobody regenerated the manifests for."""


@attrs.frozen
class SpecWithChannel(ai.ApplicationInstanceSpec):
    """Desired state: which application, in which mode, with which chart, release and values."""

    app_ref: AppRefWithChannel = field()
    """The catalog application this instance is of."""


def test_drift_is_detected_when_a_field_is_added_without_regenerating(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    changed = attrs.evolve(ai.RESOURCE, spec_type=SpecWithChannel)
    monkeypatch.setattr(crdgen, "RESOURCES", (changed, *crdgen.RESOURCES[1:]))
    assert crdgen.drift(CRDS_DIR) == ["apps.vworkspace.io_applicationinstances.yaml"]


@pytest.mark.parametrize("kind", ["ApplicationInstance", "Operation", "Cluster"])
def test_every_field_has_a_description(kind: str) -> None:
    undocumented = [
        path
        for path, prop in walk(schema_of(kind))
        if path not in {".apiVersion", ".kind", ".metadata"} and not prop.get("description")
    ]
    assert undocumented == []


def test_names_scope_and_columns_follow_the_spec() -> None:
    crds = {info.kind: crdgen.crd(info) for info in crdgen.RESOURCES}
    expect = {
        "ApplicationInstance": (
            "applicationinstances.apps.vworkspace.io",
            "Namespaced",
            ["appinst"],
            ["Ready", "Chart", "Version", "Age"],
        ),
        "Operation": (
            "operations.ops.vworkspace.io",
            "Namespaced",
            ["op"],
            ["Phase", "Type", "Engine", "Age"],
        ),
        "Cluster": (
            "clusters.ops.vworkspace.io",
            "Cluster",
            ["cluster"],
            ["Phase", "Connected", "Age"],
        ),
    }
    for kind, (name, scope, short, columns) in expect.items():
        crd = crds[kind]
        assert crd["metadata"]["name"] == name
        assert crd["spec"]["scope"] == scope
        assert crd["spec"]["names"]["shortNames"] == short
        version = crd["spec"]["versions"][0]
        assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
        assert version["subresources"] == {"status": {}}
        assert [c["name"] for c in version["additionalPrinterColumns"]] == columns


def test_validation_details() -> None:
    spec = schema_of("ApplicationInstance")["properties"]["spec"]
    assert spec["required"] == ["appRef"]
    assert spec["properties"]["mode"]["default"] == "managed"
    assert spec["properties"]["mode"]["enum"] == ["managed", "placeholder"]
    chart = spec["properties"]["chart"]
    assert chart["required"] == ["sourceType", "url", "name", "version"]
    assert chart["properties"]["version"]["minLength"] == 1
    assert spec["properties"]["values"]["properties"]["inline"][
        "x-kubernetes-preserve-unknown-fields"
    ]
    conditions = schema_of("ApplicationInstance")["properties"]["status"]["properties"][
        "conditions"
    ]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert conditions["items"]["required"] == [
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
    ]
    op = schema_of("Operation")["properties"]["spec"]
    assert op["required"] == ["targetRef", "type", "engine"]
    assert op["properties"]["engine"]["enum"] == [
        "velero",
        "workflow",
        "job",
        "helm",
        "volsync",
        "helmHookJob",
    ]
    assert schema_of("Operation")["properties"]["status"]["properties"]["phase"]["enum"] == [
        "Pending",
        "Running",
        "Succeeded",
        "Failed",
        "Cancelled",
    ]
    cluster = schema_of("Cluster")
    assert "required" not in cluster
    assert (
        cluster["properties"]["spec"]["properties"]["controlPlaneEndpoint"]["pattern"]
        == "^https?://"
    )
    assert "enum" not in cluster["properties"]["status"]["properties"]["phase"]


def test_a_field_without_a_docstring_is_refused() -> None:
    @attrs.frozen
    class Undocumented:
        """A model with a field nobody described."""

        size: int = field()

    from vworkspace.api.schema import object_schema

    with pytest.raises(ValueError, match=r"Undocumented.size has no docstring"):
        object_schema(Undocumented)


def test_committed_api_reference_matches_the_models() -> None:
    from vworkspace.api import reference

    committed = (CRDS_DIR.parents[1] / "docs" / "api-reference.md").read_text()
    assert committed == reference.render(), "run 'python -m vworkspace manifests api-reference'"
