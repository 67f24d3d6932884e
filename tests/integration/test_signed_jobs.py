"""Zero-trust Pull through the real processes: `python -m vworkspace mock-control-plane
--signing-key` and `python -m vworkspace run --agent-enabled --agent-require-signed-jobs` against
the test control plane (docs/pull-mode.md, "Signed jobs"; docs/operations.md, "Hardening").

Every refused job must end ``failed`` with the cause named and leave no object behind; a key
rotation in the trusted-keys ConfigMap must apply without a restart; the local policy must name
the rule it enforced.
"""

from __future__ import annotations

import asyncio
import datetime
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from vworkspace.agent import signing
from vworkspace.mockcontrolplane import AdminClient
from vworkspace.mockcontrolplane.state import wire_job
from vworkspace.testing import ApiError, ControlPlane

from .operator_process import MockProcess, OperatorProcess, wait_until

pytestmark = pytest.mark.integration

CLUSTER = "cluster-signed"
TOKEN = "signed-token"
ADMIN = "signed-admin"
KEYS_CONFIGMAP = "vworkspace-job-signing-keys"


def stamp(delta: datetime.timedelta) -> str:
    return (datetime.datetime.now(datetime.UTC) + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


def instance_job(job_id: str, namespace: str, name: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": job_id,
        "kind": "apply",
        "payload": {
            "apiVersion": "apps.vworkspace.io/v1alpha1",
            "kind": "ApplicationInstance",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"appRef": {"catalogId": extra.pop("catalog", "crm")}, "mode": "placeholder"},
        },
        **extra,
    }


def signed(
    job: dict[str, Any], key: Ed25519PrivateKey, key_id: str, cluster: str = CLUSTER
) -> dict[str, Any]:
    """Signed in the form the mock delivers it (Go style: the three optional fields always
    present), since a signature covers the wire values."""
    wire = wire_job(job)
    return {**wire, "signature": signing.sign(wire, cluster_id=cluster, key=key, key_id=key_id)}


async def result_of(admin: AdminClient, job_id: str) -> dict[str, Any]:
    for _ in range(300):
        found = await admin.job_result(job_id)
        if found:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"no result for job {job_id}")


def exists(plane: ControlPlane, namespace: str, name: str) -> bool:
    return plane.rest().exists(
        f"/apis/apps.vworkspace.io/v1alpha1/namespaces/{namespace}/applicationinstances/{name}"
    )


def trust(plane: ControlPlane, namespace: str, keys: dict[str, str]) -> None:
    """Server-side apply: the data is exactly ``keys`` (entries left out are removed)."""
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": KEYS_CONFIGMAP, "namespace": namespace},
        "data": keys,
    }
    path = f"/api/v1/namespaces/{namespace}/configmaps/{KEYS_CONFIGMAP}"
    plane.rest().apply(path, body, field_manager="test-keys")


def generate_key(out: Path, key_id: str) -> str:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "vworkspace",
            "keys",
            "generate",
            "--out",
            str(out),
            "--key-id",
            key_id,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"key id: {key_id}" in done.stdout
    assert (out / "signing-key.pem").stat().st_mode & 0o777 == 0o600
    return (out / "signing-key.pub.pem").read_text()


def start(
    plane: ControlPlane, namespace: str, tmp_path: Path, mock: MockProcess, *args: str
) -> OperatorProcess:
    operator = OperatorProcess(
        plane,
        namespace,
        tmp_path / "operator.log",
        *("--agent-enabled", "--control-plane-base-url", mock.url, "--cluster-id", CLUSTER),
        "--allow-insecure-control-plane",  # the mock is plain http on 127.0.0.1
        *("--agent-token", TOKEN, "--agent-poll-interval", "2s"),
        *args,
    )
    operator.wait_ready()
    return operator


