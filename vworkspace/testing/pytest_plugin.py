"""pytest fixtures for tests against the real control plane.

Enable with ``-p vworkspace.testing.pytest_plugin`` or ``pytest_plugins = [...]`` in a conftest.

Fixtures:

* ``control_plane`` (session): a running :class:`ControlPlane`. Binaries come from
  ``VWORKSPACE_TEST_ASSETS``, ``KUBEBUILDER_ASSETS`` or the project's cache; in a checkout with
  Go available an empty cache is filled by ``scripts/build-test-assets.sh``. Without binaries the
  integration tests are skipped with the reason, unless ``VWORKSPACE_REQUIRE_TESTENV=1`` (set by
  CI), which turns that into an error: CI never silently skips the integration tier.
* ``kube_namespace`` (function): a fresh namespace, deleted afterwards.
* ``third_party_crds`` (session): the upstream Flux, Velero and Argo Workflows CRDs, Established.
* ``kube_api`` (function): an admin kubernetes-asyncio ``ApiClient``.
* ``vworkspace_crds`` (session): the operator's own CRDs, generated from the models, Established.
* ``shipped_identity`` (function): the operator's ServiceAccount with only the RBAC rendered from
  ``vworkspace_manifests`` (default: ``manifests/`` under pytest's rootdir; override the fixture
  to point elsewhere), installed in ``vworkspace-system``, with a fresh token: a
  :class:`~vworkspace.testing.identity.ShippedIdentity` that writes a token-only kubeconfig or the
  in-cluster service-account files; its RBAC is deleted afterwards. Needs kubectl
  (``kubectl kustomize``); without it the test skips, or fails under
  ``VWORKSPACE_REQUIRE_TESTENV=1``.


* ``kwok_nodes`` (session): kube-scheduler, the workload controllers and kwok with three
  simulated Nodes, Ready, on the session's ``control_plane``
  (:class:`~vworkspace.testing.kwok.KwokNodes`). Once it has started, Deployments and Jobs of
  every later test in the session get real status, so run the tests that use it in a session of
  their own (tests/real is one); they never start for sessions that do not ask for it.
* ``flux`` (session): Flux's real source-controller and helm-controller
  (:mod:`vworkspace.testing.flux`), ready, against ``control_plane``; built by
  ``scripts/build-flux-controllers.sh`` (run by the fixture when they are missing in a checkout
  with Go). Missing binaries skip (or, with the variable above, fail).
  Once it has started, every HelmRelease of a later test in the session gets real status, so
  tests that write that status by hand must not share its session (``tests/real`` sorts after
  ``tests/integration``; run it on its own when in doubt).
* ``chart_repo`` (session): the project's test charts (``tests/fixtures/charts``) packaged and
  served as a Helm HTTP repository on 127.0.0.1 (:mod:`vworkspace.testing.chartrepo`).
* ``seaweed_s3`` (session): SeaweedFS ``weed mini`` as an S3 endpoint on 127.0.0.1 with its own
  generated keys and the bucket ``velero`` (:class:`~vworkspace.testing.s3.SeaweedS3`:
  ``endpoint_url``, ``region``, ``bucket``, ``credentials_file``, ``list_objects()``). Needs no
  control plane.
* ``velero`` (session): the real ``velero server`` (:class:`~vworkspace.testing.velero.Velero`)
  against ``control_plane`` and ``seaweed_s3``, namespace ``velero``, BackupStorageLocation
  ``default`` Available. Both are built by ``scripts/build-backup-controllers.sh`` (run by the
  fixtures when missing in a checkout with Go); missing binaries skip (or, with the variable
  above, fail). Once it has started, every Velero Backup/Restore of a later test in the session
  gets real status (as ``flux`` for HelmReleases). Only one Velero server runs per machine
  (:mod:`vworkspace.testing.velero` says why): a second session waits (up to 2 min) for the
  first one's server to stop, then fails with that reason.
* ``argo`` (session): Argo Workflows' real workflow-controller (:mod:`vworkspace.testing.argo`),
  cluster-wide, caches synced, with ``kwok_nodes`` (a stage of ours finishes Workflow Pods the
  way a kubelet would); built by ``scripts/build-backup-controllers.sh`` when missing. Missing
  binary: skip (or fail, as above). Later Workflows of the session get real status.

``VWORKSPACE_TEST_KEEP=1`` keeps the data directory and the namespaces and prints the kubeconfig.
When a test that used a namespace fails, its report names the namespace with a kubectl command.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, Protocol, TypeVar

import pytest

from vworkspace.testing import assets as assets_mod
from vworkspace.testing.argo import ArgoController, ArgoError, ensure_controller
from vworkspace.testing.asyncclient import api_client
from vworkspace.testing.chartrepo import ChartRepoError, ChartRepository, start_chart_repository
from vworkspace.testing.controlplane import ControlPlane, ControlPlaneError
from vworkspace.testing.crds import (
    ThirdPartyCrdsError,
    ensure_third_party_crds,
    install_crds,
    load_crds,
)
from vworkspace.testing.flux import Flux, FluxError, ensure_controllers
from vworkspace.testing.identity import (
    IdentityError,
    ShippedIdentity,
    find_kubectl,
    install_shipped_identity,
    remove_shipped_identity,
    render_manifests,
)
from vworkspace.testing.kwok import KwokNodes
from vworkspace.testing.rest import ApiError
from vworkspace.testing.s3 import S3Error, SeaweedS3, ensure_weed
from vworkspace.testing.velero import Velero, VeleroError, ensure_binaries

KEEP_ENV = "VWORKSPACE_TEST_KEEP"
REQUIRE_ENV = "VWORKSPACE_REQUIRE_TESTENV"
NAMESPACE_LABEL = "testing.vworkspace.io/test"

_plane_key = pytest.StashKey[ControlPlane]()
_kwok_key = pytest.StashKey[KwokNodes]()
_namespace_key = pytest.StashKey[str]()
_report_key = pytest.StashKey[dict[str, pytest.TestReport]]()
_flux_key = pytest.StashKey[Flux]()
_s3_key = pytest.StashKey[SeaweedS3]()
_velero_key = pytest.StashKey[Velero]()
_argo_key = pytest.StashKey[ArgoController]()


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def unavailable(reason: str) -> NoReturn:
    """Skip a test whose test-environment part is missing, saying why; fail instead under
    VWORKSPACE_REQUIRE_TESTENV (as CI runs), so a missing binary never hides a tier there."""
    if _flag(REQUIRE_ENV):
        pytest.fail(
            f"{REQUIRE_ENV} is set and the test control plane is unavailable: {reason}",
            pytrace=False,
        )
    pytest.skip(f"test control plane unavailable: {reason}")


def require_controller_manager(plane: ControlPlane) -> None:
    """For a test that needs kube-controller-manager (its garbage collector): skip, saying why,
    when the test assets have none (e.g. setup-envtest's); fail instead under
    VWORKSPACE_REQUIRE_TESTENV, as CI runs, so a missing binary never hides a test there."""
    if not plane.with_controller_manager:
        unavailable("kube-controller-manager is not among the test assets: no garbage collector")


def _sigterm_as_interrupt(signum: int, frame: FrameType | None) -> None:
    # pytest runs fixture finalizers on KeyboardInterrupt but dies at once on SIGTERM; turning
    # one into the other lets the control plane stop in order instead of relying on PDEATHSIG.
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_sessionstart(session: pytest.Session) -> None:
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    item.stash.setdefault(_report_key, {})[report.when] = report
    namespace = item.stash.get(_namespace_key, None)
    plane = item.config.stash.get(_plane_key, None)
    if report.failed and namespace and plane is not None:
        kept = (
            "kept"
            if _flag(KEEP_ENV)
            else f"deleted after the test; rerun with {KEEP_ENV}=1 to keep it"
        )
        report.sections.append(
            (
                "vworkspace test namespace",
                f"namespace {namespace} ({kept})\n"
                f"kubectl --kubeconfig {plane.kubeconfig_path} -n {namespace} "
                "get all,events,applicationinstances,operations -o wide",
            )
        )
    return report


@pytest.fixture(scope="session")
def control_plane(request: pytest.FixtureRequest) -> Iterator[ControlPlane]:
    """The session's real control plane (etcd + kube-apiserver + kube-controller-manager)."""
    env = dict(os.environ)
    try:
        assets = assets_mod.find_assets(env)
    except assets_mod.AssetsNotFoundError as err:
        if not assets_mod.can_build(env) or os.environ.get(assets_mod.ASSETS_ENV):
            unavailable(str(err))
        try:
            assets = assets_mod.build_assets(env)
        except Exception as build_err:  # the build's own output already went to the terminal
            unavailable(f"building the test assets failed: {build_err}")
    keep = _flag(KEEP_ENV)
    plane = ControlPlane(
        assets=assets,
        keep_data_dir=keep,
        with_controller_manager=assets.has_controller_manager,
    )
    plane.start()
    request.config.stash[_plane_key] = plane
    try:
        yield plane
    finally:
        plane.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    plane = terminalreporter.config.stash.get(_plane_key, None)
    if plane is None:
        return
    secs = f"{plane.startup_seconds:.1f}s" if plane.startup_seconds is not None else "?"
    terminalreporter.write_line(
        f"vworkspace testenv: Kubernetes from {plane.assets.directory} ({plane.assets.source}), "
        f"ready in {secs}, controller-manager: {'yes' if plane.with_controller_manager else 'no'}"
    )
    nodes = terminalreporter.config.stash.get(_kwok_key, None)
    if nodes is not None and nodes.ready_seconds is not None:
        terminalreporter.write_line(
            f"vworkspace testenv: kube-scheduler, workload controllers and kwok with "
            f"{len(nodes.names)} Nodes ready in {nodes.ready_seconds:.1f}s"
        )
    flux = terminalreporter.config.stash.get(_flux_key, None)
    if flux is not None and flux.startup_seconds is not None:
        terminalreporter.write_line(
            f"vworkspace testenv: Flux (source-controller, helm-controller) ready in "
            f"{flux.startup_seconds:.1f}s, logs in {flux.data_dir / 'logs'}"
        )
    for component in (
        terminalreporter.config.stash.get(_s3_key, None),
        terminalreporter.config.stash.get(_velero_key, None),
        terminalreporter.config.stash.get(_argo_key, None),
    ):
        if component is not None and component.startup_seconds is not None:
            terminalreporter.write_line(f"vworkspace testenv: {component.summary()}")
    if _flag(KEEP_ENV):
        terminalreporter.write_line(f"vworkspace testenv: kept data directory {plane.data_dir}")
        terminalreporter.write_line(
            f"vworkspace testenv: kubeconfig {plane.kubeconfig_path} (the processes have stopped)"
        )


def _namespace_name(nodeid: str) -> str:
    test = nodeid.rsplit("::", 1)[-1]
    slug = re.sub(r"[^a-z0-9]+", "-", test.lower()).strip("-")[:40].strip("-") or "test"
    return f"t-{slug}-{secrets.token_hex(3)}"


@pytest.fixture
def kube_namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test; deleted afterwards unless VWORKSPACE_TEST_KEEP=1."""
    rest = control_plane.rest()
    name = _namespace_name(request.node.nodeid)
    rest.post(
        "/api/v1/namespaces",
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {NAMESPACE_LABEL: "true"}},
        },
    )
    request.node.stash[_namespace_key] = name
    yield name
    if _flag(KEEP_ENV):
        return
    try:
        rest.delete(f"/api/v1/namespaces/{name}")
    except ApiError as err:
        if err.status != 404:
            raise


@pytest.fixture(scope="session")
def third_party_crds(control_plane: ControlPlane) -> list[str]:
    """Install the upstream Flux, Velero and Argo Workflows CRDs (from the cache, fetched first
    when needed; VWORKSPACE_THIRD_PARTY_CRDS overrides the folder) and return their names once
    all are Established."""
    try:
        folder: Path = ensure_third_party_crds(os.environ)
    except ThirdPartyCrdsError as err:
        unavailable(str(err))
    crds = load_crds([folder])
    if not crds:
        unavailable(f"no CustomResourceDefinition in {folder}")
    return install_crds(control_plane.rest(), crds)


@pytest.fixture
async def kube_api(control_plane: ControlPlane) -> AsyncIterator[Any]:
    """An admin kubernetes-asyncio ``ApiClient`` for the test's event loop."""
    async with api_client(control_plane) as api:
        yield api


@pytest.fixture(scope="session")
def vworkspace_crds(control_plane: ControlPlane) -> list[str]:
    """Install the operator's own CRDs, generated from the API models, and wait until
    they are Established."""
    from vworkspace.api import crdgen

    return install_crds(control_plane.rest(), [crdgen.crd(info) for info in crdgen.RESOURCES])


@pytest.fixture(scope="session")
def vworkspace_manifests(request: pytest.FixtureRequest) -> Path:
    """The install manifests the shipped identity is rendered from: ``manifests/`` under the
    rootdir. Override this fixture to test another kustomization."""
    return Path(request.config.rootpath) / "manifests"


@pytest.fixture(scope="session")
def shipped_rendering(vworkspace_manifests: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize`` of ``vworkspace_manifests``, once per session."""
    kubectl = find_kubectl(os.environ)
    if kubectl is None:
        unavailable(
            "kubectl is not on PATH nor beside the test binaries, and VWORKSPACE_KUBECTL is "
            "unset (the shipped RBAC is rendered with `kubectl kustomize`)"
        )
    try:
        return render_manifests(kubectl, vworkspace_manifests)
    except IdentityError as err:
        pytest.fail(str(err), pytrace=False)


@pytest.fixture
def shipped_identity(
    control_plane: ControlPlane, shipped_rendering: list[dict[str, Any]]
) -> Iterator[ShippedIdentity]:
    """The shipped RBAC applied and a fresh token of the operator's ServiceAccount; the RBAC
    is deleted afterwards (the namespace stays), so later tests find the cluster as before."""
    try:
        identity = install_shipped_identity(control_plane, shipped_rendering)
    except IdentityError as err:
        pytest.fail(str(err), pytrace=False)
    try:
        yield identity
    finally:
        remove_shipped_identity(control_plane, identity)


def _assets_for_nodes(plane: ControlPlane) -> assets_mod.Assets:
    """The plane's assets, built first when the cache lacks the scheduler or kwok (from a
    checkout with Go; never into a directory a variable named)."""
    assets = plane.assets
    missing = assets.missing_for_nodes()
    if not missing:
        return assets
    env = dict(os.environ)
    if assets.source != "cache" or not assets_mod.can_build(env):
        unavailable(
            f"simulated nodes need {', '.join(missing)} in {assets.directory} ({assets.source}); "
            "build them with scripts/build-test-assets.sh"
        )
    try:
        assets = assets_mod.build_assets(env)
    except Exception as build_err:  # the build's own output already went to the terminal
        unavailable(f"building the test assets failed: {build_err}")
    missing = assets.missing_for_nodes()
    if missing:
        unavailable(f"the build finished without {', '.join(missing)} in {assets.directory}")
    return assets


@pytest.fixture(scope="session")
def kwok_nodes(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[KwokNodes]:
    """Simulated Nodes, Ready, with the real kube-scheduler and workload controllers on the
    session's control plane (see the module docstring for what that means to later tests)."""
    assets = _assets_for_nodes(control_plane)
    # A fresh build added binaries the plane did not know of when it started.
    control_plane.assets = assets
    nodes = KwokNodes(plane=control_plane, assets=assets)
    try:
        nodes.start()
    except ControlPlaneError as err:  # KwokError too; a scheduler that did not start
        pytest.fail(str(err), pytrace=False)
    request.config.stash[_kwok_key] = nodes
    try:
        yield nodes
    finally:
        nodes.stop()


class _Component(Protocol):
    def start(self) -> None: ...
    def stop(self, *, keep_data_dir: bool = False) -> None: ...


_C = TypeVar("_C", bound=_Component)


def _serve(
    request: pytest.FixtureRequest,
    running: _C,
    *,
    error: type[Exception],
    stash_key: pytest.StashKey[_C] | None = None,
) -> Iterator[_C]:
    """Start a test-environment component for a fixture, stop it at teardown (its data directory
    kept under ``VWORKSPACE_TEST_KEEP=1``). A start that fails with ``error`` (whose message
    carries the component's log tail) fails the test without a traceback; stashed components
    get a line in the terminal summary."""
    try:
        running.start()
    except error as err:
        pytest.fail(str(err), pytrace=False)
    if stash_key is not None:
        request.config.stash[stash_key] = running
    try:
        yield running
    finally:
        running.stop(keep_data_dir=_flag(KEEP_ENV))


@pytest.fixture(scope="session")
def flux(
    control_plane: ControlPlane, third_party_crds: list[str], request: pytest.FixtureRequest
) -> Iterator[Flux]:
    """Flux's source-controller and helm-controller, ready (their ``/readyz`` answers 200).

    With ``VWORKSPACE_TEST_KEEP=1`` their data directory (logs, artifacts) is kept."""
    try:
        binaries = ensure_controllers(os.environ, beside=control_plane.assets.directory)
    except FluxError as err:
        unavailable(str(err))
    running = Flux(plane=control_plane, binaries=binaries)
    yield from _serve(request, running, error=FluxError, stash_key=_flux_key)


def _assets_directory() -> Path | None:
    """The test-asset directory the control plane would use, where the builds put everything;
    None when there is none yet (the lookups then fall back to the cache)."""
    try:
        return assets_mod.find_assets(dict(os.environ)).directory
    except assets_mod.AssetsNotFoundError:
        return None


@pytest.fixture(scope="session")
def seaweed_s3(request: pytest.FixtureRequest) -> Iterator[SeaweedS3]:
    """SeaweedFS ``weed mini`` on 127.0.0.1, ready, with the bucket ``velero``.

    With ``VWORKSPACE_TEST_KEEP=1`` its data directory (data, keys, log) is kept."""
    try:
        binary = ensure_weed(os.environ, beside=_assets_directory())
    except S3Error as err:
        unavailable(str(err))
    yield from _serve(request, SeaweedS3(binary=binary), error=S3Error, stash_key=_s3_key)


@pytest.fixture(scope="session")
def velero(
    control_plane: ControlPlane,
    third_party_crds: list[str],
    vworkspace_crds: list[str],
    seaweed_s3: SeaweedS3,
    request: pytest.FixtureRequest,
) -> Iterator[Velero]:
    """The real ``velero server`` with the AWS plugin, its BackupStorageLocation ``default``
    Available on ``seaweed_s3``'s bucket. Started after the project's CRDs: Velero discovers
    what it can back up when it starts (then only every 5 minutes).

    With ``VWORKSPACE_TEST_KEEP=1`` its data directory (log, plugin folder) is kept."""
    try:
        binaries = ensure_binaries(os.environ, beside=control_plane.assets.directory)
    except VeleroError as err:
        unavailable(str(err))
    running = Velero(plane=control_plane, binaries=binaries, s3=seaweed_s3)
    yield from _serve(request, running, error=VeleroError, stash_key=_velero_key)


@pytest.fixture(scope="session")
def chart_repo() -> Iterator[ChartRepository]:
    """The test charts as a Helm HTTP repository on 127.0.0.1 (``chart_repo.url``)."""
    try:
        repo = start_chart_repository(os.environ)
    except ChartRepoError as err:
        unavailable(str(err))
    try:
        yield repo
    finally:
        repo.stop()


@pytest.fixture(scope="session")
def argo(
    control_plane: ControlPlane,
    third_party_crds: list[str],
    kwok_nodes: KwokNodes,
    request: pytest.FixtureRequest,
) -> Iterator[ArgoController]:
    """Argo Workflows' real ``workflow-controller`` (:mod:`vworkspace.testing.argo`), ready (its
    caches synced), cluster-wide, on the session's ``control_plane`` with ``kwok_nodes`` (whose
    stage ``pod-argo-exit.yaml`` finishes Workflow Pods). Built by
    ``scripts/build-backup-controllers.sh`` when missing in a checkout with Go; a missing binary
    skips (or fails under VWORKSPACE_REQUIRE_TESTENV). Once it has started, every Workflow of a
    later test in the session gets real status. With ``VWORKSPACE_TEST_KEEP=1`` its log is
    kept."""
    try:
        binary = ensure_controller(os.environ, beside=control_plane.assets.directory)
    except ArgoError as err:
        unavailable(str(err))
    running = ArgoController(plane=control_plane, binary=binary)
    yield from _serve(request, running, error=ArgoError, stash_key=_argo_key)
