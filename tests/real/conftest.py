"""The real tier (issue 25): real controllers answer instead of the tests. kwok's simulated
Nodes with the real kube-scheduler and workload controllers (the ``kwok_nodes`` fixture), so
Deployments, Jobs and their Pods get the status those controllers write; Flux's
source-controller and helm-controller (the ``flux`` fixture) install charts from the local chart
repository (``chart_repo``). Every test here is marked ``real`` and ``integration``. Run it in a
pytest session of its own: once ``kwok_nodes`` or ``flux`` has started, later tests of the same
session would meet controllers they do not expect."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.real)
            item.add_marker(pytest.mark.integration)
