"""The egress tests' PKI (vworkspace/testing/egresspki.py): each certificate does what its name
says in a real TLS handshake over loopback, and the pin matches openssl's pipeline."""

from __future__ import annotations

import asyncio
import datetime
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from vworkspace.testing.egresspki import (
    CONTROL_PLANE_HOST,
    EgressPki,
    PemPair,
    spki_sha256,
    write_egress_pki,
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> EgressPki:
    return write_egress_pki(tmp_path_factory.mktemp("egresspki"))


def _openssl_pin(cert: Path) -> str:
    pubkey = subprocess.run(
        ["openssl", "x509", "-pubkey", "-noout", "-in", str(cert)], capture_output=True, check=True
    ).stdout
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "der"],
        input=pubkey,
        capture_output=True,
        check=True,
    ).stdout
    digest = subprocess.run(
        ["openssl", "dgst", "-sha256", "-binary"], input=der, capture_output=True, check=True
    ).stdout
    return subprocess.run(
        ["openssl", "base64", "-A"], input=digest, capture_output=True, check=True
    ).stdout.decode()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl CLI is the reference")
def test_pin_matches_the_openssl_pipeline(pki: EgressPki) -> None:
    for cert in (pki.ca_cert, pki.server.cert, pki.other_ca_cert):
        assert spki_sha256(cert.read_bytes()) == _openssl_pin(cert)
    assert len({pki.ca_pin, pki.server.pin, pki.other_ca_pin, pki.other_server.pin}) == 4


def test_certificates_carry_the_names_usages_and_windows(pki: EgressPki) -> None:
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(pki.server.cert.read_bytes())
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert CONTROL_PLANE_HOST in sans.get_values_for_type(x509.DNSName)
    now = datetime.datetime.now(datetime.UTC)
    for pair, valid in ((pki.client, True), (pki.expired_client, False)):
        cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
        cert.verify_directly_issued_by(ca)
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        assert (cert.not_valid_after_utc > now) is valid


async def _echo(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, server_hostname: str
) -> bytes:
    """Send one byte over a TLS connection on loopback and return what the server echoed:
    ``b"x"`` when both ends accepted each other. A server that refuses the client's certificate
    drops the connection (asyncio's TLS server sends no alert the client could read), so the
    client reads end-of-file: ``b""``. A client that refuses the server raises."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.read(1))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ctx, server_hostname=server_hostname
        )
        writer.write(b"x")
        await writer.drain()
        try:
            return await reader.read(1)
        except (ssl.SSLError, ConnectionError):
            return b""
        finally:
            writer.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_valid_client_certificate_completes_mtls(pki: EgressPki) -> None:
    client = pki.client_context(client_cert=pki.client)
    assert await _echo(pki.server_context(), client, CONTROL_PLANE_HOST) == b"x"


@pytest.mark.parametrize("client_cert", ["expired", "none"])
async def test_server_context_refuses_expired_or_missing_client_cert(
    pki: EgressPki, client_cert: str
) -> None:
    pair: PemPair | None = pki.expired_client if client_cert == "expired" else None
    client = pki.client_context(client_cert=pair)
    assert await _echo(pki.server_context(), client, CONTROL_PLANE_HOST) == b""


async def test_without_client_verification_any_client_is_served(pki: EgressPki) -> None:
    server = pki.server_context(require_client_cert=False)
    assert await _echo(server, pki.client_context(), CONTROL_PLANE_HOST) == b"x"


async def test_unrelated_ca_is_not_trusted(pki: EgressPki) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        await _echo(
            pki.server_context(require_client_cert=False, other_ca=True),
            pki.client_context(),
            CONTROL_PLANE_HOST,
        )
