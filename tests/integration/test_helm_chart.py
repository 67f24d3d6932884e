"""The Helm chart (charts/vworkspace) and the release artifacts, against the real `helm` CLI and
the test API server.

* `helm lint`; `helm template` with the default values and with every optional feature on; a
  server-side dry-run of each rendering (cert-manager and Prometheus Operator objects are
  checked by shape: their CRDs are documented prerequisites, absent from the test control plane).
* The chart's RBAC equals the kustomize RBAC, object by object (manifests/rbac is the one
  source; whatever it contains must come out of both).
* The chart's Deployment equals the kustomize one in flags, hardening and probes.
* `python -m vworkspace manifests release`: SHA256SUMS verifies, operator.yaml equals
  `kubectl kustomize manifests/` and applies with a server-side dry-run, the packaged chart
  lints and renders like the chart directory.

Needs `helm` beside kubectl (scripts/build-test-assets.sh builds both), or $VWORKSPACE_HELM.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from vworkspace.app import chart_readme, release
from vworkspace.testing import ControlPlane

from .test_install_manifests import (
    MANIFESTS,
    NAMESPACE,
    assert_server_dry_run_accepts,
    container,
    find,
    find_kubectl,
    render,
    run,
    to_yaml,
)

pytestmark = pytest.mark.integration

ROOT = MANIFESTS.parent
CHART = ROOT / "charts" / "vworkspace"
Doc = dict[str, Any]
RBAC_KINDS = {"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
ALL_ON = [
    "webhooks.enabled=true",
    "serviceMonitor.enabled=true",
    "networkPolicy.enabled=true",
    "agent.registration.enabled=true",
    "agent.registration.clusterName=chart-test",
    "agent.registration.controlPlaneEndpoint=https://cp.example",
    "agent.registration.token=one-time",
    "agent.controlPlaneBaseUrl=https://cp.example",
    "agent.pollInterval=10s",
    "agent.egress.proxy=http://proxy.corp:3128",
    "agent.egress.pinSha256[0]=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
    "metrics.readers[0].name=prometheus",
    "metrics.readers[0].namespace=monitoring",
    "imagePullSecrets[0].name=regcred",
    "extraArgs[0]=--velero-namespace",
    "extraArgs[1]=backups",
    "extraEnv[0].name=EXTRA",
    "extraEnv[0].value=on",
    "nodeSelector.kubernetes\\.io/os=linux",
    "tolerations[0].operator=Exists",
    "serviceAccount.annotations.team=platform",
]
# Kinds whose CRDs the test control plane does not have (documented prerequisites).
FOREIGN = ("cert-manager.io/", "monitoring.coreos.com/")


def find_helm() -> str | None:
    if os.environ.get("VWORKSPACE_HELM"):
        return os.environ["VWORKSPACE_HELM"]
    kubectl = find_kubectl()
    if kubectl is not None:
        beside = Path(kubectl).with_name("helm")
        if os.access(beside, os.X_OK):
            return str(beside)
    return shutil.which("helm")


def require(tool: str, path: str | None) -> str:
    if path is None:
        reason = (
            f"{tool} is not beside the test binaries nor on PATH (scripts/build-test-assets.sh)"
        )
        if os.environ.get("VWORKSPACE_REQUIRE_TESTENV", "").strip().lower() in {"1", "true"}:
            pytest.fail(f"VWORKSPACE_REQUIRE_TESTENV is set and {reason}", pytrace=False)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def helm() -> str:
    return require("helm", find_helm())


@pytest.fixture(scope="module")
def kubectl() -> str:
    return require("kubectl", find_kubectl())


def helm_run(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=120)


def template(helm: str, chart: Path, *sets: str) -> list[Doc]:
    args = ["template", "vworkspace", str(chart), "--namespace", NAMESPACE, "--include-crds"]
    for value in sets:
        args += ["--set", value]
    done = helm_run(helm, *args)
    assert done.returncode == 0, f"helm template failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def defaults(helm: str) -> list[Doc]:
    return template(helm, CHART)


@pytest.fixture(scope="module")
def all_on(helm: str) -> list[Doc]:
    return template(helm, CHART, *ALL_ON)


@pytest.fixture(scope="module")
def kustomized(kubectl: str) -> list[Doc]:
    return render(kubectl, MANIFESTS)


def key(doc: Doc) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def without_labels(doc: Doc) -> Doc:
    meta = {k: v for k, v in doc["metadata"].items() if k not in {"labels", "annotations"}}
    return {**doc, "metadata": meta}


# -- the chart ------------------------------------------------------------------------------------


def test_helm_lint_passes_with_defaults_and_all_features(helm: str) -> None:
    for sets in ([], ALL_ON):
        args = ["lint", str(CHART), "--strict"]
        for value in sets:
            args += ["--set", value]
        done = helm_run(helm, *args)
        assert done.returncode == 0, f"helm lint {sets}:\n{done.stdout}\n{done.stderr}"
        assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout


def test_chart_versions_and_readme_are_current() -> None:
    meta = release.chart_metadata(CHART)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["appVersion"] == project["version"]
    assert chart_readme.update(CHART, check=True), (
        "charts/vworkspace/README.md is stale: python -m vworkspace manifests chart-readme"
    )
    rows = {row[0] for row in chart_readme.rows((CHART / "values.yaml").read_text())}
    for documented in ("image.repository", "agent.enabled", "webhooks.enabled", "extraArgs"):
        assert documented in rows


def test_the_chart_rbac_is_the_kustomize_rbac(defaults: list[Doc], kustomized: list[Doc]) -> None:
    # Every RBAC object of manifests/ (whatever manifests/rbac holds) comes out of the chart with
    # the same rules, role references and subjects; only labels differ.
    chart = {key(d): without_labels(d) for d in defaults if d["kind"] in RBAC_KINDS}
    kustomize = {key(d): without_labels(d) for d in kustomized if d["kind"] in RBAC_KINDS}
    assert sorted(chart) == sorted(kustomize)
    for name, doc in kustomize.items():
        assert chart[name] == doc, name
    aggregated = {
        d["metadata"]["name"]: d["metadata"]["labels"]
        for d in defaults
        if any(
            k.startswith("rbac.authorization.k8s.io/aggregate-to-")
            for k in d["metadata"].get("labels", {})
        )
    }
    for kind in ("applicationinstance", "operation"):
        for level, target in (("admin", "admin"), ("editor", "edit"), ("viewer", "view")):
            labels = aggregated[f"vworkspace-{kind}-{level}"]
            assert labels[f"rbac.authorization.k8s.io/aggregate-to-{target}"] == "true"
    off = [d for d in defaults if d["kind"] in RBAC_KINDS and key(d)[1] not in aggregated]
    assert len(off) == len(chart) - 6


def test_the_aggregated_roles_can_be_left_out(helm: str) -> None:
    docs = template(helm, CHART, "rbac.aggregateToDefaultRoles=false")
    names = {d["metadata"]["name"] for d in docs if d["kind"] == "ClusterRole"}
    assert names == {"vworkspace-operator", "vworkspace-metrics-reader"}


def test_the_chart_deployment_is_the_kustomize_deployment(
    defaults: list[Doc], kustomized: list[Doc]
) -> None:
    chart = find(defaults, "Deployment", "vworkspace-operator")
    kustomize = find(kustomized, "Deployment", "vworkspace-operator")
    ours, theirs = container(chart), container(kustomize)
    assert ours["args"] == theirs["args"]
    assert (
        ours["image"]
        == f"ghcr.io/vworkspace/vworkspace-operator:{release.chart_metadata(CHART)['appVersion']}"
    )
    for field in (
        "securityContext",
        "livenessProbe",
        "readinessProbe",
        "resources",
        "env",
        "ports",
        "volumeMounts",
    ):
        assert ours[field] == theirs[field], field
    pod, their_pod = chart["spec"]["template"]["spec"], kustomize["spec"]["template"]["spec"]
    for field in (
        "securityContext",
        "volumes",
        "serviceAccountName",
        "terminationGracePeriodSeconds",
    ):
        assert pod[field] == their_pod[field], field
    assert chart["spec"]["strategy"] == kustomize["spec"]["strategy"]
    crds = sorted(
        d["metadata"]["name"] for d in defaults if d["kind"] == "CustomResourceDefinition"
    )
    assert crds == sorted(
        d["metadata"]["name"] for d in kustomized if d["kind"] == "CustomResourceDefinition"
    )
    service = find(defaults, "Service", "vworkspace-operator-metrics")
    assert service["spec"] == find(kustomized, "Service", "vworkspace-operator-metrics")["spec"]


def test_every_optional_feature_renders(all_on: list[Doc], kubectl: str) -> None:
    cont = container(find(all_on, "Deployment", "vworkspace-operator"))
    args = cont["args"]
    assert args[-2:] == ["--velero-namespace", "backups"]  # extraArgs last: they win
    for flag in ("--webhooks-enabled", "--control-plane-base-url", "--agent-poll-interval"):
        assert flag in args
    assert args[args.index("--control-plane-proxy") + 1] == "http://proxy.corp:3128"
    pin = args[args.index("--control-plane-pin-sha256") + 1]
    assert pin == "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
    assert {"name": "EXTRA", "value": "on"} in cont["env"]
    pod = find(all_on, "Deployment", "vworkspace-operator")["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"] == [{"operator": "Exists"}]
    # The webhook configuration is manifests/webhook's, with the same paths and rules.
    webhook_dir = render(kubectl, MANIFESTS / "webhook")
    vwc = find(all_on, "ValidatingWebhookConfiguration", "vworkspace-validating-webhooks")
    theirs = find(webhook_dir, "ValidatingWebhookConfiguration", "vworkspace-validating-webhooks")
    assert vwc["webhooks"] == theirs["webhooks"]
    assert vwc["metadata"]["annotations"] == theirs["metadata"]["annotations"]
    certificate = find(all_on, "Certificate", "vworkspace-webhook-cert")
    assert (
        certificate["spec"] == find(webhook_dir, "Certificate", "vworkspace-webhook-cert")["spec"]
    )
    # ServiceMonitor and NetworkPolicy: manifests/monitoring's, the webhook port opened too.
    monitoring = render(kubectl, MANIFESTS / "monitoring")
    monitor = find(all_on, "ServiceMonitor", "vworkspace-operator")
    assert monitor["spec"] == find(monitoring, "ServiceMonitor", "vworkspace-operator")["spec"]
    service = find(all_on, "Service", "vworkspace-operator-metrics")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    policy = find(all_on, "NetworkPolicy", "vworkspace-operator-metrics")
    theirs_policy = find(monitoring, "NetworkPolicy", "vworkspace-operator-metrics")
    assert policy["spec"]["ingress"][0] == theirs_policy["spec"]["ingress"][0]
    assert policy["spec"]["ingress"][1] == {"ports": [{"port": "webhook", "protocol": "TCP"}]}
    template_labels = find(all_on, "Deployment", "vworkspace-operator")["spec"]["template"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= (
        template_labels["metadata"]["labels"].items()
    )
    # Registration: a Cluster pointing at the token Secret the chart wrote.
    cluster = find(all_on, "Cluster", "chart-test")
    secret = find(all_on, "Secret", "chart-test-registration-token")
    ref = cluster["spec"]["registrationTokenSecretRef"]
    assert (ref["name"], secret["stringData"][ref["key"]]) == (
        secret["metadata"]["name"],
        "one-time",
    )
    binding = find(all_on, "ClusterRoleBinding", "vworkspace-metrics-reader")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "prometheus", "namespace": "monitoring"}
    ]
    account = find(all_on, "ServiceAccount", "vworkspace-operator")
    assert account["metadata"]["annotations"] == {"team": "platform"}


def test_the_chart_follows_the_release_namespace(helm: str) -> None:
    done = helm_run(
        helm, "template", "v", str(CHART), "-n", "ops", "--set", "webhooks.enabled=true"
    )
    assert done.returncode == 0, done.stderr
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    for doc in docs:
        if doc["kind"] in {"Role", "RoleBinding", "ServiceAccount", "Deployment", "Service"}:
            assert doc["metadata"]["namespace"] == "ops", key(doc)
        for subject in doc.get("subjects", []):
            assert subject["namespace"] == "ops"
    vwc = find(docs, "ValidatingWebhookConfiguration", "vworkspace-validating-webhooks")
    assert {w["clientConfig"]["service"]["namespace"] for w in vwc["webhooks"]} == {"ops"}


def test_bad_values_fail_naming_the_value(helm: str) -> None:
    for sets, words in [
        (["webhooks.enabled=true", "webhooks.certManager.enabled=false"], "webhooks."),
        (["agent.registration.enabled=true"], "agent.registration.clusterName"),
    ]:
        args = ["template", "v", str(CHART)]
        for value in sets:
            args += ["--set", value]
        done = helm_run(helm, *args)
        assert done.returncode != 0
        assert words in done.stderr, done.stderr


@pytest.mark.parametrize("rendering", ["defaults", "all_on"])
def test_the_api_server_accepts_the_chart_in_a_server_dry_run(
    rendering: str,
    request: pytest.FixtureRequest,
    kubectl: str,
    control_plane: ControlPlane,
    install_namespace: str,
    vworkspace_crds: list[str],
) -> None:
    docs: list[Doc] = request.getfixturevalue(rendering)
    foreign = [d for d in docs if d["apiVersion"].startswith(FOREIGN)]
    ours = [d for d in docs if d not in foreign]
    expected = ["Certificate", "Issuer", "ServiceMonitor"] if rendering == "all_on" else []
    assert sorted(d["kind"] for d in foreign) == expected
    assert_server_dry_run_accepts(
        kubectl,
        ours,
        "--server-side",
        "--field-manager=helm",
        kubeconfig=control_plane.kubeconfig_path,
    )


@pytest.fixture(scope="module")
def install_namespace(kubectl: str, control_plane: ControlPlane, kustomized: list[Doc]) -> str:
    """vworkspace-system, created for real (a dry run persists nothing, see
    test_install_manifests.install_namespace). Left in place for the session's throwaway
    control plane: deleted here, it would still be Terminating when test_install_manifests
    (next in order) applies the same Namespace and dry-runs into it."""
    namespace = find(kustomized, "Namespace", NAMESPACE)
    done = run(
        kubectl,
        "apply",
        "-f",
        "-",
        stdin=to_yaml([namespace]),
        kubeconfig=control_plane.kubeconfig_path,
    )
    assert done.returncode == 0, done.stderr
    return NAMESPACE


# -- release artifacts ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("release")
    done = subprocess.run(
        [sys.executable, "-m", "vworkspace", "manifests", "release", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return out


def test_the_release_artifacts_verify(released: Path) -> None:
    chart = release.chart_metadata(CHART)
    names = sorted(p.name for p in released.iterdir())
    assert names == sorted(
        ["crds.yaml", "operator.yaml", "SHA256SUMS", f"vworkspace-{chart['version']}.tgz"]
    )
    sums = (released / "SHA256SUMS").read_text().splitlines()
    assert len(sums) == 3
    for line in sums:
        digest, name = line.split("  ")
        assert hashlib.sha256((released / name).read_bytes()).hexdigest() == digest, name
    if shutil.which("sha256sum"):
        done = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=released, capture_output=True)
        assert done.returncode == 0, done.stdout
    # Reproducible: the same tree gives the same bytes.
    again = release.write_release(manifests=MANIFESTS, chart=CHART, out=released.parent / "again")
    assert again[-1].read_text() == (released / "SHA256SUMS").read_text()


def test_operator_yaml_is_the_kustomize_base(released: Path, kustomized: list[Doc]) -> None:
    docs = [d for d in yaml.safe_load_all((released / "operator.yaml").read_text()) if d]
    canonical = functools.partial(json.dumps, sort_keys=True)
    assert sorted(map(canonical, docs)) == sorted(map(canonical, kustomized))
    assert docs[0]["kind"] == "Namespace"
    crds = [d for d in yaml.safe_load_all((released / "crds.yaml").read_text()) if d]
    assert crds == [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    assert len(crds) == 3


def test_operator_yaml_applies_in_a_server_dry_run(
    released: Path, kubectl: str, control_plane: ControlPlane, install_namespace: str
) -> None:
    docs = [d for d in yaml.safe_load_all((released / "operator.yaml").read_text()) if d]
    done = run(
        kubectl,
        "apply",
        "--dry-run=server",
        "-f",
        str(released / "operator.yaml"),
        kubeconfig=control_plane.kubeconfig_path,
    )
    assert done.returncode == 0, f"server dry run failed:\n{done.stderr}\n{done.stdout}"
    lines = [line for line in done.stdout.splitlines() if line.endswith("(server dry run)")]
    assert len(lines) == len(docs), done.stdout


def test_the_packaged_chart_lints_and_renders_like_the_directory(
    released: Path, helm: str, defaults: list[Doc]
) -> None:
    (package,) = released.glob("*.tgz")
    done = helm_run(helm, "lint", str(package))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "symbolic link" not in done.stderr  # self-contained: the links were followed
    assert template(helm, package) == defaults
