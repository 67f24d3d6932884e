"""Encrypted Pull jobs through the real processes (docs/pull-mode.md, "Encrypted payloads").

* Black box, as the operator's ServiceAccount with only the shipped RBAC: `python -m vworkspace
  mock-control-plane` encrypts jobs to the cluster's key (made with `keys generate
  --encryption` and installed as the documented Secret), signs them, and the operator
  installs the instance: the values Secret holds the plaintext, while the instance spec, the
  HelmRelease, the operator log, the Kubernetes Events and the events sent to the control plane
  do not (grep). A job encrypted to another key ends ``failed`` naming the reason, and nothing
  of it exists afterwards (not even its namespace).
* Registration: the operator generates the key pair when the cluster has none and sends the
  public key in the register body and the heartbeat.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from vworkspace.agent.sealed import ClusterKey
from vworkspace.mockcontrolplane import AdminClient, MockControlPlane
from vworkspace.testing import ApiError, ControlPlane, RestClient
from vworkspace.testing.identity import ShippedIdentity
from vworkspace.testing.objects import managed_instance

from .operator_process import MockProcess, OperatorProcess, wait_until
from .test_install_manifests import get

pytestmark = pytest.mark.integration

APPS = "/apis/apps.vworkspace.io/v1alpha1/namespaces"
HELM = "/apis/helm.toolkit.fluxcd.io/v2/namespaces"
ENCRYPTION_SECRET = "vworkspace-agent-encryption"
SIGNING_KEY_ID = "k1"


def cli(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "vworkspace", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout


def install_encryption_key(rest: RestClient, namespace: str, out: Path) -> ClusterKey:
    """`keys generate --encryption`, then what its printed `kubectl create secret` does."""
    printed = cli("keys", "generate", "--encryption", "--out", str(out))
    assert f"--from-file=age.key={out / 'age.key'}" in printed
    raw = (out / "age.key").read_bytes()
    # Applied, not created: a run that stopped early may have left one behind.
    rest.apply(
        f"/api/v1/namespaces/{namespace}/secrets/{ENCRYPTION_SECRET}",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": ENCRYPTION_SECRET, "namespace": namespace},
            "data": {"age.key": base64.b64encode(raw).decode()},
        },
        field_manager="test-keys",
    )
    return ClusterKey.parse(raw.decode())


async def job_result(admin: AdminClient, job_id: str, operator: OperatorProcess) -> Any:
    for _ in range(600):
        found = await admin.job_result(job_id)
        if found:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"no result for {job_id}:\n{operator.output()[-4000:]}")


def events_text(rest: RestClient, namespace: str) -> str:
    found = rest.get(f"/apis/events.k8s.io/v1/namespaces/{namespace}/events")
    legacy = rest.get(f"/api/v1/namespaces/{namespace}/events")
    return json.dumps([found.get("items"), legacy.get("items")])


async def test_an_encrypted_job_installs_its_values_through_a_secret_and_nowhere_else(
    control_plane: ControlPlane,
    shipped_identity: ShippedIdentity,
    vworkspace_crds: list[str],
    third_party_crds: list[str],
    kube_namespace: str,
    tmp_path: Path,
) -> None:
    rest = control_plane.rest()
    operator_ns = shipped_identity.namespace
    ns = f"{kube_namespace}-enc"  # does not exist: the agent creates it
    refused_ns = f"{kube_namespace}-refused"
    plaintext = f"pw-{secrets.token_hex(12)}"  # in no file, log or object but the Secret
    whole = f"whole-{secrets.token_hex(12)}"
    key = install_encryption_key(rest, operator_ns, tmp_path / "cluster-key")
    other = ClusterKey.generate()
    cli("keys", "generate", "--out", str(tmp_path / "signing"), "--key-id", SIGNING_KEY_ID)
    cluster, token, admin_token = "cluster-enc", f"bt-{secrets.token_hex(4)}", "enc-admin"
    mock = MockProcess(
        tmp_path / "mock.log",
        *("--cluster-id", cluster, "--bootstrap-token", token, "--admin-token", admin_token),
        *("--signing-key", str(tmp_path / "signing" / "signing-key.pem")),
        *("--signing-key-id", SIGNING_KEY_ID),
    )
    rest.apply(
        f"/api/v1/namespaces/{operator_ns}/configmaps/vworkspace-job-signing-keys",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "vworkspace-job-signing-keys", "namespace": operator_ns},
            "data": {SIGNING_KEY_ID: (tmp_path / "signing" / "signing-key.pub.pem").read_text()},
        },
        field_manager="test-keys",
    )
    operator = None
    try:
        mock.wait_healthy()
        operator = OperatorProcess(
            control_plane,
            operator_ns,
            tmp_path / "operator.log",
            "--agent-enabled",
            "--allow-insecure-control-plane",  # the mock is plain http on 127.0.0.1
            *("--control-plane-base-url", mock.url, "--cluster-id", cluster),
            *("--agent-token", token, "--agent-poll-interval", "1s"),
            "--agent-require-signed-jobs",
            *("--log-format", "json"),
            identity=shipped_identity,
        )
        await asyncio.to_thread(operator.wait_ready)
        admin = AdminClient(mock.url, admin_token=admin_token)

        # Form 2: a sealed value, then form 1: a whole encrypted payload (an intent).
        sealed_values = {"source": "inline", "inline": {"auth": {"password": plaintext}}}
        await admin.enqueue(
            cluster,
            {
                "id": "enc-values",
                "kind": "apply",
                "idempotencyKey": f"applicationinstance/{ns}/crm@1",
                "payload": managed_instance("crm", ns, catalog_id="crm", values=sealed_values),
            },
            encrypt="values",
            recipient=key.recipient,
        )
        whole_values = {"source": "inline", "inline": {"token": whole, "replicaCount": 2}}
        await admin.enqueue(
            cluster,
            {
                "id": "enc-payload",
                "kind": "intent",
                "idempotencyKey": f"applicationinstance/{ns}/wiki@1",
                "payload": {
                    "intent": "ensure-application-instance",
                    "applicationInstance": managed_instance(
                        "wiki", ns, catalog_id="wiki", chart="wiki", values=whole_values
                    ),
                },
            },
            encrypt="payload",
            recipient=key.recipient,
        )
        for job_id in ("enc-values", "enc-payload"):
            result = await job_result(admin, job_id, operator)
            assert result["outcome"] == "succeeded", (job_id, result, operator.output()[-3000:])

        for name, secret_value, document in (
            ("crm", plaintext, f"auth:\n  password: {plaintext}\n"),
            ("wiki", whole, f"replicaCount: 2\ntoken: {whole}\n"),
        ):
            secret = rest.get(f"/api/v1/namespaces/{ns}/secrets/{name}-vws-values")
            assert base64.b64decode(secret["data"]["values.yaml"]).decode() == document
            instance = rest.get(f"{APPS}/{ns}/applicationinstances/{name}")
            [owner] = secret["metadata"]["ownerReferences"]
            assert owner["uid"] == instance["metadata"]["uid"]
            assert instance["spec"]["values"] == {
                "source": "secretRef",
                "secretRef": {"name": f"{name}-vws-values", "key": "values.yaml"},
            }
            release_path = f"{HELM}/{ns}/helmreleases/{name}"
            await asyncio.to_thread(
                wait_until, f"the HelmRelease {name}", lambda p=release_path: get(rest, p)
            )
            release = rest.get(release_path)
            assert release["spec"]["valuesFrom"] == [
                {"kind": "Secret", "name": f"{name}-vws-values", "valuesKey": "values.yaml"}
            ]
            assert "values" not in release["spec"]
            for where, text in (
                ("the instance", json.dumps(instance)),
                ("the HelmRelease", json.dumps(release)),
            ):
                assert secret_value not in text, where

        # Encrypted to another key: failed, named, nothing applied (not even the namespace).
        await admin.enqueue(
            cluster,
            {
                "id": "enc-wrong",
                "kind": "apply",
                "idempotencyKey": f"applicationinstance/{refused_ns}/crm@1",
                "payload": managed_instance(
                    "crm", refused_ns, catalog_id="crm", values=sealed_values
                ),
            },
            encrypt="values",
            recipient=other.recipient,
        )
        refused = await job_result(admin, "enc-wrong", operator)
        assert refused["outcome"] == "failed"
        assert refused["error"] == (
            "encryption: spec.values.inline.auth.password is encrypted to another key (this "
            f"cluster's recipient is {key.recipient}); encrypt it to that recipient"
        )
        assert get(rest, f"/api/v1/namespaces/{refused_ns}") is None
        assert (
            operator.metric("vworkspace_agent_job_rejections_total", reason="encryption_wrong_key")
            == 1
        )

        # The grep: the plaintexts are nowhere but in the two Secrets.
        sent = json.dumps(await admin.events(cluster))
        for where, text in (
            ("the operator log", operator.output()),
            ("the mock log", (tmp_path / "mock.log").read_text()),
            ("the Kubernetes Events", events_text(rest, ns) + events_text(rest, operator_ns)),
            ("the events sent to the control plane", sent),
            ("the job results", json.dumps(refused)),
        ):
            assert plaintext not in text, where
            assert whole not in text, where
    finally:
        if operator is not None:
            for name in ("crm", "wiki"):
                with contextlib.suppress(ApiError):
                    rest.delete(f"{APPS}/{ns}/applicationinstances/{name}")
            operator.stop()  # fails on any 403: the shipped RBAC must allow the values Secret
        mock.stop()
        for namespace in (ns, refused_ns):
            with contextlib.suppress(ApiError):
                rest.delete(f"/api/v1/namespaces/{namespace}")
        for path in (
            f"/api/v1/namespaces/{operator_ns}/secrets/{ENCRYPTION_SECRET}",
            f"/api/v1/namespaces/{operator_ns}/configmaps/vworkspace-job-signing-keys",
        ):
            with contextlib.suppress(ApiError):
                rest.delete(path)


async def test_registration_generates_the_key_pair_and_sends_its_public_key(
    control_plane: ControlPlane, vworkspace_crds: list[str], kube_namespace: str, tmp_path: Path
) -> None:
    rest = control_plane.rest()
    cluster = f"{kube_namespace}-reg"
    async with MockControlPlane(strict_registration=True) as mock:
        mock.add_registration_token("reg-token", cluster)
        operator = OperatorProcess(
            control_plane,
            kube_namespace,
            tmp_path / "operator.log",
            *("--agent-enabled", "--allow-insecure-control-plane"),
        )
        cluster_path = f"/apis/ops.vworkspace.io/v1alpha1/clusters/{cluster}"
        try:
            await asyncio.to_thread(operator.wait_ready)
            proc = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "vworkspace", "register"),
                *("--namespace", kube_namespace, "--timeout", "30"),
                *("--control-plane-endpoint", mock.url, "--registration-token", "reg-token"),
                *("--cluster-id", cluster, "--allow-insecure-control-plane"),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, "KUBECONFIG": str(control_plane.kubeconfig_path)},
            )
            out = (await proc.communicate())[0].decode()
            assert proc.returncode == 0, out
            secret = rest.get(f"/api/v1/namespaces/{kube_namespace}/secrets/{ENCRYPTION_SECRET}")
            key = ClusterKey.parse(base64.b64decode(secret["data"]["age.key"]).decode())
            assert f"encryption recipient (age): {key.recipient}" in out
            # The register body carried it; the heartbeat keeps sending it.
            assert mock.state.encryption_keys[cluster] == key.recipient
            await asyncio.to_thread(
                wait_until,
                "a heartbeat with the key",
                lambda: any(
                    e.get("encryptionPublicKey") == key.recipient
                    for e in mock.events(cluster, kind="Cluster")
                ),
            )
            assert key.secret_text() not in operator.output()
            assert key.secret_text() not in out
        finally:
            with contextlib.suppress(ApiError):
                rest.delete(cluster_path)
            try:
                await asyncio.to_thread(
                    wait_until, "the Cluster deleted", lambda: get(rest, cluster_path) is None
                )
            finally:
                operator.stop()
