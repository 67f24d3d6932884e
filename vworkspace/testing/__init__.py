"""A real Kubernetes control plane for tests: etcd, kube-apiserver and kube-controller-manager.

This is vworkspace's "envtest": it starts the real binaries (built from the Go module proxy by
scripts/build-test-assets.sh, or taken from a directory you point it at) on free loopback ports,
waits until the API server is ready and writes an admin kubeconfig. On request kube-scheduler,
the workload controllers and kwok's simulated Nodes join (:mod:`vworkspace.testing.kwok`), so
Deployments and Jobs get real status without a container runtime. It is importable by the
project's tests and by users' tests; the pytest fixtures live in
:mod:`vworkspace.testing.pytest_plugin`.

It stands apart from the operator: nothing in the operator imports it.
"""

from vworkspace.testing.assets import (
    KUBERNETES_VERSION,
    Assets,
    AssetsNotFoundError,
    find_assets,
)
from vworkspace.testing.controlplane import ControlPlane, ControlPlaneError
from vworkspace.testing.kwok import KwokError, KwokNodes
from vworkspace.testing.rest import ApiError, RestClient

__all__ = [
    "KUBERNETES_VERSION",
    "ApiError",
    "Assets",
    "AssetsNotFoundError",
    "ControlPlane",
    "ControlPlaneError",
    "KwokError",
    "KwokNodes",
    "RestClient",
    "find_assets",
]
