"""The webhook HTTP handlers (AdmissionReview in, answer out) and the certificate reloader."""

from __future__ import annotations

import datetime
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from tests.unit.test_admission_rules import instance, operation, target
from vworkspace.api.admission import World
from vworkspace.api.jsontypes import JsonObj
from vworkspace.kube.clock import FakeClock
from vworkspace.kube.rest.errors import error_for
from vworkspace.kube.tls import CertificateError, CertificateReloader
from vworkspace.webhooks.certs import new_ca, write_webhook_certs
from vworkspace.webhooks.server import (
    INSTANCE_PATH,
    OPERATION_PATH,
    WebhookMetrics,
    WebhookServer,
)


class ScriptedLookup:
    def __init__(self, world: World | Exception) -> None:
        self.result = world
        self.calls = 0

    async def world(self, *, namespace: str, target: str) -> World:
        self.calls += 1
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


@pytest.fixture
def certs(tmp_path: Path) -> CertificateReloader:
    files = write_webhook_certs(tmp_path, hosts=("127.0.0.1",))
    return CertificateReloader(cert=files.cert, key=files.key)


@pytest.fixture
def lookup() -> ScriptedLookup:
    return ScriptedLookup(World(target=target()))


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def client(
    certs: CertificateReloader, lookup: ScriptedLookup, registry: CollectorRegistry
) -> AsyncIterator[TestClient[Any, Any]]:
    server = WebhookServer(
        host="127.0.0.1",
        port=0,
        certificates=certs,
        lookup=lookup,
        approval_secret="",
        clock=FakeClock(),
        metrics=WebhookMetrics.create(registry),
    )
    async with TestClient(TestServer(server.application())) as test_client:
        yield test_client


def review(obj: JsonObj | None, *, op: str = "CREATE", old: JsonObj | None = None) -> JsonObj:
    request: JsonObj = {"uid": "u-1", "operation": op, "namespace": "team-a", "name": "x"}
    if obj is not None:
        request["object"] = obj
    if old is not None:
        request["oldObject"] = old
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


async def post(client: TestClient[Any, Any], path: str, body: Any) -> JsonObj:
    resp = await client.post(path, json=body)
    assert resp.status == 200
    data: JsonObj = await resp.json()
    assert data["apiVersion"] == "admission.k8s.io/v1"
    assert data["kind"] == "AdmissionReview"
    response: JsonObj = data["response"]
    assert response["uid"] == "u-1"
    return response


async def test_a_valid_instance_is_allowed(client: TestClient[Any, Any]) -> None:
    response = await post(client, INSTANCE_PATH, review(instance()))
    assert response == {"uid": "u-1", "allowed": True}


async def test_a_denial_carries_403_and_the_message(client: TestClient[Any, Any]) -> None:
    bad = instance(values={"source": "inline", "inline": {"password": "x"}})
    response = await post(client, INSTANCE_PATH, review(bad))
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    assert response["status"]["reason"] == "Forbidden"
    assert response["status"]["message"].startswith("spec.values.inline.password looks like")


async def test_delete_is_not_validated(
    client: TestClient[Any, Any], lookup: ScriptedLookup
) -> None:
    response = await post(client, OPERATION_PATH, review(None, op="DELETE", old=operation()))
    assert response["allowed"] is True
    assert lookup.calls == 0


async def test_finalizer_writes_need_no_lookup(
    client: TestClient[Any, Any], lookup: ScriptedLookup
) -> None:
    old = operation()
    new = {**old, "metadata": {**old["metadata"], "finalizers": ["ops.vworkspace.io/finalizer"]}}
    response = await post(client, OPERATION_PATH, review(new, op="UPDATE", old=old))
    assert response["allowed"] is True
    assert lookup.calls == 0


async def test_operations_use_the_looked_up_world(
    client: TestClient[Any, Any], lookup: ScriptedLookup
) -> None:
    assert (await post(client, OPERATION_PATH, review(operation())))["allowed"] is True
    lookup.result = World(target=None)
    response = await post(client, OPERATION_PATH, review(operation()))
    assert response["status"]["message"] == (
        "spec.targetRef.name: ApplicationInstance 'shop' not found in namespace 'team-a'"
    )
    assert lookup.calls == 2


async def test_a_failed_lookup_is_an_error_not_an_admission(
    client: TestClient[Any, Any], lookup: ScriptedLookup, registry: CollectorRegistry
) -> None:
    lookup.result = error_for(
        status=503, body={"message": "etcd unavailable"}, method="GET", path="/x"
    )
    response = await post(client, OPERATION_PATH, review(operation()))
    assert response["allowed"] is False
    assert response["status"]["code"] == 500
    assert "could not evaluate the admission rules" in response["status"]["message"]
    assert "etcd unavailable" in response["status"]["message"]
    count = registry.get_sample_value(
        "controller_runtime_webhook_requests_total", {"webhook": OPERATION_PATH, "code": "200"}
    )
    assert count == 1.0


@pytest.mark.parametrize(
    "body", [{"kind": "Pod"}, [], {"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1"}]
)
async def test_a_body_that_is_not_a_review_is_a_400(
    client: TestClient[Any, Any], body: Any
) -> None:
    resp = await client.post(INSTANCE_PATH, json=body)
    assert resp.status == 400
    assert "bad AdmissionReview" in await resp.text()


async def test_invalid_json_is_a_400(client: TestClient[Any, Any]) -> None:
    resp = await client.post(INSTANCE_PATH, data=b"{not json", headers={"Content-Type": "x"})
    assert resp.status == 400


def test_the_reloader_picks_up_a_new_pair_and_survives_a_mismatched_one(tmp_path: Path) -> None:
    ca = new_ca("test-ca", validity=datetime.timedelta(days=1))
    files = write_webhook_certs(tmp_path, hosts=("127.0.0.1",), ca=ca)
    reloader = CertificateReloader(cert=files.cert, key=files.key)
    assert reloader.reloads == 1
    assert reloader.reload_if_changed() is False  # nothing changed on disk
    write_webhook_certs(tmp_path, hosts=("127.0.0.1",), ca=ca)
    assert reloader.reload_if_changed() is True
    assert reloader.reloads == 2
    # Mid-rotation: a new key next to the old certificate must not replace the working pair.
    other = write_webhook_certs(tmp_path / "other", hosts=("127.0.0.1",), ca=ca)
    files.key.write_bytes(other.key.read_bytes())
    with pytest.raises(ssl.SSLError):
        reloader.reload_if_changed()
    assert reloader.reloads == 2


def test_an_unreadable_pair_at_start_names_the_files(tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match=r"cannot load .*tls\.crt and .*tls\.key"):
        CertificateReloader(cert=tmp_path / "tls.crt", key=tmp_path / "tls.key")
