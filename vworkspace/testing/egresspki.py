"""Certificates for the egress tests: a private CA, mTLS and pinning (issue 27).

What the tests need, written once to a directory: a test CA that signs the control plane's
server certificate (SANs ``controlplane.vworkspace.test``, ``127.0.0.1``, ``localhost``) and two
client certificates (EKU clientAuth): one valid, one whose ``notAfter`` is an hour in the past.
A second, unrelated CA signs a server certificate of its own, for "wrong CA" and "wrong pin"
cases. :func:`spki_sha256` gives the pin value the operator's ``--control-plane-pin-sha256``
takes (base64 of SHA-256 of the DER SubjectPublicKeyInfo, the same as the ``openssl x509
-pubkey | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64`` pipeline).

The CA and server pairs come from :mod:`vworkspace.webhooks.certs` (ECDSA P-256, five minutes of
clock skew allowed); only the client certificates are issued here, because they need the
clientAuth usage and a chosen validity window. Everything is throw-away and valid for a day.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ssl
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vworkspace.webhooks.certs import Issued, new_ca, new_serving_pair, write_private

CONTROL_PLANE_HOST = "controlplane.vworkspace.test"
SERVER_HOSTS = (CONTROL_PLANE_HOST, "127.0.0.1", "localhost")
CLIENT_COMMON_NAME = "cluster-egress-1"
_VALIDITY = datetime.timedelta(days=1)


@attrs.frozen
class PemPair:
    """A certificate and its private key as PEM files."""

    cert: Path
    key: Path

    @property
    def pin(self) -> str:
        """The certificate's SPKI pin (base64 SHA-256)."""
        return spki_sha256(self.cert.read_bytes())


@attrs.frozen
class EgressPki:
    """Paths of everything :func:`write_egress_pki` wrote, and TLS contexts built from them."""

    ca_cert: Path
    server: PemPair
    client: PemPair
    expired_client: PemPair
    other_ca_cert: Path
    other_server: PemPair

    @property
    def ca_pin(self) -> str:
        return spki_sha256(self.ca_cert.read_bytes())

    @property
    def other_ca_pin(self) -> str:
        return spki_sha256(self.other_ca_cert.read_bytes())

    def server_context(
        self, *, require_client_cert: bool = True, other_ca: bool = False
    ) -> ssl.SSLContext:
        """A server context presenting the test CA's server certificate (``other_ca``: the
        unrelated CA's); with ``require_client_cert`` a client must present a certificate that
        the test CA signed, or the handshake fails."""
        pair = self.other_server if other_ca else self.server
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(pair.cert, pair.key)
        if require_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cafile=str(self.ca_cert))
        return context

    def client_context(self, *, client_cert: PemPair | None = None) -> ssl.SSLContext:
        """A client context trusting the test CA, presenting ``client_cert`` when given
        (for the tests' own admin calls to an mTLS mock)."""
        context = ssl.create_default_context(cafile=str(self.ca_cert))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if client_cert is not None:
            context.load_cert_chain(client_cert.cert, client_cert.key)
        return context


def spki_sha256(cert_pem: bytes) -> str:
    """Base64 of the SHA-256 of the certificate's DER SubjectPublicKeyInfo (an HPKP-style pin)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    der = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode("ascii")


def new_client_pair(
    ca: Issued,
    *,
    common_name: str,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
) -> Issued:
    """A client certificate (EKU clientAuth) signed by ``ca`` for the given window; a window in
    the past makes an expired certificate that still parses and loads."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(key, cert)


def _write_pair(directory: Path, name: str, issued: Issued) -> PemPair:
    pair = PemPair(directory / f"{name}.crt", directory / f"{name}.key")
    write_private(pair.key, issued.key_pem)
    pair.cert.write_bytes(issued.cert_pem)
    return pair


def write_egress_pki(directory: Path, *, server_hosts: tuple[str, ...] = SERVER_HOSTS) -> EgressPki:
    """Generate the whole set into ``directory`` (created if missing); file names are stable:
    ``ca.crt``, ``server.crt/.key``, ``client.crt/.key``, ``expired-client.crt/.key``,
    ``other-ca.crt``, ``other-server.crt/.key``."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca = new_ca("vworkspace-egress-test-ca", validity=_VALIDITY)
    other_ca = new_ca("vworkspace-egress-unrelated-ca", validity=_VALIDITY)
    hour = datetime.timedelta(hours=1)
    (directory / "ca.crt").write_bytes(ca.cert_pem)
    (directory / "other-ca.crt").write_bytes(other_ca.cert_pem)
    return EgressPki(
        ca_cert=directory / "ca.crt",
        server=_write_pair(
            directory,
            "server",
            new_serving_pair(
                ca, hosts=server_hosts, common_name=server_hosts[0], validity=_VALIDITY
            ),
        ),
        client=_write_pair(
            directory,
            "client",
            new_client_pair(
                ca, common_name=CLIENT_COMMON_NAME, not_before=now - hour, not_after=now + _VALIDITY
            ),
        ),
        expired_client=_write_pair(
            directory,
            "expired-client",
            new_client_pair(
                ca, common_name=CLIENT_COMMON_NAME, not_before=now - 3 * hour, not_after=now - hour
            ),
        ),
        other_ca_cert=directory / "other-ca.crt",
        other_server=_write_pair(
            directory,
            "other-server",
            new_serving_pair(
                other_ca, hosts=server_hosts, common_name=server_hosts[0], validity=_VALIDITY
            ),
        ),
    )
