"""Where the control-plane binaries come from.

Lookup order (first directory that holds kube-apiserver and etcd wins):

1. ``VWORKSPACE_TEST_ASSETS``: a directory you chose;
2. ``KUBEBUILDER_ASSETS``: controller-runtime's setup-envtest directory, so people who already
   have one can reuse it (it has no kube-controller-manager; the control plane then runs without
   garbage collection and namespace deletion, and tests that need them say so);
3. the project's cache, ``${XDG_CACHE_HOME:-~/.cache}/vworkspace/testenv/v<version>/bin``,
   filled by ``scripts/build-test-assets.sh`` from the Go module proxy.

Optional binaries are looked up in the same directory: kube-scheduler and kwok (with the stage
files kwok needs, in ``kwok-stages/``), built by ``scripts/build-test-assets.sh`` and
``scripts/build-kwok.sh``; only the simulated-nodes fixtures need them.

The environment is passed in as a mapping rather than read here, so callers (the pytest plugin,
the CLI) decide what it is and tests can give their own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

# Must match k8s.io/kubernetes in scripts/testenv/go.mod (a unit test keeps them together).
KUBERNETES_VERSION = "1.36.3"

ASSETS_ENV = "VWORKSPACE_TEST_ASSETS"
KUBEBUILDER_ENV = "KUBEBUILDER_ASSETS"
CACHE_ENV = "VWORKSPACE_TESTENV_CACHE"

APISERVER = "kube-apiserver"
ETCD = "etcd"
CONTROLLER_MANAGER = "kube-controller-manager"
SCHEDULER = "kube-scheduler"
KWOK = "kwok"
# kwok's stage files (kwok's own and ours), copied next to the binary by scripts/build-kwok.sh.
KWOK_STAGES = "kwok-stages"


class AssetsNotFoundError(LookupError):
    """No directory holds the binaries; the message says where we looked and how to fix it."""


@attrs.frozen
class Assets:
    """The binaries of one control plane and where they were found."""

    directory: Path
    source: str
    kube_apiserver: Path
    etcd: Path
    kube_controller_manager: Path | None
    kube_scheduler: Path | None = None
    kwok: Path | None = None

    @property
    def has_controller_manager(self) -> bool:
        return self.kube_controller_manager is not None

    @property
    def kwok_stages(self) -> list[Path]:
        """kwok's stage files (empty when kwok was not built here)."""
        folder = self.directory / KWOK_STAGES
        return sorted(folder.glob("*.yaml")) if folder.is_dir() else []

    def missing_for_nodes(self) -> list[str]:
        """What simulated nodes would need and this directory lacks (empty: all there)."""
        missing = [
            name
            for name, path in (
                (CONTROLLER_MANAGER, self.kube_controller_manager),
                (SCHEDULER, self.kube_scheduler),
                (KWOK, self.kwok),
            )
            if path is None
        ]
        if self.kwok is not None and not self.kwok_stages:
            missing.append(f"{KWOK_STAGES}/*.yaml")
        return missing


def cache_root(env: Mapping[str, str]) -> Path:
    """The root of the project's per-machine cache: ``$VWORKSPACE_TESTENV_CACHE``, else
    ``${XDG_CACHE_HOME:-~/.cache}/vworkspace/testenv`` (may not exist yet)."""
    root = env.get(CACHE_ENV)
    if root:
        return Path(root).expanduser()
    xdg = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".cache")
    return Path(xdg) / "vworkspace" / "testenv"


def cache_dir(env: Mapping[str, str], version: str = KUBERNETES_VERSION) -> Path:
    """The project's cache directory for one Kubernetes version (may not exist yet)."""
    return cache_root(env) / f"v{version}" / "bin"


def _executable(directory: Path, name: str) -> Path | None:
    path = directory / name
    return path if path.is_file() and os.access(path, os.X_OK) else None


def assets_in(directory: Path, source: str) -> Assets | None:
    """The assets in ``directory`` if it holds at least kube-apiserver and etcd."""
    apiserver = _executable(directory, APISERVER)
    etcd = _executable(directory, ETCD)
    if apiserver is None or etcd is None:
        return None
    return Assets(
        directory=directory,
        source=source,
        kube_apiserver=apiserver,
        etcd=etcd,
        kube_controller_manager=_executable(directory, CONTROLLER_MANAGER),
        kube_scheduler=_executable(directory, SCHEDULER),
        kwok=_executable(directory, KWOK),
    )


