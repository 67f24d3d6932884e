"""An encrypted value end to end through the real Flux controllers (docs/pull-mode.md,
"Encrypted payloads").

The mock control plane encrypts the chart value ``message`` of a demo-app instance to the
cluster's age key and signs the job; the operator process (agent on, shipped ServiceAccount and
RBAC) decrypts it into the instance's values Secret; Flux's real helm-controller reads that
Secret through ``valuesFrom`` and renders the chart: the release's ConfigMap shows the value.
Meanwhile the plaintext is in none of: the ApplicationInstance, the HelmRelease, the operator
log, the namespace's Events, the events the control plane received.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.integration.operator_process import OperatorProcess
from tests.real.conftest import remove_while_running
from tests.real.test_flux import CONFIG_MAPS, REPLICAS, condition, instance_ready
from vworkspace.agent import signing
from vworkspace.agent.sealed import ClusterKey
from vworkspace.api.meta import ObjectKey
from vworkspace.kube.rest.client import KubeClient
from vworkspace.kube.rest.resources import SECRETS
from vworkspace.mockcontrolplane import MockControlPlane
from vworkspace.mockcontrolplane.signer import Signer
from vworkspace.testing import ControlPlane
from vworkspace.testing.chartrepo import ChartRepository
from vworkspace.testing.flux import Flux
from vworkspace.testing.identity import ShippedIdentity
from vworkspace.testing.kwok import KwokNodes
from vworkspace.testing.objects import managed_instance

CLUSTER = "cluster-sealed"


@pytest.fixture
async def kube(control_plane: ControlPlane) -> AsyncIterator[KubeClient]:
    client = await KubeClient.from_kubeconfig(str(control_plane.kubeconfig_path))
    yield client
    await client.close()


async def test_an_encrypted_value_reaches_the_chart_and_nothing_else(
    control_plane: ControlPlane,
    shipped_identity: ShippedIdentity,
    vworkspace_crds: list[str],
    flux: Flux,
    chart_repo: ChartRepository,
    kwok_nodes: KwokNodes,
    kube: KubeClient,
    kube_namespace: str,
    tmp_path: Path,
) -> None:
    rest = control_plane.rest()
    operator_ns = shipped_identity.namespace
    plaintext = f"sealed-{secrets.token_hex(12)}"
    key = ClusterKey.generate()
    rest.apply(
        f"/api/v1/namespaces/{operator_ns}/secrets/vworkspace-agent-encryption",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "vworkspace-agent-encryption", "namespace": operator_ns},
            "stringData": {"age.key": key.secret_text() + "\n"},
        },
        field_manager="test-keys",
    )
    signer_key = Ed25519PrivateKey.generate()
    rest.apply(
        f"/api/v1/namespaces/{operator_ns}/configmaps/vworkspace-job-signing-keys",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "vworkspace-job-signing-keys", "namespace": operator_ns},
            "data": {"k1": signing.public_pem(signer_key.public_key())},
        },
        field_manager="test-keys",
    )
    token = f"bt-{secrets.token_hex(4)}"
    async with MockControlPlane(signer=Signer(key=signer_key, key_id="k1")) as mock:
        mock.set_bootstrap_token(CLUSTER, token)
        operator = OperatorProcess(
            control_plane,
            operator_ns,
            tmp_path / "operator.log",
            "--agent-enabled",
            "--allow-insecure-control-plane",  # the mock is plain http on 127.0.0.1
            *("--control-plane-base-url", mock.url, "--cluster-id", CLUSTER),
            *("--agent-token", token, "--agent-poll-interval", "1s"),
            "--agent-require-signed-jobs",
            *("--log-format", "json"),
            identity=shipped_identity,
        )
        try:
            operator.wait_ready()
            instance = managed_instance(
                "shop",
                kube_namespace,
                values={
                    "source": "inline",
                    "inline": {"replicas": REPLICAS, "message": plaintext},
                },
            )
            instance["spec"]["chart"] = chart_repo.chart("0.1.0")
            await mock.enqueue(
                CLUSTER,
                {
                    "id": "sealed-1",
                    "kind": "intent",
                    "idempotencyKey": f"applicationinstance/{kube_namespace}/shop@1",
                    "payload": {
                        "intent": "ensure-application-instance",
                        "applicationInstance": instance,
                    },
                },
                encrypt="values",
                recipient=key.recipient,
            )
            job_key = ObjectKey(kube_namespace, "shop")
            hr, ai = await instance_ready(
                kube,
                flux,
                job_key,
                what="install from an encrypted value",
                hr_reason="InstallSucceeded",
                version="0.1.0",
            )
            assert mock.job_result("sealed-1") is not None
            assert (mock.job_result("sealed-1") or {})["outcome"] == "succeeded"
            assert condition(ai, "Ready")["reason"] == "HelmReleaseReady"
            # The chart rendered the decrypted value: helm-controller read it from the Secret.
            config = await kube.get(CONFIG_MAPS, ObjectKey(kube_namespace, "shop-demo-app"))
            assert config["data"]["message"] == plaintext
            secret = await kube.get(SECRETS, ObjectKey(kube_namespace, "shop-vws-values"))
            assert plaintext in base64.b64decode(secret["data"]["values.yaml"]).decode()
            assert hr["spec"]["valuesFrom"] == [
                {"kind": "Secret", "name": "shop-vws-values", "valuesKey": "values.yaml"}
            ]
            events = rest.get(f"/api/v1/namespaces/{kube_namespace}/events")["items"]
            new_events = rest.get(f"/apis/events.k8s.io/v1/namespaces/{kube_namespace}/events")
            for where, text in (
                ("the ApplicationInstance", json.dumps(ai)),
                ("the HelmRelease spec", json.dumps(hr["spec"])),
                ("the operator log", operator.output()),
                ("the Events", json.dumps(events) + json.dumps(new_events["items"])),
                ("the events sent to the control plane", json.dumps(mock.events(CLUSTER))),
                ("the job's result", json.dumps(mock.job_result("sealed-1"))),
            ):
                assert plaintext not in text, where
            remove_while_running(control_plane, kube_namespace)
        finally:
            operator.stop()  # fails on any 403: the shipped RBAC must allow the values Secret
            for path in (
                f"/api/v1/namespaces/{operator_ns}/secrets/vworkspace-agent-encryption",
                f"/api/v1/namespaces/{operator_ns}/configmaps/vworkspace-job-signing-keys",
            ):
                rest.delete(path)
