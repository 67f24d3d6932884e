"""The real tier (issue 25): real controllers answer instead of the tests. kwok's simulated
Nodes with the real kube-scheduler and workload controllers (the ``kwok_nodes`` fixture), so
Deployments, Jobs and their Pods get the status those controllers write; Flux's
source-controller and helm-controller (the ``flux`` fixture) install charts from the local chart
repository (``chart_repo``). Every test here is marked ``real`` and ``integration``. Run it in a
pytest session of its own: once ``kwok_nodes`` or ``flux`` has started, later tests of the same
session would meet controllers they do not expect.

The operator in this tier runs as it runs in a cluster (``real_operator``): a separate
``python -m vworkspace run`` process with the shipped ServiceAccount's token and only the
shipped RBAC, never the admin kubeconfig; any 403 it receives fails the test at teardown."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.operator_process import OperatorProcess
from vworkspace.kube.rest.resources import APPLICATION_INSTANCES, OPERATIONS
from vworkspace.testing import ControlPlane
from vworkspace.testing.identity import ShippedIdentity

IN_CLUSTER = "in-cluster"
KUBECONFIG_TOKEN = "kubeconfig-token"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.real)
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def real_operator(
    control_plane: ControlPlane,
    kube_namespace: str,
    shipped_identity: ShippedIdentity,
    vworkspace_crds: list[str],
    third_party_crds: list[str],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[OperatorProcess]:
    """The operator as ``python -m vworkspace run`` (agent off), under the shipped identity.

    By default it loads a token-only kubeconfig; parametrize indirectly with ``"in-cluster"``
    for the in-cluster loader (service-account files and ``KUBERNETES_SERVICE_HOST/PORT``, as a
    kubelet provides them). Teardown fails on any 403 (its metrics and its log), so a rule
    missing from manifests/rbac cannot hide behind a passing test. A subprocess rather than the
    in-process manager: that is the only way the operator's own client, loader and identity are
    the ones under test. Before it stops, the test's Operations and ApplicationInstances are
    deleted and awaited (:func:`remove_while_running`)."""
    mode = getattr(request, "param", KUBECONFIG_TOKEN)
    if mode not in (IN_CLUSTER, KUBECONFIG_TOKEN):
        raise ValueError(f"real_operator: unknown mode {mode!r}")
    operator = OperatorProcess(
        control_plane,
        shipped_identity.namespace,
        tmp_path / "operator.log",
        "--agent-enabled=false",
        "--log-format",
        "json",
        identity=shipped_identity,
        in_cluster=mode == IN_CLUSTER,
    )
    try:
        operator.wait_ready()
        yield operator
        remove_while_running(control_plane, kube_namespace)
    finally:
        operator.stop()  # AssertionError naming every 403, after the test's own verdict


def remove_while_running(plane: ControlPlane, namespace: str, *, timeout: float = 60) -> None:
    """Delete the namespace's Operations and ApplicationInstances and wait until the running
    operator has released their finalizers.

    Why: ``kube_namespace`` only starts the namespace's deletion. An instance left there keeps
    its finalizer once its operator has stopped, so the next test's operator (which watches
    every namespace) would reconcile it in a terminating namespace and get 403 "being
    terminated" from the API server's NamespaceLifecycle admission: no RBAC defect, yet a 403
    that the 403 check must count."""
    rest = plane.rest()
    for resource in (OPERATIONS, APPLICATION_INSTANCES):
        path = str(resource.collection_path(namespace))
        rest.delete(path)  # deletecollection: each object then waits for its finalizer

        def gone(path: str = path) -> bool:
            return not rest.get(path)["items"]

        what = f"the {resource.kind}s in {namespace} to be gone (their finalizers released)"
        rest.wait_for(what, gone, timeout=timeout)
