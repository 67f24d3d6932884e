"""End-to-end tests on a kind cluster (``tox -e e2e``).

They need a running Docker engine and pytest-kind (which fetches the kind binary). Where either
is missing every test here is skipped with that reason; nothing is reported as an error.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest


def docker_unavailable_reason() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return "the docker client is not installed"
    try:
        info = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "'docker info' did not answer within 20s"
    if info.returncode != 0:
        detail = (info.stderr or info.stdout).strip().splitlines()
        return f"no Docker engine is reachable ({detail[-1] if detail else 'docker info failed'})"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = docker_unavailable_reason()
    if reason is None:
        try:
            import pytest_kind  # noqa: F401
        except ImportError:
            reason = "pytest-kind is not installed (pip install 'vworkspace[e2e]')"
    if reason is None:
        return
    marker = pytest.mark.skip(reason=f"kind e2e needs Docker: {reason}")
    for item in items:
        item.add_marker(marker)
