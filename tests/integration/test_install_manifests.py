"""The install manifests (manifests/ and its overlays) render with `kubectl kustomize`, say what
they must, are accepted by a real API server, and their RBAC is enough to run the operator.

* Render checks: the kinds of the full install, no wildcard RBAC, a hardened Deployment whose
  flags the real CLI parser accepts, the webhook configuration of docs/webhooks.md, the
  mock overlay and the image override.
* `kubectl apply --dry-run=server` of every rendering against the test control plane, and a
  server dry run of each Pod template under the namespace's `restricted` Pod Security level.
* The operator runs as the manifests' ServiceAccount, with nothing but the manifests' RBAC:
  leader election, registration through a Cluster, an agent job into a new namespace, Flux and
  Velero objects from the samples; no request of it is forbidden.

Needs `kubectl` (for its built-in kustomize): $VWORKSPACE_KUBECTL, the one built beside the
test binaries, or on PATH. Without it the tests skip, saying so, unless VWORKSPACE_REQUIRE_TESTENV is set (CI),
where that is a failure.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from vworkspace.app import run_cmd
from vworkspace.app.cli import build_parser
from vworkspace.app.http import Address
from vworkspace.engines.workload import workload_name
from vworkspace.mockcontrolplane import AdminClient
from vworkspace.testing import ApiError, ControlPlane
from vworkspace.testing.identity import ShippedIdentity, find_kubectl
from vworkspace.testing.objects import managed_instance
from vworkspace.webhooks.server import INSTANCE_PATH, OPERATION_PATH

from .operator_process import MockProcess, OperatorProcess, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
NAMESPACE = "vworkspace-system"
SERVICE_ACCOUNT = "vworkspace-operator"
IMAGE = "ghcr.io/vworkspace/vworkspace-operator"
TAG = "0.1.0"
CERT_DIR = "/tmp/k8s-webhook-server/serving-certs"
CERT_MANAGER_GROUP = "cert-manager.io"
Doc = dict[str, Any]


# -- helpers ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kubectl() -> str:
    path = find_kubectl(os.environ)
    if path is None:
        reason = (
            "kubectl is not on PATH nor beside the test binaries, and VWORKSPACE_KUBECTL is "
            "unset (the manifests are rendered with `kubectl kustomize`)"
        )
        if os.environ.get("VWORKSPACE_REQUIRE_TESTENV", "").strip().lower() in {"1", "true"}:
            pytest.fail(f"VWORKSPACE_REQUIRE_TESTENV is set and {reason}", pytrace=False)
        pytest.skip(reason)
    return path


def run(
    kubectl: str, *args: str, stdin: str | None = None, kubeconfig: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    return subprocess.run(
        [kubectl, *args], input=stdin, capture_output=True, text=True, env=env, timeout=120
    )


def render(kubectl: str, directory: Path) -> list[Doc]:
    done = run(kubectl, "kustomize", str(directory))
    assert done.returncode == 0, f"kubectl kustomize {directory} failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def container(deployment: Doc) -> Doc:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: Doc = containers[0]
    return result


def port_number(cont: Doc, port: int | str) -> int:
    if isinstance(port, int):
        return port
    return int(next(p["containerPort"] for p in cont.get("ports", []) if p["name"] == port))


def parse_cli(args: list[str]) -> Any:
    """What `python -m vworkspace ARGS` would parse; a flag the CLI does not know fails here."""
    try:
        return build_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"python -m vworkspace does not accept {args}")


def to_yaml(docs: list[Doc]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)


def assert_server_dry_run_accepts(
    kubectl: str, docs: list[Doc], *flags: str, kubeconfig: Path
) -> None:
    """``kubectl apply --dry-run=server FLAGS`` of ``docs``: every object accepted, no Pod
    Security warning. (kubectl 1.32 against a 1.36 server may warn about the version skew on
    stderr; that is fine.)"""
    done = run(
        kubectl,
        "apply",
        "--dry-run=server",
        *flags,
        "-f",
        "-",
        stdin=to_yaml(docs),
        kubeconfig=kubeconfig,
    )
    assert done.returncode == 0, f"server dry run failed:\n{done.stderr}\n{done.stdout}"
    lines = [line for line in done.stdout.splitlines() if line.endswith("(server dry run)")]
    assert len(lines) == len(docs), done.stdout
    assert "Warning: would violate PodSecurity" not in done.stderr


@pytest.fixture(scope="module")
def base(kubectl: str) -> list[Doc]:
    return render(kubectl, MANIFESTS)


@pytest.fixture(scope="module")
def webhook(kubectl: str) -> list[Doc]:
    return render(kubectl, MANIFESTS / "webhook")


@pytest.fixture(scope="module")
def mock(kubectl: str) -> list[Doc]:
    return render(kubectl, MANIFESTS / "mock-control-plane")


# -- rendering ------------------------------------------------------------------------------------


def test_the_base_renders_the_full_install_and_nothing_else(kubectl: str, base: list[Doc]) -> None:
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in base)
    crds = sorted(
        yaml.safe_load(p.read_text())["metadata"]["name"]
        for p in (MANIFESTS / "crds").glob("*_*.yaml")
    )
    assert len(crds) == 3
    assert kinds == sorted(
        [
            ("Namespace", NAMESPACE),
            *(("CustomResourceDefinition", name) for name in crds),
            ("ServiceAccount", SERVICE_ACCOUNT),
            ("ClusterRole", "vworkspace-operator"),
            ("ClusterRole", "vworkspace-metrics-reader"),
            *(
                ("ClusterRole", f"vworkspace-{kind}-{level}")
                for kind in ("applicationinstance", "operation")
                for level in ("admin", "editor", "viewer")
            ),
            ("ClusterRoleBinding", "vworkspace-operator"),
            ("Role", "vworkspace-operator"),
            ("RoleBinding", "vworkspace-operator"),
            ("Role", "vworkspace-leader-election"),
            ("RoleBinding", "vworkspace-leader-election"),
            ("Deployment", "vworkspace-operator"),
            ("Service", "vworkspace-operator-metrics"),
        ]
    )
    # The CRDs are the generated files, unchanged (kustomize only adds the part-of label).
    for path in (MANIFESTS / "crds").glob("*_*.yaml"):
        generated = yaml.safe_load(path.read_text())
        rendered = find(base, "CustomResourceDefinition", generated["metadata"]["name"])
        assert rendered["spec"] == generated["spec"]
    # No samples, and every namespaced object in the operator's namespace.
    assert not {"ApplicationInstance", "Operation", "Cluster"} & {d["kind"] for d in base}
    cluster_scoped = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}
    for doc in base:
        if doc["kind"] not in cluster_scoped:
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]
    # manifests/ only points at manifests/base (see manifests/kustomization.yaml).
    assert render(kubectl, MANIFESTS / "base") == base


@pytest.mark.parametrize("rendering", ["base", "webhook", "mock"])
def test_rbac_has_no_wildcards_and_binds_only_the_operator(
    rendering: str, request: pytest.FixtureRequest
) -> None:
    docs: list[Doc] = request.getfixturevalue(rendering)
    roles = {(d["kind"], d["metadata"]["name"]): d for d in docs if d["kind"].endswith("Role")}
    # For scrapers, bound by the user: GET /metrics and nothing else.
    reader = roles.pop(("ClusterRole", "vworkspace-metrics-reader"))
    assert reader["rules"] == [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]
    # For people, aggregated into admin/edit/view (rbac/user_roles.yaml): their own kinds only,
    # status read-only, bound by nothing here.
    for kind, group in (
        ("applicationinstance", "apps.vworkspace.io"),
        ("operation", "ops.vworkspace.io"),
    ):
        for level, target in (("admin", "admin"), ("editor", "edit"), ("viewer", "view")):
            role = roles.pop(("ClusterRole", f"vworkspace-{kind}-{level}"))
            label = f"rbac.authorization.k8s.io/aggregate-to-{target}"
            assert role["metadata"]["labels"][label] == "true"
            assert {g for rule in role["rules"] for g in rule["apiGroups"]} == {group}
            status = [r for r in role["rules"] if r["resources"] == [f"{kind}s/status"]]
            assert status == [
                {
                    "apiGroups": [group],
                    "resources": [f"{kind}s/status"],
                    "verbs": ["get", "list", "watch"],
                }
            ]
    assert len(roles) == 3
    for (kind, name), role in roles.items():
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(field, []), f"{kind} {name}: wildcard in {field}"
                assert not any("*" in value for value in rule.get(field, [])), (kind, name, rule)
            assert "nonResourceURLs" not in rule
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
    cluster_resources = {
        (group, resource)
        for rule in roles[("ClusterRole", "vworkspace-operator")]["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    # ConfigMaps: written only in the operator's namespace (namespaced Roles); cluster-wide only
    # `get` by name (native SeaweedFS values). Secrets also create/patch/delete by name (the
    # values Secret of an instance with encrypted values), never list, watch or update.
    for rule in roles[("ClusterRole", "vworkspace-operator")]["rules"]:
        if "configmaps" in rule["resources"]:
            assert rule["verbs"] == ["get"], rule
        if "secrets" in rule["resources"]:
            assert rule["verbs"] == ["create", "delete", "get", "patch"], rule
    assert ("coordination.k8s.io", "leases") not in cluster_resources
    for needed in [
        ("events.k8s.io", "events"),
        ("", "events"),
        ("", "namespaces"),
        ("apps.vworkspace.io", "applicationinstances"),
        ("ops.vworkspace.io", "operations"),
        ("ops.vworkspace.io", "clusters"),
        ("helm.toolkit.fluxcd.io", "helmreleases"),
        ("velero.io", "backups"),
        ("batch", "jobs"),
        ("argoproj.io", "workflows"),
        ("", "serviceaccounts"),
        ("seaweed.seaweedfs.com", "seaweeds"),
        ("seaweed.seaweedfs.com", "s3credentials"),
        ("", "services"),
        ("authentication.k8s.io", "tokenreviews"),  # secure metrics
        ("authorization.k8s.io", "subjectaccessreviews"),
    ]:
        assert needed in cluster_resources, needed
    bindings = [d for d in docs if d["kind"].endswith("RoleBinding")]
    assert len(bindings) == 3
    for binding in bindings:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}
        ]
        ref = binding["roleRef"]
        assert (ref["kind"], ref["name"]) in roles
        assert (binding["kind"] == "ClusterRoleBinding") == (ref["kind"] == "ClusterRole")


def test_the_operator_deployment_is_hardened_and_its_flags_are_real(base: list[Doc]) -> None:
    deployment = find(base, "Deployment", "vworkspace-operator")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    cont = container(deployment)
    assert spec["replicas"] == 1
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert pod["serviceAccountName"] == SERVICE_ACCOUNT
    assert cont["image"] == f"{IMAGE}:{TAG}"
    assert cont["args"] == [
        "run",
        "--leader-elect",
        "--agent-enabled",
        "--metrics-bind-address",
        ":8443",
        "--health-probe-bind-address",
        ":8081",
        "--log-format",
        "json",
    ]
    # Non-root, read-only, no privilege: the restricted Pod Security profile and then some.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = cont["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    # The only writable path is an emptyDir at /tmp.
    mounts = {m["mountPath"]: m["name"] for m in cont["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    # Probes on the probe listener; requests and a memory limit.
    assert cont["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert cont["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe"):
        assert port_number(cont, cont[probe]["httpGet"]["port"]) == 8081
    assert set(cont["resources"]["requests"]) == {"cpu", "memory"}
    assert "memory" in cont["resources"]["limits"]
    env = {e["name"]: e for e in cont["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    # The metrics Service reaches the metrics listener.
    service = find(base, "Service", "vworkspace-operator-metrics")
    assert service["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    assert (port["name"], port["port"], port_number(cont, port["targetPort"])) == (
        "metrics",
        8443,
        8443,
    )
    # The real CLI turns these flags into the intended settings inside a Pod.
    settings = run_cmd.settings_from(
        parse_cli(cont["args"]), {"POD_NAMESPACE": NAMESPACE, "KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    )
    assert settings.leader_elect
    assert settings.in_cluster
    assert settings.namespace == NAMESPACE
    assert settings.metrics is not None
    assert settings.metrics.port == 8443
    assert settings.probes is not None
    assert settings.probes.port == 8081
    assert settings.metrics_secure  # HTTPS + TokenReview/SubjectAccessReview by default
    assert settings.agent is not None  # idles until the cluster is registered


def test_the_webhook_overlay_adds_the_webhooks_of_the_spec(
    base: list[Doc], webhook: list[Doc]
) -> None:
    vwc = find(webhook, "ValidatingWebhookConfiguration", "vworkspace-validating-webhooks")
    assert vwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        f"{NAMESPACE}/vworkspace-webhook-cert"
    )
    expected = {
        "vapplicationinstance.kb.io": (
            "/validate-apps-vworkspace-io-v1alpha1-applicationinstance",
            "apps.vworkspace.io",
            "applicationinstances",
        ),
        "voperation.kb.io": (
            "/validate-ops-vworkspace-io-v1alpha1-operation",
            "ops.vworkspace.io",
            "operations",
        ),
    }
    assert {w["name"] for w in vwc["webhooks"]} == set(expected)
    # The paths the operator's webhook server serves are Go's (docs/webhooks.md).
    assert {INSTANCE_PATH, OPERATION_PATH} == {path for path, _, _ in expected.values()}
    for hook in vwc["webhooks"]:
        path, group, resource = expected[hook["name"]]
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["sideEffects"] == "None"
        assert hook["failurePolicy"] == "Fail"
        assert hook["timeoutSeconds"] == 5
        assert hook["matchPolicy"] == "Equivalent"
        assert hook["clientConfig"]["service"] == {
            "name": "vworkspace-webhook",
            "namespace": NAMESPACE,
            "path": path,
            "port": 443,
        }
        (rule,) = hook["rules"]
        assert rule["apiGroups"] == [group]
        assert rule["apiVersions"] == ["v1alpha1"]
        assert rule["resources"] == [resource]  # the main resource, not status
        assert sorted(rule["operations"]) == ["CREATE", "UPDATE"]
    deployment = find(webhook, "Deployment", "vworkspace-operator")
    cont = container(deployment)
    service = find(webhook, "Service", "vworkspace-webhook")
    (port,) = service["spec"]["ports"]
    assert port["port"] == 443
    assert port_number(cont, port["targetPort"]) == 9443
    assert service["spec"]["selector"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    # The base flags stay, the webhook flags are appended, and the CLI knows them.
    base_args = container(find(base, "Deployment", "vworkspace-operator"))["args"]
    assert cont["args"] == [*base_args, "--webhooks-enabled", "--webhook-cert-path", CERT_DIR]
    parsed = parse_cli(cont["args"])
    assert parsed.webhooks_enabled
    assert parsed.webhook_cert_path == CERT_DIR
    listener = Address.parse(parsed.webhook_bind_address)
    assert listener is not None
    assert listener.port == 9443
    # cert-manager writes the Secret that is mounted where --webhook-cert-path points.
    certificate = find(webhook, "Certificate", "vworkspace-webhook-cert")
    assert certificate["metadata"]["namespace"] == NAMESPACE
    assert certificate["spec"]["dnsNames"] == [
        f"vworkspace-webhook.{NAMESPACE}.svc",
        f"vworkspace-webhook.{NAMESPACE}.svc.cluster.local",
    ]
    issuer = find(webhook, "Issuer", certificate["spec"]["issuerRef"]["name"])
    assert issuer["spec"] == {"selfSigned": {}}
    mount = next(m for m in cont["volumeMounts"] if m["mountPath"] == CERT_DIR)
    assert mount["readOnly"] is True
    volume = next(
        v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]
    )
    assert volume["secret"]["secretName"] == certificate["spec"]["secretName"]
    # Everything else is the base, unchanged.
    others = [
        d
        for d in webhook
        if (d["kind"], d["metadata"]["name"]) != ("Deployment", "vworkspace-operator")
    ]
    for doc in base:
        if doc["kind"] != "Deployment":
            assert doc in others, (doc["kind"], doc["metadata"]["name"])


def test_the_mock_overlay_runs_the_mock_and_registers_through_a_cluster(
    kubectl: str, base: list[Doc], mock: list[Doc]
) -> None:
    operator = container(find(mock, "Deployment", "vworkspace-operator"))
    base_args = container(find(base, "Deployment", "vworkspace-operator"))["args"]
    # The agent is on in the base already; the mock serves plain http, which only this
    # evaluation overlay allows (the base requires https).
    assert operator["args"] == [*base_args, "--allow-insecure-control-plane"]
    assert parse_cli(operator["args"]).agent_enabled
    assert parse_cli(operator["args"]).allow_insecure_control_plane
    assert not parse_cli(base_args).allow_insecure_control_plane
    deployment = find(mock, "Deployment", "vworkspace-mock-control-plane")
    cont = container(deployment)
    assert cont["image"] == operator["image"] == f"{IMAGE}:{TAG}"
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # one in-memory queue
    assert cont["securityContext"]["readOnlyRootFilesystem"] is True
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    args = parse_cli(cont["args"])
    listener = Address.parse(args.addr)
    assert listener is not None
    assert listener.port == 8080
    assert cont["readinessProbe"]["httpGet"]["path"] == "/healthz"
    service = find(mock, "Service", "vworkspace-mock-control-plane")
    (port,) = service["spec"]["ports"]
    assert port_number(cont, port["targetPort"]) == 8080
    assert service["spec"]["selector"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    # registration/ points the Cluster at that Service with the mock's one-time token.
    registration = render(kubectl, MANIFESTS / "mock-control-plane" / "registration")
    cluster = next(d for d in registration if d["kind"] == "Cluster")
    secret = next(d for d in registration if d["kind"] == "Secret")
    assert cluster["spec"]["controlPlaneEndpoint"] == (
        f"http://{service['metadata']['name']}.{NAMESPACE}.svc:{port['port']}"
    )
    ref = cluster["spec"]["registrationTokenSecretRef"]
    assert (secret["metadata"]["name"], secret["metadata"]["namespace"]) == (ref["name"], NAMESPACE)
    assert secret["stringData"][ref["key"]] == args.registration_token


def test_the_image_is_overridden_with_kustomize_images(kubectl: str, tmp_path: Path) -> None:
    # What `kustomize edit set image` writes, in an overlay of your own (as the e2e test does).
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    relative = os.path.relpath(MANIFESTS / "mock-control-plane", overlay)
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [relative],
                "images": [{"name": IMAGE, "newName": "registry.example/op", "newTag": "e2e"}],
            }
        )
    )
    docs = render(kubectl, overlay)
    images = [container(d)["image"] for d in docs if d["kind"] == "Deployment"]
    assert images == ["registry.example/op:e2e"] * 2


# -- against the API server ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def install_namespace(kubectl: str, control_plane: ControlPlane, base: list[Doc]) -> Iterator[str]:
    """vworkspace-system, created for real from the rendered Namespace.

    A server dry run persists nothing, so the namespaced objects of one `apply --dry-run=server`
    would fail with "namespaces vworkspace-system not found" next to the Namespace that would
    create it. The Namespace is therefore applied for real first (with its Pod Security label,
    which the Pod dry runs below rely on) and deleted afterwards if this module created it.
    """
    rest = control_plane.rest()
    existed = rest.exists(f"/api/v1/namespaces/{NAMESPACE}")
    namespace = find(base, "Namespace", NAMESPACE)
    done = run(
        kubectl,
        "apply",
        "-f",
        "-",
        stdin=to_yaml([namespace]),
        kubeconfig=control_plane.kubeconfig_path,
    )
    assert done.returncode == 0, done.stderr
    yield NAMESPACE
    if not existed and os.environ.get("VWORKSPACE_TEST_KEEP", "") != "1":
        with contextlib.suppress(ApiError):
            rest.delete(f"/api/v1/namespaces/{NAMESPACE}")


def split_cert_manager(docs: list[Doc]) -> tuple[list[Doc], list[Doc]]:
    """(everything else, the cert-manager objects).

    cert-manager's CRDs are not installed on the test control plane (they are the webhook
    overlay's documented prerequisite), so the API server would answer "no matches for kind
    Issuer". Those objects are checked by the render test; everything else is dry-run."""
    theirs = [d for d in docs if d["apiVersion"].startswith(f"{CERT_MANAGER_GROUP}/")]
    return [d for d in docs if d not in theirs], theirs


