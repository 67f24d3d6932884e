"""The agent's TLS to the control plane against a real local HTTPS server that counts what it
received (agent/egress.py, agent/egresstls.py, agent/pinning.py): a private CA, mTLS from files
and from the credentials Secret, reload without restart, TLS 1.2 at least, and the fail-closed
cases (wrong pin, mismatched key, expired or not yet valid client certificate, an unrelated CA),
each of which must leave the server with zero requests and say what to fix."""

from __future__ import annotations

import asyncio
import base64
import datetime
import os
import random
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from prometheus_client import CollectorRegistry

from tests.unit.egress_helpers import DAY, NOW, CountingServer, Pki, https_server, issue
from vworkspace.agent.client import ControlPlaneClient, UnavailableError, register
from vworkspace.agent.credentials import DEFAULT_SECRET, CredentialStore, SecretTls
from vworkspace.agent.egress import Egress, EgressConfig
from vworkspace.agent.egresstls import TlsMaterialError
from vworkspace.agent.metrics import AgentMetrics
from vworkspace.agent.pinning import PinMismatchError, show_pin, spki_digest
from vworkspace.agent.wire import Credentials
from vworkspace.api.jsontypes import JsonObj
from vworkspace.kube.clock import FakeClock, RealClock
from vworkspace.kube.rest.resources import SECRETS
from vworkspace.testing.fakeapi import FakeApi

TOKEN = "bearer-never-sent-42"


def pin_of(pair_cert: object) -> bytes:
    der = pair_cert.public_bytes(serialization.Encoding.DER)  # type: ignore[attr-defined]
    return spki_digest(der)


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki.create()


@pytest.fixture
def files(tmp_path: Path, pki: Pki) -> dict[str, Path]:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(pki.ca.cert_pem)
    cert, key = pki.client.write(tmp_path, "client")
    return {"ca": ca, "cert": cert, "key": key}


@pytest.fixture
async def mtls_server(pki: Pki) -> AsyncIterator[CountingServer]:
    async with https_server(pki, require_client_cert=True) as server:
        yield server


def agent_client(egress: Egress, url: str) -> ControlPlaneClient:
    async def reload() -> Credentials:
        return Credentials(url, "c1", TOKEN)

    return ControlPlaneClient(
        egress,
        credentials=lambda: Credentials(url, "c1", TOKEN),
        reload=reload,
        clock=RealClock(),
        rng=random.Random(1),
        backoff_initial=0.001,
        attempts=2,
    )


async def get(egress: Egress, url: str) -> int:
    async with egress.request("GET", url + "/api/agent/jobs") as resp:
        return resp.status


async def test_a_private_ca_and_a_client_certificate_from_files(
    mtls_server: CountingServer, files: dict[str, Path]
) -> None:
    egress = Egress(
        EgressConfig(ca_file=files["ca"], client_cert=files["cert"], client_key=files["key"])
    )
    try:
        assert await get(egress, mtls_server.url) == 200
    finally:
        await egress.close()
    assert mtls_server.requests == [("GET", "/api/agent/jobs", True)]


async def test_without_the_private_ca_the_server_is_not_trusted(
    mtls_server: CountingServer,
) -> None:
    egress = Egress(EgressConfig())
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            await get(egress, mtls_server.url)
        with pytest.raises(UnavailableError) as err:
            await agent_client(egress, mtls_server.url).ack("job-1")
    finally:
        await egress.close()
    assert mtls_server.requests == []
    message = str(err.value)
    assert "127.0.0.1" in message
    assert "certificate verification failed: " in message
    assert "--control-plane-ca-file" in message
    assert "SSLContext object" not in message


async def test_the_secret_supplies_ca_and_client_certificate(
    mtls_server: CountingServer, pki: Pki
) -> None:
    secret = SecretTls(
        source="Secret ns/creds",
        ca_pem=pki.ca.cert_pem,
        cert_pem=pki.client.cert_pem,
        key_pem=pki.client.key_pem,
    )
    egress = Egress(EgressConfig())
    egress.attach(secret=lambda: secret)
    try:
        assert await get(egress, mtls_server.url) == 200
    finally:
        await egress.close()
    assert mtls_server.requests[0][2], "the client certificate was presented"


