"""Which engine renders an ApplicationInstance, and what to say while it is not registered.

The ApplicationInstance reconciler asks :func:`engine_for` and otherwise knows no engine: a
``seaweedfs`` catalog entry is the native SeaweedFS offering (docs/api.md, "Native SeaweedFS"),
everything else is a Helm chart rendered by Flux.
"""

from __future__ import annotations

from typing import Any

from vworkspace.api.constants import SEAWEED_CATALOG_ID

FLUX = "flux"
SEAWEED = "seaweed"
MISSING = {
    FLUX: "the Flux CRDs (helm.toolkit.fluxcd.io/v2 HelmRelease, source.toolkit.fluxcd.io/v1 "
    "HelmRepository and OCIRepository) are not installed",
    SEAWEED: "the SeaweedFS CRDs (seaweed.seaweedfs.com/v1 Seaweed and S3Credentials) are not "
    "installed",
}


def engine_for(ai: dict[str, Any]) -> str:
    """The engine of a managed (not placeholder) instance."""
    app_ref = (ai.get("spec") or {}).get("appRef") or {}
    return SEAWEED if app_ref.get("catalogId") == SEAWEED_CATALOG_ID else FLUX
