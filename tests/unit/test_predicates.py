"""Which updates of a primary object reach its controller (kube/cache/predicates.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from vworkspace.kube.cache.predicates import spec_or_metadata_changed

BASE: dict[str, Any] = {
    "metadata": {
        "name": "shop",
        "generation": 3,
        "resourceVersion": "100",
        "labels": {"app.vworkspace.io/managed-by": "control-plane"},
        "annotations": {"ops.vworkspace.io/backup": "velero"},
        "finalizers": ["apps.vworkspace.io/finalizer"],
    },
    "spec": {"mode": "managed"},
    "status": {"observedGeneration": 3},
}


def changed(**metadata: Any) -> dict[str, Any]:
    obj = copy.deepcopy(BASE)
    obj["metadata"]["resourceVersion"] = "101"
    obj["metadata"].update(metadata)
    return obj


def test_a_status_only_write_is_skipped() -> None:
    current = changed()
    current["status"] = {"observedGeneration": 3, "lastHeartbeat": "2026-12-01T20:36:02Z"}
    assert spec_or_metadata_changed(BASE, current) is False


@pytest.mark.parametrize(
    "metadata",
    [
        {"generation": 4},
        {"labels": {}},
        {"annotations": {"ops.vworkspace.io/rotate-credentials": "true"}},
        {"finalizers": []},
        {"deletionTimestamp": "2026-12-01T20:40:00Z"},
        {"ownerReferences": [{"kind": "Cluster", "name": "c", "uid": "u"}]},
    ],
)
def test_spec_and_metadata_changes_pass(metadata: dict[str, Any]) -> None:
    assert spec_or_metadata_changed(BASE, changed(**metadata)) is True


def test_objects_without_a_generation_always_pass() -> None:
    previous = copy.deepcopy(BASE)
    del previous["metadata"]["generation"]
    assert spec_or_metadata_changed(previous, previous) is True
