"""The operator as it runs in a cluster: its own ServiceAccount, only the shipped RBAC.

Tests usually run the operator with the test control plane's admin token, which can do anything;
a rule missing from ``manifests/rbac`` (and so from the Helm chart, which renders its RBAC from
there) would then only show in a real cluster. This module gives a test the identity a real
install gives the operator:

* :func:`render_manifests` renders ``manifests/`` with ``kubectl kustomize`` (the kubectl built
  beside the test binaries: :func:`find_kubectl`), and :func:`install_shipped_identity` applies
  its ServiceAccount, Roles, RoleBindings, ClusterRoles and ClusterRoleBindings (the namespaced
  ones moved to the operator's namespace, as ``kustomize edit set namespace`` would) and asks the
  TokenRequest API for a token of that ServiceAccount;
* :class:`ShippedIdentity` then lays that token out either as a kubeconfig holding only the token
  and the CA (:meth:`~ShippedIdentity.kubeconfig_environ`), or the way a kubelet does for a Pod:
  a directory with ``token``, ``ca.crt`` and ``namespace`` plus ``KUBERNETES_SERVICE_HOST``/
  ``_PORT`` (:meth:`~ShippedIdentity.in_cluster_environ`), which the operator's in-cluster loader
  finds through ``$VWORKSPACE_SERVICE_ACCOUNT_DIR`` (docs/operations.md, "Running");
* :func:`forbidden_requests` turns any 403 the operator received into a list of findings: the
  ``rest_client_requests_total{code="403"}`` counts from its metrics (every request, even those
  nobody logs) and, from its log, the verb and resource the API server refused. Any 403 is a
  defect of the manifests or the chart, so :func:`assert_no_forbidden` fails on any.

Trade-offs: the rendered names are kept (``vworkspace-operator`` ClusterRole and binding), so two
identities in one control plane share the cluster-scoped objects unless ``name_suffix`` tells
them apart (the negative control in tests/integration/test_shipped_identity.py does). The token
is a TokenRequest token (one hour by default), not a projected one; the in-cluster loader re-reads
the file, so a test may rewrite it. The fixture is ``shipped_identity`` in
:mod:`vworkspace.testing.pytest_plugin`; docs/development.md, "The operator under its shipped
identity", shows how to use it.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
import yaml
from prometheus_client.parser import text_string_to_metric_families

from vworkspace.testing import assets as assets_mod
from vworkspace.testing.controlplane import ControlPlane
from vworkspace.testing.rest import ApiError, RestClient

Doc = dict[str, Any]

NAMESPACE = "vworkspace-system"
SERVICE_ACCOUNT = "vworkspace-operator"
# Read by the operator's app layer only (vworkspace/app/flags/connection.py).
SERVICE_ACCOUNT_DIR_ENV = "VWORKSPACE_SERVICE_ACCOUNT_DIR"
FIELD_MANAGER = "vworkspace-testing-identity"
RBAC_KINDS = ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")
_CLUSTER_SCOPED = frozenset({"ClusterRole", "ClusterRoleBinding"})
_RBAC = "/apis/rbac.authorization.k8s.io/v1"
# The API server's refusal: `... is forbidden: User "system:serviceaccount:ns:sa" cannot patch
# resource "operations/status" in API group "ops.vworkspace.io" in the namespace "x"`.
_REFUSAL = re.compile(
    r'User \\?"(?P<user>[^"\\]+)\\?" cannot (?P<verb>\w+) resource \\?"(?P<resource>[^"\\]+)\\?"'
    r'(?: in API group \\?"(?P<group>[^"\\]*)\\?")?'
)


class IdentityError(RuntimeError):
    """The shipped identity cannot be installed: no kubectl, a rendering that fails, a refusal."""


def find_kubectl(environ: Mapping[str, str] | None = None) -> str | None:
    """``$VWORKSPACE_KUBECTL``, else the kubectl built beside the test binaries (the API
    server's version; scripts/build-test-assets.sh), else kubectl on PATH; None if none.
    ``environ``: the process environment unless given."""
    if environ is None:
        environ = os.environ
    if environ.get("VWORKSPACE_KUBECTL"):
        return environ["VWORKSPACE_KUBECTL"]
    with contextlib.suppress(assets_mod.AssetsNotFoundError):
        beside = assets_mod.find_assets(environ).directory / "kubectl"
        if os.access(beside, os.X_OK):
            return str(beside)
    return shutil.which("kubectl")


def render_manifests(kubectl: str, directory: Path) -> list[Doc]:
    """``kubectl kustomize DIRECTORY``, as documents."""
    try:
        done = subprocess.run(
            [kubectl, "kustomize", str(directory)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise IdentityError(f"kubectl kustomize {directory}: {err}") from err
    if done.returncode != 0:
        raise IdentityError(f"kubectl kustomize {directory} failed:\n{done.stderr}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def rbac_documents(docs: list[Doc], *, namespace: str, name_suffix: str = "") -> list[Doc]:
    """The RBAC part of a rendering (copies), its namespaced objects and the bindings' subjects
    moved to ``namespace``; ``name_suffix`` appended to the cluster-scoped names (and the
    bindings' references to them) so that a second identity does not overwrite the first."""
    cluster_roles = {d["metadata"]["name"] for d in docs if d["kind"] == "ClusterRole"}
    found = []
    for original in docs:
        if original["kind"] not in RBAC_KINDS:
            continue
        doc = copy.deepcopy(original)
        meta = doc["metadata"]
        if doc["kind"] in _CLUSTER_SCOPED:
            meta.pop("namespace", None)
            meta["name"] += name_suffix
        else:
            meta["namespace"] = namespace
        for subject in doc.get("subjects") or []:
            if subject.get("kind") == "ServiceAccount":
                subject["namespace"] = namespace
        ref = doc.get("roleRef") or {}
        if ref.get("kind") == "ClusterRole" and ref.get("name") in cluster_roles:
            ref["name"] += name_suffix
        found.append(doc)
    return found


def _path(doc: Doc) -> str:
    kind, meta = doc["kind"], doc["metadata"]
    if kind == "ServiceAccount":
        return f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{meta['name']}"
    plural = f"{kind.lower()}s"
    if kind in _CLUSTER_SCOPED:
        return f"{_RBAC}/{plural}/{meta['name']}"
    return f"{_RBAC}/namespaces/{meta['namespace']}/{plural}/{meta['name']}"


def _ensure_namespace(rest: RestClient, namespace: str, *, timeout: float = 60) -> None:
    """Create ``namespace`` unless it exists. One being deleted (an earlier test's) is waited
    out first: nothing can be created in a terminating namespace."""
    path = f"/api/v1/namespaces/{namespace}"

    def usable() -> bool:
        try:
            found = rest.get(path)
        except ApiError as err:
            if err.status != 404:
                raise
            return False
        return (found.get("status") or {}).get("phase") != "Terminating"

    def gone_or_usable() -> bool:
        return usable() or not rest.exists(path)

    rest.wait_for(f"namespace {namespace} deleted or usable", gone_or_usable, timeout=timeout)
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    try:
        rest.post("/api/v1/namespaces", body)
    except ApiError as err:
        if err.status != 409:
            raise


@attrs.frozen
class ShippedIdentity:
    """The operator's ServiceAccount token and how to hand it to the operator's process.

    ``server``: the API server's URL; ``ca_pem``: its CA certificate."""

    server: str
    ca_pem: bytes = attrs.field(repr=False)
    namespace: str
    service_account: str
    token: str = attrs.field(repr=False)
    rbac: tuple[Doc, ...] = attrs.field(repr=False, eq=False)

    @property
    def user(self) -> str:
        """The user name the API server sees (and names in a 403)."""
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"

    def write_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig with the CA and this token and nothing else."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "testenv",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": _b64(self.ca_pem),
                    },
                }
            ],
            "users": [{"name": self.service_account, "user": {"token": self.token}}],
            "contexts": [
                {"name": "shipped", "context": {"cluster": "testenv", "user": self.service_account}}
            ],
            "current-context": "shipped",
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        return path

    def write_service_account_dir(self, directory: Path) -> Path:
        """``token``, ``ca.crt`` and ``namespace``, as the kubelet mounts them in a Pod at
        ``/var/run/secrets/kubernetes.io/serviceaccount``."""
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in (
            ("token", self.token.encode()),
            ("ca.crt", self.ca_pem),
            ("namespace", self.namespace.encode()),
        ):
            (directory / name).write_bytes(data)
            (directory / name).chmod(0o600)
        return directory

    def kubeconfig_environ(self, directory: Path) -> dict[str, str]:
        """Environment for an operator process using a token-only kubeconfig (written into
        ``directory``): ``KUBECONFIG`` and ``POD_NAMESPACE``, to merge over a base env."""
        path = self.write_kubeconfig(directory / "operator.kubeconfig")
        return {"KUBECONFIG": str(path), "POD_NAMESPACE": self.namespace}

    def in_cluster_environ(self, directory: Path) -> dict[str, str]:
        """Environment for an operator process on the in-cluster path, as a kubelet provides
        it: ``KUBERNETES_SERVICE_HOST``/``_PORT`` (and ``_PORT_HTTPS``), ``POD_NAMESPACE`` (the
        Deployment's downward API) and the service-account directory (written into
        ``directory``). The caller must remove ``KUBECONFIG`` from the base env: a kubeconfig
        wins over the in-cluster path."""
        parts = urlsplit(self.server)
        port = str(parts.port or 443)
        return {
            "KUBERNETES_SERVICE_HOST": parts.hostname or "",
            "KUBERNETES_SERVICE_PORT": port,
            "KUBERNETES_SERVICE_PORT_HTTPS": port,
            "POD_NAMESPACE": self.namespace,
            SERVICE_ACCOUNT_DIR_ENV: str(self.write_service_account_dir(directory / "sa")),
        }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def request_token(
    rest: RestClient, *, namespace: str, service_account: str, seconds: int = 3600
) -> str:
    """A token for the ServiceAccount from the TokenRequest API
    (``POST .../serviceaccounts/<sa>/token``)."""
    review = rest.post(
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": seconds},
        },
    )
    token: str = review["status"]["token"]
    return token