@pytest.mark.parametrize("rendering", ["base", "webhook", "mock"])
def test_the_api_server_accepts_every_object_in_a_server_dry_run(
    rendering: str,
    request: pytest.FixtureRequest,
    kubectl: str,
    control_plane: ControlPlane,
    install_namespace: str,
) -> None:
    docs, cert_manager = split_cert_manager(request.getfixturevalue(rendering))
    expected = ["Certificate", "Issuer"] if rendering == "webhook" else []
    assert sorted(d["kind"] for d in cert_manager) == expected
    assert_server_dry_run_accepts(kubectl, docs, kubeconfig=control_plane.kubeconfig_path)


@pytest.mark.parametrize(
    ("rendering", "name"),
    [
        ("base", "vworkspace-operator"),
        ("webhook", "vworkspace-operator"),
        ("mock", "vworkspace-operator"),
        ("mock", "vworkspace-mock-control-plane"),
    ],
)
def test_the_pods_are_admitted_under_the_restricted_pod_security_level(
    rendering: str,
    name: str,
    request: pytest.FixtureRequest,
    kubectl: str,
    control_plane: ControlPlane,
    install_namespace: str,
) -> None:
    # Pod Security enforcement applies to Pods, not Deployments, so each Pod template is
    # dry-run as a Pod in the namespace labelled pod-security.kubernetes.io/enforce=restricted.
    docs: list[Doc] = request.getfixturevalue(rendering)
    namespace = find(docs, "Namespace", NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    template = find(docs, "Deployment", name)["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{name}-dry-run", "namespace": NAMESPACE, **template["metadata"]},
        "spec": template["spec"],
    }
    done = run(
        kubectl,
        "apply",
        "--dry-run=server",
        "-f",
        "-",
        stdin=to_yaml([pod]),
        kubeconfig=control_plane.kubeconfig_path,
    )
    assert done.returncode == 0, done.stderr
    assert "created (server dry run)" in done.stdout


