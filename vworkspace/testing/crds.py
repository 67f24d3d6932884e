"""Install CustomResourceDefinitions from YAML files and wait until they are Established.

Used by the fixtures for the upstream Flux and Velero CRDs (kept outside this repository, in
``shared/crds/third-party``) and for the project's own CRDs. Installation is a server-side apply
with field manager ``vworkspace-testenv``, so installing twice is harmless.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from vworkspace.testing.rest import RestClient

CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
FIELD_MANAGER = "vworkspace-testenv"
THIRD_PARTY_ENV = "VWORKSPACE_THIRD_PARTY_CRDS"


def default_third_party_dir() -> Path:
    """``shared/crds/third-party`` beside the checkout (where CI and developers have it)."""
    return Path(__file__).resolve().parents[3] / "shared" / "crds" / "third-party"


def third_party_dir(env: Mapping[str, str]) -> Path:
    value = env.get(THIRD_PARTY_ENV)
    return Path(value) if value else default_third_party_dir()


def load_crds(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Every CustomResourceDefinition document in ``paths`` (files, or directories searched
    recursively for ``*.yaml``), in a stable order."""
    files: list[Path] = []
    for path in paths:
        files.extend(sorted(path.rglob("*.yaml")) if path.is_dir() else [path])
    crds = []
    for file in files:
        for doc in yaml.safe_load_all(file.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                crds.append(doc)
    return crds


def _established(rest: RestClient, name: str) -> bool:
    crd = rest.get(f"{CRD_PATH}/{name}")
    # A CRD just created may have "status": {"conditions": null} for a moment.
    for cond in (crd.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Established" and cond.get("status") == "True":
            return True
    return False


def install_crds(
    rest: RestClient, crds: Iterable[dict[str, Any]], *, timeout: float = 60.0
) -> list[str]:
    """Apply every CRD, then wait for all of them to be Established; returns their names."""
    names = []
    for crd in crds:
        name = crd["metadata"]["name"]
        rest.apply(f"{CRD_PATH}/{name}", crd, field_manager=FIELD_MANAGER)
        names.append(name)
    for name in names:
        rest.wait_for(
            f"CRD {name} Established", functools.partial(_established, rest, name), timeout=timeout
        )
    return names