def install_shipped_identity(
    plane: ControlPlane,
    rendered: list[Doc],
    *,
    namespace: str = NAMESPACE,
    name_suffix: str = "",
) -> ShippedIdentity:
    """Apply the RBAC of ``rendered`` (see :func:`rbac_documents`) with the admin token, in
    ``namespace`` (created if missing), and return the ServiceAccount's identity with a fresh
    token. Server-side apply, so installing twice is harmless and a changed rule is updated."""
    rest = plane.rest()
    rbac = rbac_documents(rendered, namespace=namespace, name_suffix=name_suffix)
    accounts = [d["metadata"]["name"] for d in rbac if d["kind"] == "ServiceAccount"]
    if len(accounts) != 1:
        raise IdentityError(f"expected one ServiceAccount in the rendering, found {accounts}")
    _ensure_namespace(rest, namespace)
    for doc in rbac:
        try:
            rest.apply(_path(doc), doc, field_manager=FIELD_MANAGER)
        except ApiError as err:
            raise IdentityError(f"applying {doc['kind']} {doc['metadata']['name']}: {err}") from err
    return ShippedIdentity(
        server=plane.server,
        ca_pem=plane.ca_path.read_bytes(),
        namespace=namespace,
        service_account=accounts[0],
        token=request_token(rest, namespace=namespace, service_account=accounts[0]),
        rbac=tuple(rbac),
    )


