"""vworkspace: a Kubernetes operator for the vWorkspace control plane, in Pull mode.

The operator dials out to the control plane, turns the jobs it fetches into its own custom
resources with server-side apply, reconciles those into Flux HelmReleases and Velero objects,
and reports condition transitions back. See README.md and docs/.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vworkspace")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