# -- the operator under the manifests' RBAC ------------------------------------------------------


def allowed(rest: Any, verb: str, resource: str, namespace: str = "", group: str = "") -> bool:
    review = rest.post(
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}",
                "groups": ["system:serviceaccounts", f"system:serviceaccounts:{NAMESPACE}"],
                "resourceAttributes": {
                    "verb": verb,
                    "resource": resource,
                    "group": group,
                    "namespace": namespace,
                },
            },
        },
    )
    return bool(review["status"].get("allowed"))


def scrape(url: str, token: str | None) -> tuple[int, str]:
    """GET a secure metrics endpoint (self-signed certificate) with an optional bearer token."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def get(rest: Any, path: str) -> Doc | None:
    try:
        found: Doc = rest.get(path)
    except ApiError:
        return None
    return found


def waiting(
    what: str, check: Any, operator: OperatorProcess, timeout: float = 30, show: Any = None
) -> None:
    """wait_until, with the operator's log (and ``show()``) in the failure message."""
    try:
        wait_until(what, check, timeout=timeout)
    except AssertionError as err:
        shown = f"\n{show()}" if show is not None else ""
        log = operator.output()[-8000:]
        raise AssertionError(f"{err}{shown}\noperator log (tail):\n{log}") from None


def condition(obj: Doc | None, kind: str) -> str | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return str(cond.get("status"))
    return None