def remove_shipped_identity(plane: ControlPlane, identity: ShippedIdentity) -> None:
    """Delete what :func:`install_shipped_identity` applied (not the namespace), so that later
    tests of the session (a server-side dry run of the chart, say) find the cluster as before.
    Missing objects are fine."""
    rest = plane.rest()
    for doc in identity.rbac:
        with contextlib.suppress(ApiError):
            rest.delete(_path(doc))


# -- 403s ------------------------------------------------------------------------------------


def forbidden_counts(metrics_text: str) -> dict[str, float]:
    """``rest_client_requests_total{code="403"}`` by method, from a Prometheus text scrape.
    Raises :class:`IdentityError` when the scrape has no ``rest_client_requests_total`` at all:
    then it cannot tell, and "no 403" must not pass by default."""
    counts: dict[str, float] = {}
    families = [
        family
        for family in text_string_to_metric_families(metrics_text)
        if family.name == "rest_client_requests"
    ]
    if not any(family.samples for family in families):
        raise IdentityError("the metrics have no rest_client_requests_total samples")
    for family in families:
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels.get("code") == "403":
                method = sample.labels.get("method", "?")
                counts[method] = counts.get(method, 0.0) + sample.value
    return {method: count for method, count in counts.items() if count}


def refusals(log_text: str) -> list[str]:
    """Each distinct refusal the API server explained in the log, as ``verb resource (group)``:
    from JSON log lines (the operator's ``--log-format json``) and plain lines alike."""
    found: dict[str, None] = {}
    for line in log_text.splitlines():
        text = line
        with contextlib.suppress(ValueError):
            text = json.dumps(json.loads(line))  # one escaping, whatever the logger did
        for match in _REFUSAL.finditer(text):
            group = match.group("group") or ""
            found[
                f"{match.group('verb')} {match.group('resource')} "
                f"(API group {group!r}, as {match.group('user')})"
            ] = None
    return list(found)