async def test_signed_jobs_refusals_named_nothing_applied_and_rotation_without_restart(
    control_plane: ControlPlane, vworkspace_crds: list[str], kube_namespace: str, tmp_path: Path
) -> None:
    ns = kube_namespace
    k1_pem = generate_key(tmp_path / "k1", "k1")
    k2_pem = generate_key(tmp_path / "k2", "k2")
    k1 = signing.load_private_key((tmp_path / "k1" / "signing-key.pem").read_bytes())
    k2 = signing.load_private_key((tmp_path / "k2" / "signing-key.pem").read_bytes())
    trust(control_plane, ns, {"k1": k1_pem})
    mock = MockProcess(
        tmp_path / "mock.log",
        *("--cluster-id", CLUSTER, "--bootstrap-token", TOKEN, "--admin-token", ADMIN),
        *("--signing-key", str(tmp_path / "k1" / "signing-key.pem"), "--signing-key-id", "k1"),
    )
    operator = None
    try:
        mock.wait_healthy()
        operator = start(
            control_plane,
            ns,
            tmp_path,
            mock,
            "--agent-require-signed-jobs",
            "--agent-signed-job-max-age",
            "2h",
        )
        admin = AdminClient(mock.url, admin_token=ADMIN)
        hour = datetime.timedelta(hours=1)

        # A hostile hop changed the payload: refused, and its idempotency key not recorded...
        key = f"applicationinstance/{ns}/good@1"
        await admin.enqueue(
            CLUSTER, instance_job("t-1", ns, "good", idempotencyKey=key), signing="tampered-payload"
        )
        # ...so the correctly signed delivery of the same job still succeeds (not a noop).
        refused = await result_of(admin, "t-1")
        assert refused["outcome"] == "failed"
        assert refused["error"].startswith('signature: does not verify with key "k1"')
        await admin.enqueue(CLUSTER, instance_job("t-2", ns, "good", idempotencyKey=key))
        assert (await result_of(admin, "t-2"))["outcome"] == "succeeded"
        assert exists(control_plane, ns, "good")

        base = {"expiresAt": stamp(hour), "createdAt": stamp(datetime.timedelta())}
        cases: list[tuple[str, dict[str, Any], str, str]] = []
        as_delete = signed(
            {**instance_job("t-kind", ns, "swapped", **base), "kind": "delete"}, k1, "k1"
        )
        cases.append(
            (
                "t-kind",
                {**as_delete, "kind": "apply"},
                "as-is",
                'signature: does not verify with key "k1"',
            )
        )
        other = signed(
            instance_job("t-cluster", ns, "other-cluster", **base), k1, "k1", cluster="cluster-else"
        )
        cases.append(("t-cluster", other, "as-is", 'signature: does not verify with key "k1"'))
        far = signed(instance_job("t-far", ns, "far", expiresAt=stamp(3 * hour)), k1, "k1")
        cases.append(("t-far", far, "as-is", "signature: expiresAt is"))
        unknown = signed(instance_job("t-unknown", ns, "unknown", **base), k2, "k2")
        cases.append(("t-unknown", unknown, "as-is", 'signature: unknown key id "k2"'))
        cases.append(
            (
                "t-unsigned",
                instance_job("t-unsigned", ns, "unsigned"),
                "none",
                "signature: the job is not signed",
            )
        )
        cases.append(
            (
                "t-badsig",
                instance_job("t-badsig", ns, "badsig"),
                "tampered-signature",
                'signature: does not verify with key "k1"',
            )
        )
        for _job_id, job, mode, _ in cases:
            await admin.enqueue(CLUSTER, job, signing=mode)
        for job_id, job, _, error in cases:
            result = await result_of(admin, job_id)
            assert result["outcome"] == "failed", (job_id, result)
            assert result["error"].startswith(error), (job_id, result)
            assert not exists(control_plane, ns, job["payload"]["metadata"]["name"]), job_id

        # Expired: the protocol's noop/expired, also for a signed job; nothing applied.
        expired = signed(instance_job("t-expired", ns, "expired", expiresAt=stamp(-hour)), k1, "k1")
        await admin.enqueue(CLUSTER, expired, signing="as-is")
        result = await result_of(admin, "t-expired")
        assert (result["outcome"], result["error"]) == ("noop", "expired")
        assert not exists(control_plane, ns, "expired")

        assert operator.metric("vworkspace_agent_job_rejections_total", reason="bad_signature") == 4
        assert operator.metric("vworkspace_agent_job_rejections_total", reason="unknown_key") == 1
        assert operator.metric("vworkspace_agent_job_rejections_total", reason="unsigned") == 1
        assert (
            operator.metric("vworkspace_agent_job_rejections_total", reason="expiry_too_far") == 1
        )

        # Rotation: k2 in, k1 out, same process.
        pid = operator.proc.pid
        trust(control_plane, ns, {"k2": k2_pem})
        await asyncio.to_thread(
            wait_until,
            "the rotated keys in use",
            lambda: '"key_ids": ["k2"]' in operator.output(),
            20,
        )
        # With signatures required a signed job carries an idempotencyKey (issue 24, F3).
        rotated = signed(
            instance_job("t-rotated", ns, "rotated", idempotencyKey=f"ai/{ns}/rotated@1", **base),
            k2,
            "k2",
        )
        await admin.enqueue(CLUSTER, rotated, signing="as-is")
        await admin.enqueue(
            CLUSTER, instance_job("t-old", ns, "old-key")
        )  # the mock still signs with k1
        assert (await result_of(admin, "t-rotated"))["outcome"] == "succeeded"
        old = await result_of(admin, "t-old")
        assert (old["outcome"], old["error"]) == ("failed", 'signature: unknown key id "k1"')
        assert exists(control_plane, ns, "rotated")
        assert not exists(control_plane, ns, "old-key")
        assert operator.proc.pid == pid
        assert operator.proc.poll() is None
    finally:
        if operator is not None:
            operator.stop()
        mock.stop()


