"""The admission webhooks behind the real API server: every rule seen through a create/update,
certificate rotation on disk picked up without a restart, and the black-box acceptance (the
operator process with ``--webhooks-enabled``)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import socket
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from prometheus_client import CollectorRegistry

from tests.integration import webhook_harness as harness
from tests.integration.operator_process import OperatorProcess, free_port
from vworkspace.api.approvals import sign
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.kube.clock import RealClock
from vworkspace.kube.objects import update_status
from vworkspace.kube.rest.client import KubeClient
from vworkspace.kube.rest.errors import ApiError
from vworkspace.kube.rest.resources import APPLICATION_INSTANCES, NAMESPACES, OPERATIONS
from vworkspace.kube.tls import CertificateReloader
from vworkspace.testing import ControlPlane
from vworkspace.testing.objects import managed_instance, operation
from vworkspace.webhooks.certs import Issued, new_ca, write_webhook_certs
from vworkspace.webhooks.lookup import ClusterLookup
from vworkspace.webhooks.server import WebhookMetrics, WebhookServer

pytestmark = [
    pytest.mark.integration,
    pytest.mark.usefixtures("vworkspace_crds"),
]
SECRET = "approval-hmac"
MANAGER = "vworkspace-test"
CAPABILITIES = {
    "ops.vworkspace.io/backup": "velero",
    "ops.vworkspace.io/restore": "velero",
    "ops.vworkspace.io/upgrade": "helm",
}


class LocalWebhook:
    def __init__(self, server: WebhookServer, ca: Issued, cert_dir: Path) -> None:
        self.server = server
        self.ca = ca
        self.cert_dir = cert_dir


@pytest.fixture
async def webhook(
    kube: KubeClient, kube_namespace: str, tmp_path: Path
) -> AsyncIterator[LocalWebhook]:
    ca = new_ca("webhook-test-ca", validity=datetime.timedelta(days=1))
    files = write_webhook_certs(tmp_path, hosts=("127.0.0.1",), ca=ca)
    server = WebhookServer(
        host="127.0.0.1",
        port=0,
        certificates=CertificateReloader(cert=files.cert, key=files.key),
        lookup=ClusterLookup(kube),
        approval_secret=SECRET,
        clock=RealClock(),
        metrics=WebhookMetrics.create(CollectorRegistry()),
        reload_interval=0.1,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(server.run(stop))
    await asyncio.wait_for(server.started.wait(), 10)
    config = harness.local_configuration(
        base_url=f"https://127.0.0.1:{server.port}", ca_pem=ca.cert_pem, namespace=kube_namespace
    )
    await harness.register(kube, config)
    try:
        await harness.wait_until_enforced(kube, kube_namespace)
        yield LocalWebhook(server, ca, tmp_path)
    finally:
        await harness.unregister(kube, config)
        stop.set()
        await task


def instance(namespace: str, name: str = "shop", **spec: Any) -> JsonObj:
    body = managed_instance(name, namespace, annotations=CAPABILITIES)
    body["spec"].update(spec)
    return body


async def denied(kube: KubeClient, resource: Any, body: JsonObj) -> str:
    with pytest.raises(ApiError) as err:
        await kube.create(resource, body, field_manager=MANAGER)
    assert err.value.status == 403, err.value
    return err.value.message


async def test_instance_rules_through_the_api_server(
    webhook: LocalWebhook, kube: KubeClient, kube_namespace: str
) -> None:
    ns = kube_namespace
    await kube.create(APPLICATION_INSTANCES, instance(ns), field_manager=MANAGER)
    leaky = instance(ns, "leaky", values={"source": "inline", "inline": {"db": {"password": "pw"}}})
    message = await denied(kube, APPLICATION_INSTANCES, leaky)
    assert message == (
        'admission webhook "vapplicationinstance.kb.io" denied the request: '
        "spec.values.inline.db.password looks like a secret; inline values are stored in the "
        "ApplicationInstance and the HelmRelease in clear text, so put secret values in a "
        "Secret and use spec.values.secretRef"
    )
    pem = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----"
    message = await denied(
        kube,
        APPLICATION_INSTANCES,
        instance(ns, "pem", values={"source": "inline", "inline": {"tls": {"crt": pem}}}),
    )
    assert "spec.values.inline.tls.crt holds a PEM private key" in message
    # UPDATE: managed -> placeholder is refused once a chart was set.
    current = await kube.get(APPLICATION_INSTANCES, ObjectKey(ns, "shop"))
    current["spec"] = {"appRef": {"catalogId": "odoo"}, "mode": "placeholder"}
    with pytest.raises(ApiError) as err:
        await kube.replace(APPLICATION_INSTANCES, current, field_manager=MANAGER)
    assert "spec.mode cannot change from managed to placeholder" in err.value.message


async def test_operation_rules_through_the_api_server(
    webhook: LocalWebhook, kube: KubeClient, kube_namespace: str
) -> None:
    ns = kube_namespace
    missing = await denied(kube, OPERATIONS, operation("too-early", ns))
    assert missing.endswith(f"ApplicationInstance 'shop' not found in namespace '{ns}'")
    await kube.create(APPLICATION_INSTANCES, instance(ns), field_manager=MANAGER)
    await kube.create(APPLICATION_INSTANCES, instance(ns, "bare"), field_manager=MANAGER)

    wrong_pair = operation("wrong-pair", ns, engine="helm")
    assert (await denied(kube, OPERATIONS, wrong_pair)).endswith(
        "no built-in template for type Backup with engine helm (Backup runs on engine velero)"
    )
    bad_params = operation("bad-params", ns, type_="Restore", parameters={"backupName": ""})
    assert "spec.parameters.backupName: '' should be non-empty" in await denied(
        kube, OPERATIONS, bad_params
    )
    forged = operation(
        "forged",
        ns,
        type_="Restore",
        parameters={"backupName": "b"},
        approvals={"claim": sign({"v": 1, "op": "forged", "exp": 2**40}, "wrong")},
    )
    assert "approval claim signature does not verify" in await denied(kube, OPERATIONS, forged)

    # An Upgrade in flight blocks a Restore on the same target (docs/api.md, "Concurrency matrix").
    upgrade = await kube.create(
        OPERATIONS, operation("upgrade-1", ns, type_="Upgrade"), field_manager=MANAGER
    )
    await update_status(
        kube,
        OPERATIONS,
        ObjectKey(ns, "upgrade-1"),
        lambda _: {"phase": "Running"},
        field_manager=MANAGER,
        current=upgrade,
    )
    restore = operation(
        "restore-1",
        ns,
        type_="Restore",
        parameters={"backupName": "b"},
        approvals={"claim": sign({"v": 1, "op": "restore-1", "exp": 2**40}, SECRET)},
    )
    assert "Upgrade Operation 'upgrade-1' is in flight on ApplicationInstance 'shop'" in (
        await denied(kube, OPERATIONS, restore)
    )
    await kube.create(OPERATIONS, operation("backup-1", ns), field_manager=MANAGER)

    # UPDATE: identity is immutable; a metadata-only write passes.
    current = await kube.get(OPERATIONS, ObjectKey(ns, "backup-1"))
    current["spec"]["targetRef"]["name"] = "bare"
    with pytest.raises(ApiError) as err:
        await kube.replace(OPERATIONS, current, field_manager=MANAGER)
    assert "spec.targetRef.name is immutable (was 'shop', now 'bare')" in err.value.message


async def test_finalizer_removal_is_admitted_after_the_target_is_gone(
    webhook: LocalWebhook, kube: KubeClient, kube_namespace: str
) -> None:
    # docs/webhooks.md, "Differences from the Go webhooks": Go's rule 6 made such an Operation
    # undeletable.
    ns = kube_namespace
    await kube.create(APPLICATION_INSTANCES, instance(ns), field_manager=MANAGER)
    op = operation("held", ns)
    op["metadata"]["finalizers"] = ["ops.vworkspace.io/finalizer"]
    await kube.create(OPERATIONS, op, field_manager=MANAGER)
    await kube.delete(APPLICATION_INSTANCES, ObjectKey(ns, "shop"))
    await kube.delete(OPERATIONS, ObjectKey(ns, "held"))
    await kube.merge_patch(
        OPERATIONS,
        ObjectKey(ns, "held"),
        {"metadata": {"finalizers": None}},
        field_manager=MANAGER,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            await kube.get(OPERATIONS, ObjectKey(ns, "held"))
        except ApiError:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the Operation was not deleted after its finalizer was removed")


def served_serial(port: int, ca_pem: bytes) -> int:
    context = ssl.create_default_context(cadata=ca_pem.decode())
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        context.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


async def test_a_rotated_certificate_is_served_without_restart(
    webhook: LocalWebhook, kube: KubeClient, kube_namespace: str
) -> None:
    port, ca_pem = webhook.server.port, webhook.ca.cert_pem
    before = await asyncio.to_thread(served_serial, port, ca_pem)
    files = write_webhook_certs(webhook.cert_dir, hosts=("127.0.0.1",), ca=webhook.ca)
    rotated = x509.load_pem_x509_certificate(files.cert.read_bytes()).serial_number
    assert rotated != before
    deadline = time.monotonic() + 10
    while await asyncio.to_thread(served_serial, port, ca_pem) != rotated:
        assert time.monotonic() < deadline, "the rotated certificate was never served"
        await asyncio.sleep(0.1)
    assert webhook.server.certificates.reloads == 2
    # The API server keeps calling the webhook over the new certificate.
    leaky = instance(
        kube_namespace, "leaky", values={"source": "inline", "inline": {"apiKey": "k"}}
    )
    assert "spec.values.inline.apiKey looks like a secret" in await denied(
        kube, APPLICATION_INSTANCES, leaky
    )


async def test_acceptance_operator_process_rejects_a_type_the_namespace_does_not_allow(
    control_plane: ControlPlane, kube: KubeClient, kube_namespace: str, tmp_path: Path
) -> None:
    ns = kube_namespace
    certs = tmp_path / "certs"
    ca = new_ca("acceptance-ca", validity=datetime.timedelta(days=1))
    write_webhook_certs(certs, hosts=("127.0.0.1",), ca=ca)
    port = free_port()
    operator = OperatorProcess(
        control_plane,
        ns,
        tmp_path / "operator.log",
        "--webhooks-enabled",
        "--webhook-bind-address",
        f"127.0.0.1:{port}",
        "--webhook-cert-path",
        str(certs),
    )
    config = harness.local_configuration(
        base_url=f"https://127.0.0.1:{port}", ca_pem=ca.cert_pem, namespace=ns
    )
    try:
        operator.wait_ready()
        await harness.register(kube, config)
        await harness.wait_until_enforced(kube, ns)
        await kube.merge_patch(
            NAMESPACES,
            ObjectKey(None, ns),
            {"metadata": {"annotations": {"ops.vworkspace.io/allowed-types": "Backup,Upgrade"}}},
            field_manager=MANAGER,
        )
        await kube.create(APPLICATION_INSTANCES, instance(ns), field_manager=MANAGER)
        restore = operation("restore-1", ns, type_="Restore", parameters={"backupName": "b"})
        message = await denied(kube, OPERATIONS, restore)
        assert message == (
            'admission webhook "voperation.kb.io" denied the request: Operation type Restore '
            f"is not allowed in namespace '{ns}': its annotation "
            "ops.vworkspace.io/allowed-types allows only Backup, Upgrade"
        )
        await kube.create(OPERATIONS, operation("backup-1", ns), field_manager=MANAGER)
        assert "admission denied" in operator.output()
        # The webhook server stops with the rest of the operator on SIGTERM.
        operator.proc.terminate()
        assert operator.proc.wait(timeout=30) == 0, operator.output()
    finally:
        with contextlib.suppress(ApiError):
            await harness.unregister(kube, config)
        operator.stop()