async def test_the_operator_runs_with_nothing_but_the_manifests_rbac(
    control_plane: ControlPlane,
    shipped_identity: ShippedIdentity,
    install_namespace: str,
    vworkspace_crds: list[str],
    third_party_crds: list[str],
    kube_namespace: str,
    tmp_path: Path,
) -> None:
    # shipped_identity (vworkspace/testing/identity.py) applied the rendered RBAC and holds a
    # token of the ServiceAccount; the operator runs with a kubeconfig of that token alone, and
    # OperatorProcess.stop() fails on any 403 it received.
    rest = control_plane.rest()
    assert shipped_identity.namespace == NAMESPACE
    assert shipped_identity.service_account == SERVICE_ACCOUNT
    # Least privilege, as the API server's authorizer sees it.
    assert allowed(rest, "create", "secrets", NAMESPACE)
    assert allowed(rest, "get", "secrets", kube_namespace)  # by name: SeaweedFS credentials
    assert not allowed(rest, "list", "secrets")
    assert not allowed(rest, "update", "secrets", kube_namespace)
    assert not allowed(rest, "delete", "namespaces")
    assert not allowed(rest, "create", "clusterroles", group="rbac.authorization.k8s.io")
    assert not allowed(rest, "create", "pods", kube_namespace)
    assert allowed(rest, "list", "helmreleases", group="helm.toolkit.fluxcd.io")

    suffix = secrets.token_hex(3)
    cluster_id = f"cluster-install-{suffix}"
    registration_token = f"one-time-{suffix}"
    cluster_name = f"install-{suffix}"
    agent_namespace = f"{kube_namespace}-agent"  # does not exist: the agent creates it
    velero = f"{kube_namespace}-velero"
    rest.post(
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": velero}},
    )
    mock = MockProcess(
        tmp_path / "mock.log",
        "--registration-token",
        registration_token,
        "--cluster-id",
        cluster_id,
        "--strict-registration",
        "--admin-token",
        "admin",
    )
    url = mock.url
    clusters = "/apis/ops.vworkspace.io/v1alpha1/clusters"
    operator = None
    try:
        mock.wait_healthy()
        operator = OperatorProcess(
            control_plane,
            NAMESPACE,
            tmp_path / "operator.log",
            "--leader-elect",
            "--agent-enabled",
            "--agent-poll-interval",
            "2s",
            "--velero-namespace",
            velero,
            "--allow-insecure-control-plane",  # the mock is plain http on 127.0.0.1
            # As installed: secure metrics (OperatorProcess turns them off; the last flag wins),
            # so the TokenReview and SubjectAccessReview rules are exercised too.
            "--metrics-secure",
            identity=shipped_identity,
        )
        operator.wait_ready()
        # Leader election with the namespaced Role (create, then get/update of one name).
        lease = f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/dad03b25.vworkspace.io"
        waiting(
            "the Lease held",
            lambda: ((get(rest, lease) or {}).get("spec") or {}).get("holderIdentity"),
            operator,
            timeout=30,
        )
        # Registration: the token Secret is read, the credentials Secret written.
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"registration-{suffix}", "namespace": NAMESPACE},
            "data": {"registrationToken": base64.b64encode(registration_token.encode()).decode()},
        }
        rest.post(f"/api/v1/namespaces/{NAMESPACE}/secrets", secret)
        rest.post(
            clusters,
            {
                "apiVersion": "ops.vworkspace.io/v1alpha1",
                "kind": "Cluster",
                "metadata": {"name": cluster_name},
                "spec": {
                    "controlPlaneEndpoint": url,
                    "registrationTokenSecretRef": {
                        "name": secret["metadata"]["name"],
                        "key": "registrationToken",
                    },
                },
            },
        )
        waiting(
            "the Cluster registered and connected",
            lambda: condition(get(rest, f"{clusters}/{cluster_name}"), "Connected") == "True",
            operator,
            timeout=60,
        )
        assert rest.exists(f"/api/v1/namespaces/{NAMESPACE}/secrets/vworkspace-agent-credentials")
        # An agent job into a namespace that does not exist yet.
        admin = AdminClient(url, admin_token="admin")
        await admin.enqueue(
            cluster_id,
            {
                "id": f"install-{suffix}",
                "kind": "apply",
                "idempotencyKey": f"applicationinstance/{agent_namespace}/crm@1",
                "payload": managed_instance("crm", agent_namespace, catalog_id="crm", chart="crm"),
            },
        )
        result = None
        for _ in range(300):  # 30 s
            result = await admin.job_result(f"install-{suffix}")
            if result is not None:
                break
            await asyncio.sleep(0.1)
        assert result is not None, f"no job result after 30 s:\n{operator.output()}"
        assert result["outcome"] == "succeeded", result
        hr = "/apis/helm.toolkit.fluxcd.io/v2/namespaces"
        instance = f"/apis/apps.vworkspace.io/v1alpha1/namespaces/{agent_namespace}/applicationinstances/crm"
        waiting(
            "the agent's HelmRelease",
            lambda: get(rest, f"{hr}/{agent_namespace}/helmreleases/crm"),
            operator,
            show=lambda: (get(rest, instance) or {}).get("status"),
        )
        # Objects written directly (the samples): Flux and Velero objects from the reconcilers.
        samples = (
            "applicationinstance-helm.yaml",
            "operation-backup.yaml",
            "operation-runcommand.yaml",
        )
        for sample in samples:
            doc = yaml.safe_load(
                (MANIFESTS / "samples" / sample)
                .read_text()
                .replace("namespace: demo", f"namespace: {kube_namespace}")
            )
            group_version = doc["apiVersion"]
            plural = {"ApplicationInstance": "applicationinstances", "Operation": "operations"}[
                doc["kind"]
            ]
            rest.apply(
                f"/apis/{group_version}/namespaces/{kube_namespace}/{plural}/{doc['metadata']['name']}",
                doc,
                field_manager="kubectl",
            )
        waiting(
            "the sample's HelmRelease",
            lambda: get(rest, f"{hr}/{kube_namespace}/helmreleases/odoo-helm"),
            operator,
            timeout=60,
        )
        ops = f"/apis/ops.vworkspace.io/v1alpha1/namespaces/{kube_namespace}/operations"
        backup = workload_name(rest.get(f"{ops}/odoo-backup-1"))
        waiting(
            "the sample's Velero Backup",
            lambda: get(rest, f"/apis/velero.io/v1/namespaces/{velero}/backups/{backup}"),
            operator,
            timeout=60,
        )
        # The RunCommand sample: a Job (batch RBAC) run as the runner ServiceAccount, which the
        # operator creates (serviceaccounts RBAC).
        job = workload_name(rest.get(f"{ops}/odoo-shell-1"))
        waiting(
            "the sample's RunCommand Job",
            lambda: get(rest, f"/apis/batch/v1/namespaces/{kube_namespace}/jobs/{job}"),
            operator,
            timeout=60,
        )
        assert rest.exists(
            f"/api/v1/namespaces/{kube_namespace}/serviceaccounts/vworkspace-operation-runner"
        )
        # Status went back to the control plane.
        events: list[Doc] = []
        for _ in range(300):  # the batcher flushes every second
            events = await admin.events(
                cluster_id, kind="ApplicationInstance", namespace=agent_namespace, name="crm"
            )
            if events:
                break
            await asyncio.sleep(0.1)
        assert events, (
            f"no ConditionTransition event for the agent's instance:\n{operator.output()}"
        )
        assert {e["kind"] for e in events} == {"ConditionTransition"}
        applied = rest.get(f"/api/v1/namespaces/{NAMESPACE}/configmaps/vworkspace-applied-jobs")
        assert (
            f"applicationinstance/{agent_namespace}/crm@1" in applied["data"]["applied-keys.json"]
        )
        metrics = f"https://127.0.0.1:{operator.metrics}/metrics"
        assert scrape(metrics, token=None)[0] == 401
        status, text = scrape(metrics, token=control_plane.token)
        assert status == 200, text
        assert 'leader_election_master_status{name="dad03b25.vworkspace.io"} 1.0' in text
        # Deleting the Cluster: the operator removes its finalizer.
        rest.delete(f"{clusters}/{cluster_name}")
        waiting(
            "the deleted Cluster released by the operator",
            lambda: not rest.exists(f"{clusters}/{cluster_name}"),
            operator,
            timeout=30,
        )
        output = operator.output()
        for word in ("forbidden", "Forbidden"):
            assert word not in output, f"the operator was refused something:\n{output}"
        assert operator.forbidden_so_far() == []  # its rest_client_requests_total too
    finally:
        with contextlib.suppress(ApiError, AssertionError):
            rest.delete(f"{clusters}/{cluster_name}")
            # The operator removes its finalizer (with this RBAC too); if it cannot, remove it
            # here, or the Cluster would outlive the test.
            wait_until(
                "the Cluster gone",
                lambda: not rest.exists(f"{clusters}/{cluster_name}"),
                timeout=20,
            )
        with contextlib.suppress(ApiError):
            rest.request(
                "PATCH",
                f"{clusters}/{cluster_name}",
                body={"metadata": {"finalizers": None}},
                content_type="application/merge-patch+json",
            )
        mock.stop()
        if operator is not None:
            operator.stop()  # fails on any 403 the operator received
        for name in (agent_namespace, velero):
            with contextlib.suppress(ApiError):
                rest.delete(f"/api/v1/namespaces/{name}")
        for path in (
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/vworkspace-operator",
            "/apis/rbac.authorization.k8s.io/v1/clusterroles/vworkspace-operator",
        ):
            with contextlib.suppress(ApiError):
                rest.delete(path)
