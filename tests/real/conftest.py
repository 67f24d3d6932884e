"""The `real` tier (issue 25): real controllers answer (Flux's source-controller and
helm-controller, ...) instead of status written by the tests. Every test here is marked
``real`` and ``integration``."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.real)
            item.add_marker(pytest.mark.integration)
