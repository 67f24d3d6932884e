"""vworkspace/testing/identity.py without a cluster: the 403 check reads what it must (and
refuses to pass on a scrape that cannot tell), the RBAC is moved and renamed as asked, and the
files it writes are what the operator's own loaders accept. The same pieces against a real API
server: tests/integration/test_shipped_identity.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from vworkspace.kube.rest.kubeconfig import in_cluster_config, load_kubeconfig
from vworkspace.kube.rest.transport import RestClientMetrics
from vworkspace.testing.identity import (
    IdentityError,
    ShippedIdentity,
    assert_no_forbidden,
    forbidden_counts,
    forbidden_requests,
    rbac_documents,
    refusals,
    terminating_refusals,
)
from vworkspace.testing.pki import write_pki

REFUSED = (
    'operations.ops.vworkspace.io "a" is forbidden: User "system:serviceaccount:vs:op" cannot '
    'update resource "operations/status" in API group "ops.vworkspace.io" in the namespace "t"'
)


def scrape(**codes: float) -> str:
    registry = CollectorRegistry()
    metrics = RestClientMetrics.create(registry)
    for key, count in codes.items():
        code, method = key.split("_")
        metrics.requests.labels(code, method, "127.0.0.1:6443").inc(count)
    return generate_latest(registry).decode()


def test_403_counts_come_from_rest_client_requests_total_by_method() -> None:
    assert forbidden_counts(scrape(**{"200_GET": 40, "403_PATCH": 2, "403_GET": 1})) == {
        "PATCH": 2.0,
        "GET": 1.0,
    }
    assert forbidden_counts(scrape(**{"200_GET": 40, "404_GET": 3})) == {}


def test_a_scrape_without_the_request_counter_cannot_pass() -> None:
    with pytest.raises(IdentityError, match="no rest_client_requests_total"):
        forbidden_counts("# nothing here\nprocess_open_fds 7.0\n")
    assert forbidden_requests(metrics_text="", log_text="") == [
        "the metrics have no rest_client_requests_total samples"
    ]


def test_refusals_name_verb_resource_group_and_user_from_json_and_plain_lines() -> None:
    json_line = json.dumps({"event": "forbidden by the API server", "error": REFUSED})
    log = "\n".join([json_line, f"plain: {REFUSED}", json_line, '{"event": "fine"}'])
    assert refusals(log) == [
        "update operations/status (API group 'ops.vworkspace.io', as system:serviceaccount:vs:op)"
    ]
    assert refusals('{"event": "list/watch failed", "error": "429 TooManyRequests"}') == []


def test_the_check_fails_naming_each_finding_and_passes_on_none() -> None:
    assert_no_forbidden(metrics_text=scrape(**{"200_GET": 3}), log_text='{"event": "ok"}')
    with pytest.raises(AssertionError) as failed:
        assert_no_forbidden(metrics_text=scrape(**{"403_PUT": 1}), log_text=REFUSED)
    assert 'rest_client_requests_total{code="403",method="PUT"} = 1' in str(failed.value)
    assert "refused: update operations/status" in str(failed.value)


def test_403s_into_a_namespace_being_terminated_are_not_missing_rules() -> None:
    """NamespaceLifecycle refuses writes into a namespace being deleted with 403 (seen in CI: a
    cluster-wide operator reconciling another test's instances during that test's cleanup);
    only those the log explains that way are discounted, per method."""
    terminating = json.dumps(
        {
            "msg": "forbidden by the API server",
            "method": "PATCH",
            "error": 'helmreleases "app-0" is forbidden: unable to create new content in '
            "namespace t-x because it is being terminated",
        }
    )
    log = "\n".join([terminating, terminating, "not json"])
    assert terminating_refusals(log) == {"PATCH": 2}
    assert forbidden_requests(metrics_text=scrape(**{"403_PATCH": 2}), log_text=log) == []
    # One more PATCH 403 than the log explains: a finding, saying how many were explained.
    assert forbidden_requests(metrics_text=scrape(**{"403_PATCH": 3}), log_text=log) == [
        'rest_client_requests_total{code="403",method="PATCH"} = 3 '
        "(2 into a namespace being terminated)"
    ]
    # An RBAC refusal is never discounted, whatever else the log holds.
    with pytest.raises(AssertionError, match="refused: update operations/status"):
        assert_no_forbidden(metrics_text=scrape(**{"403_PATCH": 2}), log_text=f"{log}\n{REFUSED}")


RENDERED = [
    {"kind": "Namespace", "metadata": {"name": "vworkspace-system"}},
    {"kind": "ServiceAccount", "metadata": {"name": "op", "namespace": "vworkspace-system"}},
    {"kind": "Role", "metadata": {"name": "r", "namespace": "vworkspace-system"}, "rules": []},
    {"kind": "ClusterRole", "metadata": {"name": "c"}, "rules": []},
    {"kind": "ClusterRole", "metadata": {"name": "other"}, "rules": []},
    {
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "c"},
        "roleRef": {"kind": "ClusterRole", "name": "c"},
        "subjects": [{"kind": "ServiceAccount", "name": "op", "namespace": "vworkspace-system"}],
    },
    {
        "kind": "RoleBinding",
        "metadata": {"name": "r", "namespace": "vworkspace-system"},
        "roleRef": {"kind": "Role", "name": "r"},
        "subjects": [{"kind": "ServiceAccount", "name": "op", "namespace": "vworkspace-system"}],
    },
    {"kind": "Deployment", "metadata": {"name": "d", "namespace": "vworkspace-system"}},
]


def test_rbac_is_moved_to_the_operators_namespace_and_cluster_names_suffixed() -> None:
    docs = rbac_documents(RENDERED, namespace="ops", name_suffix="-x")
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        ("ServiceAccount", "op"),
        ("Role", "r"),
        ("ClusterRole", "c-x"),
        ("ClusterRole", "other-x"),
        ("ClusterRoleBinding", "c-x"),
        ("RoleBinding", "r"),
    ]
    assert {d["metadata"].get("namespace") for d in docs if "Cluster" not in d["kind"]} == {"ops"}
    assert docs[4]["roleRef"]["name"] == "c-x"
    assert docs[5]["roleRef"]["name"] == "r"  # a Role keeps its name (namespaced)
    assert {s["namespace"] for d in docs for s in d.get("subjects", [])} == {"ops"}
    assert RENDERED[1]["metadata"]["namespace"] == "vworkspace-system"  # copies, not edits


@pytest.fixture
def identity(tmp_path: Path) -> ShippedIdentity:
    pki = write_pki(tmp_path / "pki")
    return ShippedIdentity(
        server="https://127.0.0.1:6443",
        ca_pem=pki.ca_cert.read_bytes(),
        namespace="ops",
        service_account="op",
        token="sa-token",
        rbac=(),
    )


async def test_the_kubeconfig_holds_the_token_and_the_ca_only(
    identity: ShippedIdentity, tmp_path: Path
) -> None:
    env = identity.kubeconfig_environ(tmp_path)
    assert env["POD_NAMESPACE"] == "ops"
    config = await load_kubeconfig(env["KUBECONFIG"])
    assert config.server == "https://127.0.0.1:6443"
    assert config.ca_data == identity.ca_pem.decode()
    assert config.client_certificate is None
    assert (await config.credentials.current()).headers == {"Authorization": "Bearer sa-token"}
    assert identity.user == "system:serviceaccount:ops:op"
    assert "sa-token" not in repr(identity)


def files(directory: Path) -> dict[str, bytes]:
    """The directory's files and their contents (the CA's left out: a PEM)."""
    return {
        p.name: b"" if p.name == "ca.crt" else p.read_bytes() for p in sorted(directory.iterdir())
    }


async def test_the_in_cluster_files_are_what_the_in_cluster_loader_reads(
    identity: ShippedIdentity, tmp_path: Path
) -> None:
    env = identity.in_cluster_environ(tmp_path)
    directory = Path(env["VWORKSPACE_SERVICE_ACCOUNT_DIR"])
    assert files(directory) == {"ca.crt": b"", "namespace": b"ops", "token": b"sa-token"}
    assert (env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"]) == ("127.0.0.1", "6443")
    config = in_cluster_config(
        host=env["KUBERNETES_SERVICE_HOST"],
        port=env["KUBERNETES_SERVICE_PORT"],
        service_account=directory,
    )
    assert config.server == "https://127.0.0.1:6443"
    assert (await config.credentials.current()).headers == {"Authorization": "Bearer sa-token"}
