"""A kubernetes-asyncio ApiClient for a test control plane (for async tests and helpers)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from kubernetes_asyncio import client, config

from vworkspace.testing.controlplane import ControlPlane


@asynccontextmanager
async def api_client(plane: ControlPlane) -> AsyncIterator[client.ApiClient]:
    """An admin ApiClient loaded from the control plane's kubeconfig, closed on exit."""
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(plane.kubeconfig_path), client_configuration=configuration
    )
    api = client.ApiClient(configuration)
    try:
        yield api
    finally:
        await api.close()