# The API server's NamespaceLifecycle admission refuses writes into a namespace being deleted
# with 403 too; that is no missing rule (seen: an operator watching every namespace reconciled
# the instances of another test's namespace while it was being cleaned up).
_TERMINATING = "because it is being terminated"


def terminating_refusals(log_text: str) -> dict[str, int]:
    """How many 403s, by method, the operator's JSON log (``--log-format json``; the client
    logs every 403 once, as "forbidden by the API server") attributes to a namespace being
    terminated rather than to RBAC."""
    counts: dict[str, int] = {}
    for line in log_text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if (
            isinstance(entry, dict)
            and "forbidden by the API server" in (entry.get("msg"), entry.get("event"))
            and _TERMINATING in str(entry.get("error", ""))
        ):
            method = str(entry.get("method", "?"))
            counts[method] = counts.get(method, 0) + 1
    return counts


def forbidden_requests(*, metrics_text: str | None, log_text: str) -> list[str]:
    """Every sign of a 403 from the API server: counts by method from the metrics (None: not
    scraped, the log only), less those the log explains as writes into a namespace being
    terminated (:func:`terminating_refusals`), and the verb and resource of each refusal in the
    log. Empty when there was none; a scrape without the request counter is a finding too (it
    cannot tell)."""
    findings = []
    if metrics_text is not None:
        try:
            counts = forbidden_counts(metrics_text)
        except IdentityError as err:
            findings.append(str(err))
        else:
            explained = terminating_refusals(log_text)
            for method, count in sorted(counts.items()):
                if count <= explained.get(method, 0):
                    continue
                finding = f'rest_client_requests_total{{code="403",method="{method}"}} = {count:g}'
                if explained.get(method):
                    finding += f" ({explained[method]} into a namespace being terminated)"
                findings.append(finding)
    findings += [f"refused: {refusal}" for refusal in refusals(log_text)]
    return findings


def assert_no_forbidden(
    *, metrics_text: str | None, log_text: str, what: str = "the operator"
) -> None:
    """Fail (AssertionError) naming every 403 found: any is a defect of the shipped RBAC."""
    findings = forbidden_requests(metrics_text=metrics_text, log_text=log_text)
    if findings:
        listed = "\n  ".join(findings)
        raise AssertionError(
            f"{what} got 403 Forbidden from the API server; the shipped RBAC (manifests/rbac, "
            f"and the chart rendered from it) lacks a rule:\n  {listed}"
        )