async def test_a_rotated_client_certificate_is_used_without_a_restart(
    mtls_server: CountingServer, pki: Pki, files: dict[str, Path]
) -> None:
    egress = Egress(
        EgressConfig(ca_file=files["ca"], client_cert=files["cert"], client_key=files["key"])
    )
    try:
        assert await get(egress, mtls_server.url) == 200
        first = egress.tls.current()
        renewed = issue(pki.ca, "cluster-1", server=False)
        # As kubelet updates a mounted Secret: new files, renamed into place.
        for name, data in (("cert", renewed.cert_pem), ("key", renewed.key_pem)):
            fresh = files[name].with_suffix(".new")
            fresh.write_bytes(data)
            os.replace(fresh, files[name])
        assert await get(egress, mtls_server.url) == 200
        assert egress.tls.current() is not first, "a new context for the new material"
        assert egress.tls.current() is egress.tls.current(), "and reused while unchanged"
    finally:
        await egress.close()


async def test_tls_1_1_and_older_are_refused() -> None:
    egress = Egress(EgressConfig())
    try:
        assert egress.tls.current().minimum_version == ssl.TLSVersion.TLSv1_2
    finally:
        await egress.close()


# -- pinning --------------------------------------------------------------------------------


async def test_a_pinned_ca_key_or_leaf_key_lets_the_request_through(
    mtls_server: CountingServer, pki: Pki, files: dict[str, Path]
) -> None:
    for pinned in (pin_of(pki.ca.cert), pin_of(pki.server.cert)):
        egress = Egress(
            EgressConfig(
                ca_file=files["ca"],
                client_cert=files["cert"],
                client_key=files["key"],
                # Rotation: an unrelated old pin next to the current one.
                pins=frozenset({pinned, b"\x01" * 32}),
            )
        )
        try:
            assert await get(egress, mtls_server.url) == 200
        finally:
            await egress.close()
    assert len(mtls_server.requests) == 2


async def test_a_wrong_pin_fails_closed_before_any_request(
    mtls_server: CountingServer, pki: Pki, files: dict[str, Path]
) -> None:
    registry = CollectorRegistry()
    metrics = AgentMetrics(registry)
    egress = Egress(
        EgressConfig(
            ca_file=files["ca"],
            client_cert=files["cert"],
            client_key=files["key"],
            pins=frozenset({pin_of(pki.other_ca.cert)}),
        )
    )
    egress.attach(on_pin_failure=metrics.tls_pin_failures.inc)
    client = agent_client(egress, mtls_server.url)
    try:
        with pytest.raises(UnavailableError) as err:
            await client.fetch_jobs(cluster_id="c1", wait=0)
        with pytest.raises(PinMismatchError):
            await get(egress, mtls_server.url)
    finally:
        await egress.close()
    assert mtls_server.requests == [], "the server saw no request, so no bearer token"
    message = str(err.value)
    assert "no pinned key" in message
    # The keys offered, leaf to root, in the flag's form, so the fix can be copied.
    assert message.index(show_pin(pin_of(pki.server.cert))) < message.index(
        show_pin(pin_of(pki.ca.cert))
    )
    assert "--control-plane-pin-sha256" in message
    assert TOKEN not in message
    assert registry.get_sample_value("vworkspace_agent_tls_pin_failures_total") == 2


async def test_pins_with_a_plain_http_url_fail_closed() -> None:
    egress = Egress(EgressConfig(pins=frozenset({b"\x02" * 32})))
    try:
        with pytest.raises(Exception, match="can only be checked over TLS"):
            egress.route("http://cp.example.com")
    finally:
        await egress.close()


# -- unusable material fails closed ------------------------------------------------------------