async def test_local_policy_names_the_rule_and_applies_nothing(
    control_plane: ControlPlane, vworkspace_crds: list[str], kube_namespace: str, tmp_path: Path
) -> None:
    ns = kube_namespace
    mock = MockProcess(
        tmp_path / "mock.log",
        *("--cluster-id", CLUSTER, "--bootstrap-token", TOKEN, "--admin-token", ADMIN),
    )
    operator = None
    try:
        mock.wait_healthy()
        operator = start(
            control_plane,
            ns,
            tmp_path,
            mock,
            "--agent-allowed-namespaces",
            f"{ns[:6]}*,other-ns",
            "--agent-allowed-catalog-ids",
            "crm,wiki",
            "--agent-allowed-operation-types",
            "Backup",
        )
        admin = AdminClient(mock.url, admin_token=ADMIN)
        await admin.enqueue(CLUSTER, instance_job("p-ok", ns, "allowed"))
        await admin.enqueue(CLUSTER, instance_job("p-ns", "forbidden-policy-ns", "elsewhere"))
        await admin.enqueue(CLUSTER, instance_job("p-cat", ns, "evil", catalog="miner"))
        operation = {
            "id": "p-op",
            "kind": "intent",
            "payload": {
                "intent": "request-operation",
                "operation": {
                    "metadata": {"name": "restore-1", "namespace": ns},
                    "spec": {
                        "targetRef": {
                            "apiVersion": "apps.vworkspace.io/v1alpha1",
                            "kind": "ApplicationInstance",
                            "name": "allowed",
                        },
                        "type": "Restore",
                        "engine": "velero",
                    },
                },
            },
        }
        await admin.enqueue(CLUSTER, operation)
        assert (await result_of(admin, "p-ok"))["outcome"] == "succeeded"
        expected = {
            "p-ns": 'policy: namespace "forbidden-policy-ns" is not allowed by --agent-allowed-namespaces',
            "p-cat": 'policy: catalog id "miner" is not allowed by --agent-allowed-catalog-ids (crm, wiki)',
            "p-op": 'policy: operation type "Restore" is not allowed by --agent-allowed-operation-types (Backup)',
        }
        for job_id, error in expected.items():
            result = await result_of(admin, job_id)
            assert result["outcome"] == "failed", result
            assert result["error"].startswith(error), result
        assert exists(control_plane, ns, "allowed")
        assert not exists(control_plane, ns, "evil")
        rest = control_plane.rest()
        with pytest.raises(ApiError):
            rest.get("/api/v1/namespaces/forbidden-policy-ns")  # not even the namespace
        with pytest.raises(ApiError):
            rest.get(f"/apis/ops.vworkspace.io/v1alpha1/namespaces/{ns}/operations/restore-1")
        for rule in ("namespaces", "catalog_ids", "operation_types"):
            assert (
                operator.metric("vworkspace_agent_job_rejections_total", reason=f"policy_{rule}")
                == 1
            )
    finally:
        if operator is not None:
            operator.stop()
        mock.stop()
