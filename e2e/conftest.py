"""End-to-end tests on a kind cluster (``tox -e e2e``).

They need a running Docker engine, pytest-kind and the ``kind`` binary (on PATH, or named by
``--kind-bin`` / ``VWORKSPACE_KIND``; ``VWORKSPACE_E2E_DOWNLOAD_KIND=1`` lets pytest-kind
download its own). Where any is missing every test here is skipped with that reason; nothing is
reported as an error.

Fixtures: ``kind_cluster`` (pytest-kind's, with the local kind and kubectl when there are
some), ``operator_image`` (built from the Containerfile and loaded into kind),
``mock_install`` (manifests/mock-control-plane with that image, Flux CRDs, the Cluster
registered) and ``mock_admin_url`` (the mock's admin API through `kubectl port-forward`).

``VWORKSPACE_E2E_KEEP=1`` keeps the kind cluster and the tests' namespaces for a look afterwards
(with the kubeconfig under .pytest-kind/). ``VWORKSPACE_E2E_IMAGE=NAME:TAG`` uses an image you
built instead of building one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from vworkspace.testing.crds import THIRD_PARTY_ENV, third_party_dir

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
NAMESPACE = "vworkspace-system"
IMAGE_NAME = "ghcr.io/vworkspace/vworkspace-operator"
KEEP_ENV = "VWORKSPACE_E2E_KEEP"
Doc = dict[str, Any]


def keep() -> bool:
    return os.environ.get(KEEP_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


# -- skipping ------------------------------------------------------------------------------------


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


def kind_binary(config: pytest.Config) -> str | None:
    option = config.getoption("kind_bin", default=None)
    return option or os.environ.get("VWORKSPACE_KIND") or shutil.which("kind")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = docker_unavailable_reason()
    if reason is not None:
        reason = f"kind e2e needs Docker: {reason}"
    else:
        try:
            import pytest_kind  # noqa: F401
        except ImportError:
            reason = (
                "kind e2e needs pytest-kind, which is not installed (pip install 'vworkspace[e2e]')"
            )
    if (
        reason is None
        and kind_binary(config) is None
        and not os.environ.get("VWORKSPACE_E2E_DOWNLOAD_KIND")
    ):
        reason = (
            "kind e2e needs the kind binary: not on PATH, no --kind-bin, no VWORKSPACE_KIND "
            "(or set VWORKSPACE_E2E_DOWNLOAD_KIND=1 to let pytest-kind download one)"
        )
    if reason is None:
        return
    marker = pytest.mark.skip(reason=reason)
    for item in items:
        item.add_marker(marker)


# -- the cluster ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kind_cluster(request: pytest.FixtureRequest) -> Iterator[Any]:
    """pytest-kind's cluster, preferring the kind and kubectl found here over downloads."""
    from pytest_kind import KindCluster

    config = request.config
    kind = kind_binary(config)
    kubectl = config.getoption("kind_kubectl_bin", default=None) or shutil.which("kubectl")
    kubeconfig = config.getoption("kubeconfig", default=None)
    cluster = KindCluster(
        config.getoption("cluster_name", default="pytest-kind"),
        Path(kubeconfig) if kubeconfig else None,
        image=config.getoption("kind_image", default=None),
        kind_path=Path(kind) if kind else None,
        kubectl_path=Path(kubectl) if kubectl else None,
    )
    cluster.create()
    yield cluster
    if not (config.getoption("keep_cluster", default=False) or keep()):
        cluster.delete()


def kubectl_of(cluster: Any) -> Callable[..., str]:
    """``kubectl(*args, stdin=None)`` against the cluster; a failure raises with its stderr."""

    def kubectl(*args: str, stdin: str | None = None, timeout: float = 300) -> str:
        cluster.ensure_kubectl()
        done = subprocess.run(
            [str(cluster.kubectl_path), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig_path)},
        )
        if done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{done.stderr}{done.stdout}")
        return done.stdout

    return kubectl


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def diagnostics(kubectl: Callable[..., str]) -> str:
    """What to look at when the in-cluster install misbehaves."""
    parts = []
    for args in (
        ("-n", NAMESPACE, "get", "pods,deployments,services,events", "-o", "wide"),
        ("-n", NAMESPACE, "logs", "deployment/vworkspace-operator", "--tail", "80"),
        ("-n", NAMESPACE, "logs", "deployment/vworkspace-mock-control-plane", "--tail", "40"),
        ("get", "clusters.ops.vworkspace.io", "-o", "yaml"),
    ):
        try:
            parts.append(f"$ kubectl {' '.join(args)}\n{kubectl(*args, timeout=30)}")
        except (AssertionError, subprocess.TimeoutExpired) as err:
            parts.append(f"$ kubectl {' '.join(args)}\n{err}")
    return "\n".join(parts)


# -- the image and the install -------------------------------------------------------------------


@pytest.fixture(scope="session")
def operator_image(kind_cluster: Any) -> str:
    """The image from the Containerfile (or $VWORKSPACE_E2E_IMAGE), loaded into kind."""
    image = os.environ.get("VWORKSPACE_E2E_IMAGE") or f"{IMAGE_NAME}:e2e"
    if not os.environ.get("VWORKSPACE_E2E_IMAGE"):
        subprocess.run(
            ["docker", "build", "-f", str(ROOT / "Containerfile"), "-t", image, str(ROOT)],
            check=True,
            timeout=1200,
        )
    kind_cluster.load_docker_image(image)
    return image


