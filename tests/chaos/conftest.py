"""The chaos tier (docs/operations.md, "What we test"): every module here is marked ``chaos``
and ``integration`` and runs the real operator process against the real API server.

``VWORKSPACE_CHAOS_IDENTITY=shipped`` runs every operator process as the shipped ServiceAccount
with only the RBAC rendered from manifests/ (vworkspace/testing/identity.py), its namespaced Roles
in the test's namespace (the operator's namespace here), and fails a scenario on any 403. Off by
default: the tier measures recovery, and the identity is covered by
tests/integration/test_shipped_identity.py."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.harness import ChaosControlPlane, Operators
from vworkspace.testing import ControlPlane
from vworkspace.testing.identity import install_shipped_identity, remove_shipped_identity


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.chaos)
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def chaos(kube_namespace: str, request: pytest.FixtureRequest) -> Iterator[ChaosControlPlane]:
    visibility = getattr(request, "param", 5.0)
    plane = ChaosControlPlane(
        cluster="cluster-chaos",
        token="chaos-token-" + secrets.token_hex(12),
        namespace=kube_namespace,
        visibility=visibility,
    )
    try:
        yield plane
    finally:
        plane.close()


@pytest.fixture
def operators(
    control_plane: ControlPlane,
    kube_namespace: str,
    chaos: ChaosControlPlane,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Operators]:
    identity = None
    suffix = f"-{kube_namespace}"
    if os.environ.get("VWORKSPACE_CHAOS_IDENTITY", "").strip() == "shipped":
        identity = install_shipped_identity(
            control_plane,
            request.getfixturevalue("shipped_rendering"),
            namespace=kube_namespace,
            name_suffix=suffix,
        )
    ops = Operators(control_plane, kube_namespace, tmp_path, chaos, identity=identity)
    try:
        yield ops
    finally:
        try:
            ops.stop_all()
        finally:
            if identity is not None:
                remove_shipped_identity(control_plane, identity)
