"""The chaos tier (docs/operations.md, "What we test"): every module here is marked ``chaos``
and ``integration`` and runs the real operator process against the real API server."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.harness import ChaosControlPlane, Operators
from vworkspace.testing import ControlPlane


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
    control_plane: ControlPlane, kube_namespace: str, chaos: ChaosControlPlane, tmp_path: Path
) -> Iterator[Operators]:
    ops = Operators(control_plane, kube_namespace, tmp_path, chaos)
    try:
        yield ops
    finally:
        ops.stop_all()