def overlay_with_image(directory: Path, image: str, workdir: Path) -> Path:
    """A kustomization of ``directory`` whose operator image is ``image`` (what `kustomize edit
    set image` writes). kustomize takes only relative paths to bases."""
    name, _, tag = image.rpartition(":")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(directory, workdir)],
                "images": [{"name": IMAGE_NAME, "newName": name, "newTag": tag}],
            }
        )
    )
    return workdir


def install_flux_crds(kubectl: Callable[..., str]) -> list[str]:
    """The upstream Flux CRDs (the operator writes HelmReleases and chart sources; no Flux
    controller runs, so nothing installs charts). Server-side apply: they are too large for
    the last-applied annotation of a client-side apply."""
    # The pinned cache filled by scripts/fetch-third-party-crds.sh (run here from this checkout:
    # tox installs the package into its own env, so the package's view of "the checkout" is not
    # this one), or $VWORKSPACE_THIRD_PARTY_CRDS.
    env = dict(os.environ)
    if not env.get(THIRD_PARTY_ENV):
        fetched = subprocess.run(
            ["bash", str(ROOT / "scripts" / "fetch-third-party-crds.sh")],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if fetched.returncode != 0:
            pytest.fail(f"fetching the Flux CRDs failed: {fetched.stderr.strip()}", pytrace=False)
    folder = third_party_dir(env)
    flux = sorted(p for p in folder.rglob("*.yaml") if ".fluxcd.io_" in p.name)
    if not flux:
        pytest.fail(f"no Flux CRDs under {folder}; set VWORKSPACE_THIRD_PARTY_CRDS", pytrace=False)
    names = []
    for file in flux:
        out = kubectl(
            "apply",
            "--server-side",
            "--field-manager",
            "vworkspace-e2e",
            "-f",
            str(file),
            "-o",
            "name",
        )
        names += out.split()
    kubectl("wait", "--for", "condition=Established", "--timeout", "60s", *names)
    return names


def get_json(kubectl: Callable[..., str], *args: str) -> Doc | None:
    try:
        found: Doc = json.loads(kubectl("get", *args, "-o", "json", timeout=30))
    except AssertionError:
        return None
    return found


def condition(obj: Doc | None, kind: str) -> str | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return str(cond.get("status"))
    return None


@pytest.fixture(scope="session")
def mock_install(
    kind_cluster: Any, operator_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Doc:
    """manifests/mock-control-plane with the e2e image, both Deployments available, and the
    Cluster of manifests/mock-control-plane/registration registered and connected. Returns it."""
    kubectl = kubectl_of(kind_cluster)
    install_flux_crds(kubectl)
    overlay = overlay_with_image(
        MANIFESTS / "mock-control-plane", operator_image, tmp_path_factory.mktemp("overlay")
    )
    rendered = kubectl("kustomize", str(overlay))
    crds = [
        doc["metadata"]["name"]
        for doc in yaml.safe_load_all(rendered)
        if doc and doc["kind"] == "CustomResourceDefinition"
    ]
    kubectl("apply", "-f", "-", stdin=rendered)
    kubectl(
        "wait", "--for", "condition=Established", "--timeout", "60s", *(f"crd/{c}" for c in crds)
    )
    try:
        kubectl(
            "-n",
            NAMESPACE,
            "wait",
            "--for",
            "condition=Available",
            "--timeout",
            "240s",
            "deployment/vworkspace-operator",
            "deployment/vworkspace-mock-control-plane",
            timeout=300,
        )
        kubectl("apply", "-k", str(MANIFESTS / "mock-control-plane" / "registration"))

        def connected() -> Doc | None:
            found = get_json(kubectl, "clusters.ops.vworkspace.io", "mock")
            if found is None or not (found.get("spec") or {}).get("clusterId"):
                return None
            return found if condition(found, "Connected") == "True" else None

        cluster: Doc = wait_for("the Cluster registered and connected", connected, timeout=120)
    except AssertionError as err:
        raise AssertionError(f"{err}\n{diagnostics(kubectl)}") from None
    return cluster


@contextlib.contextmanager
def port_forward(kubectl_path: str, kubeconfig: Path, target: str, port: int) -> Iterator[int]:
    """`kubectl port-forward` to ``target`` in the operator namespace on a free local port."""
    proc = subprocess.Popen(
        [
            kubectl_path,
            "-n",
            NAMESPACE,
            "port-forward",
            "--address",
            "127.0.0.1",
            target,
            f":{port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "Forwarding from 127.0.0.1:NNNNN -> 8080"
        match = re.search(r"127\.0\.0\.1:(\d+) ->", line)
        if match is None:
            raise AssertionError(f"kubectl port-forward {target}: {line}{proc.stdout.read()}")
        # Keep reading ("Handling connection for ..." per request) so the pipe never fills.
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        yield int(match.group(1))
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def mock_admin_url(kind_cluster: Any, mock_install: Doc) -> Iterator[str]:
    """The in-cluster mock's admin API on a local port (kubectl port-forward to its Service)."""
    kind_cluster.ensure_kubectl()
    with port_forward(
        str(kind_cluster.kubectl_path),
        kind_cluster.kubeconfig_path,
        "service/vworkspace-mock-control-plane",
        8080,
    ) as port:
        yield f"http://127.0.0.1:{port}"
