"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from vworkspace.kube.rest.client import KubeClient
from vworkspace.testing import ControlPlane


@pytest.fixture
async def kube(control_plane: ControlPlane) -> AsyncIterator[KubeClient]:
    """The operator's own client (vworkspace.kube.KubeClient) with admin rights."""
    client = await KubeClient.from_kubeconfig(str(control_plane.kubeconfig_path))
    yield client
    await client.close()
