"""`--metrics-secure` against the real API server: the operator process serves /metrics over
HTTPS and lets through only ServiceAccount tokens that pass a TokenReview and whose RBAC allows
``get`` on the non-resource URL ``/metrics`` (a SubjectAccessReview)."""

from __future__ import annotations

import contextlib
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from vworkspace.api.jsontypes import JsonObj
from vworkspace.testing import ControlPlane
from vworkspace.testing.rest import ApiError, RestClient
from vworkspace.webhooks.certs import write_webhook_certs

from .operator_process import OperatorProcess, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("vworkspace_crds")]


def scrape(port: int, *, ca: Path, token: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"https://127.0.0.1:{port}/metrics", headers=headers)
    context = ssl.create_default_context(cafile=str(ca))  # verified: the mounted pair is served
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def service_account_token(rest: RestClient, *, namespace: str, name: str) -> str:
    """A new ServiceAccount and a token for it from the TokenRequest API."""
    rest.post(
        f"/api/v1/namespaces/{namespace}/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
    )
    answer = rest.post(
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 600},
        },
    )
    token: str = answer["status"]["token"]
    return token


def metrics_reader(name: str, *, namespace: str, service_account: str) -> tuple[JsonObj, JsonObj]:
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
    }
    return role, binding


def test_secure_metrics_need_an_authenticated_and_authorized_token(
    control_plane: ControlPlane, kube_namespace: str, tmp_path: Path
) -> None:
    rest = control_plane.rest()
    certs = write_webhook_certs(tmp_path / "certs", hosts=("127.0.0.1", "localhost"))
    scraper = service_account_token(rest, namespace=kube_namespace, name="scraper")
    stranger = service_account_token(rest, namespace=kube_namespace, name="stranger")
    # The test control plane signs and verifies ServiceAccount tokens itself.
    review = rest.post(
        "/apis/authentication.k8s.io/v1/tokenreviews",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": scraper},
        },
    )
    user = f"system:serviceaccount:{kube_namespace}:scraper"
    assert review["status"]["user"]["username"] == user

    role, binding = metrics_reader(
        f"{kube_namespace}-metrics-reader", namespace=kube_namespace, service_account="scraper"
    )
    operator = OperatorProcess(
        control_plane,
        kube_namespace,
        tmp_path / "operator.log",
        *("--metrics-secure", "--metrics-cert-path", str(certs.cert.parent)),
    )
    try:
        operator.wait_ready()  # the probes stay plain HTTP on their own port
        port = operator.metrics
        assert scrape(port, ca=certs.ca_cert) == (401, "Unauthorized\n")
        assert scrape(port, ca=certs.ca_cert, token="not-a-token") == (401, "Unauthorized\n")
        assert scrape(port, ca=certs.ca_cert, token=scraper) == (
            403,
            f"Authorization denied for user {user}\n",
        )
        assert operator.get(port, "/metrics")[0] != 200  # no plain HTTP on the metrics port

        rest.post("/apis/rbac.authorization.k8s.io/v1/clusterroles", role)
        rest.post("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding)
        rest.post(
            f"/apis/apps.vworkspace.io/v1alpha1/namespaces/{kube_namespace}/applicationinstances",
            {
                "apiVersion": "apps.vworkspace.io/v1alpha1",
                "kind": "ApplicationInstance",
                "metadata": {"name": "shop", "namespace": kube_namespace},
                "spec": {"appRef": {"catalogId": "demo"}, "mode": "placeholder"},
            },
        )
        sample = 'controller_runtime_reconcile_total{controller="applicationinstance"'
        # The denial is cached for 10 s, so the new binding counts within about that.
        waited = wait_until(
            "the scraper to be allowed",
            lambda: (
                (answer := scrape(port, ca=certs.ca_cert, token=scraper))[0] == 200
                and sample in answer[1]
            ),
            timeout=40,
            interval=0.5,
        )
        assert waited < 20
        # Authorization is per identity: another ServiceAccount is still refused.
        assert scrape(port, ca=certs.ca_cert, token=stranger)[0] == 403
        output = operator.output()
        assert "metrics served over HTTPS" in output
        assert scraper not in output  # tokens never reach the logs
    finally:
        operator.stop()
        # Cluster-scoped: not removed with the test namespace.
        for kind in ("clusterrolebindings", "clusterroles"):
            with contextlib.suppress(ApiError):  # not created if the test failed early
                rest.delete(f"/apis/rbac.authorization.k8s.io/v1/{kind}/{role['metadata']['name']}")
