"""The pytest plugin as a user meets it: namespaces per test, failure reports, KEEP mode, and the
upstream Flux and Velero CRDs."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from vworkspace.testing import ControlPlane

pytestmark = pytest.mark.integration

INNER_TEST = """
def test_uses_a_namespace(kube_namespace, control_plane):
    assert control_plane.rest().exists(f"/api/v1/namespaces/{kube_namespace}")
    print("NAMESPACE=" + kube_namespace)
    assert False, "deliberate failure"
"""


def run_inner(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    control_plane: ControlPlane,
    *,
    keep: bool,
) -> Any:
    pytester.makepyfile(test_inner=INNER_TEST)
    pytester.makeini("[pytest]\n")  # not the project's ini: only what we pass below
    monkeypatch.setenv("VWORKSPACE_TEST_ASSETS", str(control_plane.assets.directory))
    if keep:
        monkeypatch.setenv("VWORKSPACE_TEST_KEEP", "1")
    else:
        monkeypatch.delenv("VWORKSPACE_TEST_KEEP", raising=False)
    return pytester.runpytest_subprocess(
        "-p", "vworkspace.testing.pytest_plugin", "-s", timeout=180
    )


def test_failure_report_names_the_namespace_with_a_kubectl_command(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, control_plane: ControlPlane
) -> None:
    result = run_inner(pytester, monkeypatch, control_plane, keep=False)
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    namespace = re.search(r"NAMESPACE=(\S+)", out)
    assert namespace is not None, out
    assert f"namespace {namespace.group(1)} (deleted after the test" in out
    assert re.search(rf"kubectl --kubeconfig \S+ -n {namespace.group(1)} get ", out), out


def test_keep_mode_keeps_data_and_prints_the_kubeconfig(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, control_plane: ControlPlane
) -> None:
    result = run_inner(pytester, monkeypatch, control_plane, keep=True)
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    namespace = re.search(r"NAMESPACE=(\S+)", out)
    assert namespace is not None, out
    assert f"namespace {namespace.group(1)} (kept)" in out
    kept = re.search(r"kept data directory (\S+)", out)
    assert kept is not None, out
    kubeconfig = re.search(r"kubeconfig (\S+admin.kubeconfig)", out)
    assert kubeconfig is not None, out
    assert Path(kubeconfig.group(1)).is_file()
    assert (Path(kept.group(1)) / "etcd").is_dir()
    shutil.rmtree(kept.group(1))


def test_namespace_fixture_gives_a_fresh_labelled_namespace(
    control_plane: ControlPlane, kube_namespace: str
) -> None:
    ns = control_plane.rest().get(f"/api/v1/namespaces/{kube_namespace}")
    assert ns["status"]["phase"] == "Active"
    assert ns["metadata"]["labels"]["testing.vworkspace.io/test"] == "true"
    assert kube_namespace.startswith("t-test-namespace-fixture")


async def test_third_party_crds_are_established_and_enforce_their_schemas(
    third_party_crds: list[str], kube_api: client.ApiClient, kube_namespace: str
) -> None:
    assert {
        "helmreleases.helm.toolkit.fluxcd.io",
        "helmrepositories.source.toolkit.fluxcd.io",
        "ocirepositories.source.toolkit.fluxcd.io",
        "backups.velero.io",
        "restores.velero.io",
    } <= set(third_party_crds)
    api = client.CustomObjectsApi(kube_api)
    release = {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": "no-chart"},
        "spec": {"interval": "5m"},
    }
    # The upstream CEL rule "either chart or chartRef must be set" is enforced: a real schema.
    with pytest.raises(ApiException) as rejected:
        await api.create_namespaced_custom_object(
            "helm.toolkit.fluxcd.io", "v2", kube_namespace, "helmreleases", release
        )
    assert rejected.value.status == 422
    assert "chart" in rejected.value.body
    release["spec"]["chartRef"] = {"kind": "OCIRepository", "name": "repo"}
    created = await api.create_namespaced_custom_object(
        "helm.toolkit.fluxcd.io", "v2", kube_namespace, "helmreleases", release
    )
    assert created["status"]["observedGeneration"] == -1  # the upstream CRD's status default