async def refused(egress: Egress, server: CountingServer) -> str:
    """The message of the refusal, after checking that nothing reached ``server``."""
    client = agent_client(egress, server.url)
    try:
        with pytest.raises(UnavailableError) as err:
            await client.ack("job-1")
    finally:
        await egress.close()
    assert server.requests == []
    assert TOKEN not in str(err.value)
    return str(err.value)


async def test_an_expired_client_certificate_fails_closed_naming_file_and_date(
    mtls_server: CountingServer, pki: Pki, files: dict[str, Path]
) -> None:
    expired = issue(pki.ca, "cluster-1", server=False, not_after=NOW - DAY)
    cert, key = expired.write(files["ca"].parent, "expired")
    registry = CollectorRegistry()
    egress = Egress(EgressConfig(ca_file=files["ca"], client_cert=cert, client_key=key))
    egress.attach(on_tls_error=AgentMetrics(registry).tls_material_errors.inc)
    message = await refused(egress, mtls_server)
    assert f"--control-plane-client-cert {cert}" in message
    assert "expired at " + expired.cert.not_valid_after_utc.isoformat() in message
    # Two attempts, one distinct problem: logged and counted once.
    assert registry.get_sample_value("vworkspace_agent_tls_material_errors_total") == 1


async def test_a_client_certificate_that_expires_while_running_stops_requests(
    mtls_server: CountingServer, files: dict[str, Path]
) -> None:
    clock = [datetime.datetime.now(datetime.UTC)]
    egress = Egress(
        EgressConfig(ca_file=files["ca"], client_cert=files["cert"], client_key=files["key"]),
        now=lambda: clock[0],
    )
    try:
        assert await get(egress, mtls_server.url) == 200
        clock[0] += 60 * DAY  # the files did not change; time moved on
        with pytest.raises(TlsMaterialError, match="expired at"):
            await get(egress, mtls_server.url)
    finally:
        await egress.close()
    assert len(mtls_server.requests) == 1


async def test_a_not_yet_valid_client_certificate_fails_closed(
    mtls_server: CountingServer, pki: Pki, files: dict[str, Path]
) -> None:
    future = issue(pki.ca, "cluster-1", server=False, not_before=NOW + DAY)
    cert, key = future.write(files["ca"].parent, "future")
    message = await refused(
        Egress(EgressConfig(ca_file=files["ca"], client_cert=cert, client_key=key)), mtls_server
    )
    assert "not valid before" in message


async def test_a_key_that_does_not_match_its_certificate_fails_closed(
    mtls_server: CountingServer, pki: Pki, files: dict[str, Path]
) -> None:
    other = issue(pki.ca, "someone-else", server=False)
    _, wrong_key = other.write(files["ca"].parent, "other")
    message = await refused(
        Egress(EgressConfig(ca_file=files["ca"], client_cert=files["cert"], client_key=wrong_key)),
        mtls_server,
    )
    assert f"--control-plane-client-key {wrong_key}: the private key does not match" in message


async def test_an_invalid_ca_bundle_fails_closed(
    mtls_server: CountingServer, files: dict[str, Path]
) -> None:
    files["ca"].write_text("not a certificate\n")
    message = await refused(Egress(EgressConfig(ca_file=files["ca"])), mtls_server)
    assert f"--control-plane-ca-file {files['ca']}: not a PEM CA bundle" in message


async def test_a_secret_with_half_a_pair_names_the_missing_key(
    mtls_server: CountingServer, pki: Pki
) -> None:
    egress = Egress(EgressConfig())
    egress.attach(secret=lambda: SecretTls(source="Secret ns/creds", cert_pem=pki.client.cert_pem))
    message = await refused(egress, mtls_server)
    assert "Secret ns/creds: key tls.key is missing" in message


async def test_an_unrelated_ca_is_refused_by_verification(
    mtls_server: CountingServer, pki: Pki, tmp_path: Path
) -> None:
    other = tmp_path / "other.pem"
    other.write_bytes(pki.other_ca.cert_pem)
    egress = Egress(EgressConfig(ca_file=other))
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            await get(egress, mtls_server.url)
    finally:
        await egress.close()
    assert mtls_server.requests == []


