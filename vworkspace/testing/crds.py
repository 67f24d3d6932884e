"""Install CustomResourceDefinitions from YAML files and wait until they are Established.

Used by the fixtures and the demo for the upstream Flux, Velero and Argo Workflows CRDs and for
the project's own CRDs. Installation is a server-side apply with field manager
``vworkspace-testenv``, so installing twice is harmless.

Where the upstream CRDs come from, first match wins:

1. ``$VWORKSPACE_THIRD_PARTY_CRDS``: a folder you chose (searched recursively for ``*.yaml``);
2. the per-machine cache, ``<testenv cache>/crds`` (:func:`~vworkspace.testing.assets.cache_root`),
   filled by ``scripts/fetch-third-party-crds.sh`` from the Go module proxy, pinned by version and
   sha256 in ``scripts/testenv/third-party-crds.txt``. From a checkout with Go on the PATH,
   :func:`ensure_third_party_crds` runs that script first (a no-op when the cache is current), so
   a fresh clone needs no manual step. Nothing outside the repository and the cache is read.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from vworkspace.testing.assets import cache_root, checkout_script
from vworkspace.testing.rest import RestClient

CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
FIELD_MANAGER = "vworkspace-testenv"
THIRD_PARTY_ENV = "VWORKSPACE_THIRD_PARTY_CRDS"
FETCH_SCRIPT = "fetch-third-party-crds.sh"


class ThirdPartyCrdsError(LookupError):
    """The upstream CRDs are not available; the message says where we looked and how to fix it."""


def third_party_dir(env: Mapping[str, str]) -> Path:
    """Where the upstream CRDs are looked for: ``$VWORKSPACE_THIRD_PARTY_CRDS``, else the cache."""
    value = env.get(THIRD_PARTY_ENV)
    return Path(value).expanduser() if value else cache_root(env) / "crds"


def ensure_third_party_crds(env: Mapping[str, str]) -> Path:
    """The folder holding the upstream CRDs, fetching them into the cache first when that can be
    done here (a checkout with Go); raises :class:`ThirdPartyCrdsError` otherwise."""
    folder = third_party_dir(env)
    if env.get(THIRD_PARTY_ENV):
        if not folder.is_dir():
            raise ThirdPartyCrdsError(
                f"the Flux/Velero/Argo CRDs are not at {folder} (${THIRD_PARTY_ENV} names it, "
                "and it is not a directory)"
            )
        return folder
    script = checkout_script(FETCH_SCRIPT)
    if script is not None and shutil.which("go", path=env.get("PATH")) is not None:
        done = subprocess.run(
            ["bash", str(script)], env=dict(env), capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise ThirdPartyCrdsError(
                f"scripts/{FETCH_SCRIPT} failed (exit {done.returncode}): "
                + (done.stderr.strip() or done.stdout.strip())
            )
    if not folder.is_dir():
        raise ThirdPartyCrdsError(
            f"the Flux/Velero/Argo CRDs are not in {folder}: run scripts/{FETCH_SCRIPT} "
            f"(needs Go) from a checkout, or set ${THIRD_PARTY_ENV} to a folder that holds them"
        )
    return folder


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
