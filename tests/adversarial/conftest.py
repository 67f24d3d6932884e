"""The adversarial tier (issue 24, deliverable 7): the real operator process against the real
API server, fed crafted and generated jobs that try to act outside their target; the assertion
is on the cluster. Every test here is marked ``adversarial`` and ``integration``; the tier's
figure line is printed in the terminal summary, so it is in CI's log without ``-s``."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.adversarial import tier
from tests.adversarial.corpus import TARGET_GLOB, Victims
from tests.adversarial.victims import make_victims, plant, remove, remove_namespaces
from tests.chaos.harness import ChaosControlPlane, Operators
from vworkspace.testing import ControlPlane
from vworkspace.testing.crds import install_crds, load_crds

SEAWEED_CRDS = Path(__file__).parent.parent / "fixtures" / "crds" / "seaweedfs.yaml"
# The operator's only policy: jobs may write in namespaces matching the target glob.
POLICY = ("--agent-allowed-namespaces", TARGET_GLOB)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.adversarial)
            item.add_marker(pytest.mark.integration)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in tier.FIGURES:
        terminalreporter.write_line(line)


@pytest.fixture
def adv_chaos(kube_namespace: str) -> Iterator[ChaosControlPlane]:
    plane = ChaosControlPlane(
        cluster="cluster-adversarial",
        token="adv-token-" + secrets.token_hex(12),
        namespace=kube_namespace,
        visibility=30.0,
    )
    try:
        yield plane
    finally:
        plane.close()


@pytest.fixture
def adv_operators(
    control_plane: ControlPlane,
    kube_namespace: str,
    adv_chaos: ChaosControlPlane,
    tmp_path: Path,
    vworkspace_crds: list[str],
    third_party_crds: list[str],
    seaweed_crds: list[str],
) -> Iterator[Operators]:
    """Operators with every CRD installed first (the operator watches what exists at start)."""
    ops = Operators(control_plane, kube_namespace, tmp_path, adv_chaos)
    try:
        yield ops
    finally:
        try:
            # What the jobs and the black-box tests made, removed while the operator runs.
            remove_namespaces(control_plane.rest(), (TARGET_GLOB.rstrip("*"), "adv-f1-"))
        finally:
            ops.stop_all()


@pytest.fixture(scope="session")
def seaweed_crds(control_plane: ControlPlane) -> list[str]:
    """Our minimal Seaweed CRDs (tests/fixtures/crds), so a Seaweed can be a victim too."""
    return install_crds(control_plane.rest(), load_crds([SEAWEED_CRDS]))


@pytest.fixture
def victim_secret() -> str:
    return "adv-victim-secret-" + secrets.token_hex(12)


@pytest.fixture
def victims(
    control_plane: ControlPlane, adv_operators: Operators, victim_secret: str
) -> Iterator[Victims]:
    """Victims planted before the operator starts; removed while it still runs (it holds a
    finalizer on the victim Cluster)."""
    rest = control_plane.rest()
    planted = plant(rest, make_victims(), victim_secret)
    try:
        yield planted
    finally:
        remove(rest, planted)