async def test_register_goes_through_the_same_checks(
    mtls_server: CountingServer, pki: Pki, files: dict[str, Path]
) -> None:
    egress = Egress(
        EgressConfig(
            ca_file=files["ca"],
            client_cert=files["cert"],
            client_key=files["key"],
            pins=frozenset({pin_of(pki.other_ca.cert)}),
        )
    )
    try:
        with pytest.raises(UnavailableError, match="no pinned key"):
            await register(egress, base_url=mtls_server.url, registration_token="reg-secret")
    finally:
        await egress.close()
    assert mtls_server.requests == []


def test_the_pin_of_the_contract_is_openssls() -> None:
    """base64(SHA-256(DER SPKI)), as `openssl x509 -pubkey | openssl pkey -pubin -outform der |
    openssl dgst -sha256 -binary | base64` prints it (checked with openssl when present)."""
    import shutil
    import subprocess

    pki = Pki.create()
    digest = pin_of(pki.server.cert)
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: this test compares with its output")
    pubkey = subprocess.run(
        ["openssl", "x509", "-pubkey", "-noout"],
        input=pki.server.cert_pem,
        capture_output=True,
        check=True,
    ).stdout
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "der"],
        input=pubkey,
        capture_output=True,
        check=True,
    ).stdout
    import hashlib

    assert base64.b64encode(hashlib.sha256(der).digest()) == base64.b64encode(digest)


async def test_a_refused_pin_is_retried_with_backoff_not_hot_looped(
    mtls_server: CountingServer, pki: Pki, files: dict[str, Path]
) -> None:
    slept: list[float] = []

    class RecordingClock(RealClock):
        async def sleep(self, seconds: float) -> None:
            slept.append(seconds)

    egress = Egress(EgressConfig(ca_file=files["ca"], pins=frozenset({pin_of(pki.other_ca.cert)})))
    client = ControlPlaneClient(
        egress,
        credentials=lambda: Credentials(mtls_server.url, "c1", TOKEN),
        reload=lambda: asyncio.sleep(0, Credentials(mtls_server.url, "c1", TOKEN)),
        clock=RecordingClock(),
        rng=random.Random(1),
        backoff_initial=0.5,
        attempts=3,
    )
    try:
        with pytest.raises(UnavailableError):
            await client.ack("job-1")
    finally:
        await egress.close()
    assert len(slept) == 2, slept
    assert all(delay > 0 for delay in slept), slept


async def test_the_credentials_secret_keys_reach_the_session_and_changes_apply(
    mtls_server: CountingServer, pki: Pki
) -> None:
    """The store reads ca.crt/tls.crt/tls.key (base64 ``data``) of the Secret in use; writing
    the keys later (no restart) makes the next request present the certificate."""
    api = FakeApi()
    store = CredentialStore(api, namespace="ops", clock=FakeClock())
    secret: JsonObj = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": DEFAULT_SECRET, "namespace": "ops"},
        "data": {"ca.crt": base64.b64encode(pki.ca.cert_pem).decode()},
    }
    await api.create(SECRETS, secret, field_manager="test")
    await store.reload()
    assert store.tls().source == f"Secret ops/{DEFAULT_SECRET}"
    egress = Egress(EgressConfig())
    egress.attach(secret=store.tls)
    try:
        # The CA alone: trusted, but the server wants a client certificate and drops us.
        with pytest.raises(aiohttp.ClientError):
            await get(egress, mtls_server.url)
        secret["data"]["tls.crt"] = base64.b64encode(pki.client.cert_pem).decode()
        secret["data"]["tls.key"] = base64.b64encode(pki.client.key_pem).decode()
        await api.apply(SECRETS, secret, field_manager="test")
        await store.reload()
        assert await get(egress, mtls_server.url) == 200
    finally:
        await egress.close()
    assert mtls_server.requests == [("GET", "/api/agent/jobs", True)]
    assert "PRIVATE KEY" not in repr(store.tls())