def candidate_dirs(env: Mapping[str, str]) -> list[tuple[str, Path]]:
    """The directories to look in, in order, with the name of what pointed at each."""
    candidates: list[tuple[str, Path]] = []
    for var in (ASSETS_ENV, KUBEBUILDER_ENV):
        value = env.get(var)
        if value:
            candidates.append((var, Path(value).expanduser()))
    candidates.append(("cache", cache_dir(env)))
    return candidates


def find_assets(env: Mapping[str, str]) -> Assets:
    """Find the binaries, or raise :class:`AssetsNotFoundError` naming every place tried.

    A directory named by an environment variable that lacks the binaries is an error, not a
    reason to fall through: silently using other binaries than the ones asked for would be worse.
    """
    tried: list[str] = []
    for source, directory in candidate_dirs(env):
        found = assets_in(directory, source)
        if found is not None:
            return found
        if source != "cache":
            raise AssetsNotFoundError(
                f"{source}={directory} does not contain executable {APISERVER} and {ETCD}"
            )
        tried.append(f"{source}: {directory}")
    raise AssetsNotFoundError(
        "no kube-apiserver/etcd found (looked in "
        + "; ".join(tried)
        + f"). Build them with scripts/build-test-assets.sh (needs Go >= 1.26), or set "
        f"{ASSETS_ENV} or {KUBEBUILDER_ENV} to a directory that has them."
    )


def checkout_script(name: str) -> Path | None:
    """``scripts/<name>`` when running from a source checkout, else None."""
    script = Path(__file__).resolve().parents[2] / "scripts" / name
    return script if script.is_file() else None


def build_script() -> Path | None:
    """scripts/build-test-assets.sh when running from a source checkout, else None."""
    return checkout_script("build-test-assets.sh")


def can_build(env: Mapping[str, str]) -> bool:
    return build_script() is not None and shutil.which("go", path=env.get("PATH")) is not None


def build_assets(env: Mapping[str, str]) -> Assets:
    """Run the build script (a no-op when the cache is current) and return the cached assets."""
    script = build_script()
    if script is None:
        raise AssetsNotFoundError(
            "scripts/build-test-assets.sh is not available outside a checkout"
        )
    subprocess.run(["bash", str(script)], check=True, env=dict(env))
    found = assets_in(cache_dir(env), "cache")
    if found is None:
        raise AssetsNotFoundError(f"the build finished but {cache_dir(env)} holds no binaries")
    return found


def find_built(
    names: Sequence[str],
    env: Mapping[str, str],
    *,
    beside: Path | None,
    script: str,
    error: type[Exception],
) -> dict[str, Path]:
    """Built binaries ``names`` (all executable): in ``beside`` (the control plane's binary
    directory, where the builds put them) if all are there, else in the test-asset cache.
    Otherwise raises ``error`` naming where it looked and which script builds them, so every
    component (Flux, SeaweedFS, Velero, Argo) says it the same way."""
    directories = [d for d in (beside, cache_dir(env)) if d is not None]
    for directory in directories:
        found = {name: _executable(directory, name) for name in names}
        if all(found.values()):
            return {name: path for name, path in found.items() if path is not None}
    raise error(
        f"{' and '.join(names)} {'is' if len(names) == 1 else 'are'} not in "
        f"{' nor '.join(map(str, dict.fromkeys(directories)))}: run scripts/build-test-assets.sh "
        f"(it calls scripts/{script}; needs Go >= 1.26)"
    )


def ensure_built(
    names: Sequence[str],
    env: Mapping[str, str],
    *,
    beside: Path | None,
    script: str,
    error: type[Exception],
) -> dict[str, Path]:
    """:func:`find_built`, first running ``scripts/<script>`` when something is missing and
    this is a checkout with Go (as the ``control_plane`` fixture does for Kubernetes; the script
    prints one line per component and is a no-op for what is current). A failed build leaves
    ``error`` to say what is missing."""
    try:
        return find_built(names, env, beside=beside, script=script, error=error)
    except error:
        path = checkout_script(script)
        if path is None or shutil.which("go", path=env.get("PATH")) is None:
            raise
    subprocess.run(["bash", str(path)], env=dict(env), check=False)
    return find_built(names, env, beside=beside, script=script, error=error)
