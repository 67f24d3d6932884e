"""Self-signed CA and serving certificates: for webhook development and the test control plane.

In a cluster, cert-manager issues and rotates the webhook's serving certificate
(manifests/webhook); this module is for everything else: ``python -m vworkspace webhook-certs``
for local development and the throw-away PKI of the test control plane. ECDSA P-256 keys (small,
fast to generate, accepted by every Kubernetes TLS stack); the validity window starts five
minutes in the past so small clock differences do not make a fresh certificate "not yet valid".
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
_SKEW = datetime.timedelta(minutes=5)


@attrs.frozen
class Issued:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return pem_key(self.key)


def pem_key(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def new_ca(common_name: str, *, validity: datetime.timedelta) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return Issued(key, cert)


def new_serving_pair(
    ca: Issued, *, hosts: tuple[str, ...], common_name: str, validity: datetime.timedelta
) -> Issued:
    """A server certificate for ``hosts`` (IP addresses become IP SANs, the rest DNS SANs)."""
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW)
        .not_valid_after(now + validity)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(key, cert)


def service_hosts(service: str, namespace: str) -> tuple[str, ...]:
    """The names the API server uses to reach a webhook Service."""
    return (
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    )


def write_private(path: Path, data: bytes) -> None:
    """Write key material readable by the owner only (no window with wider permissions)."""
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(data)


@attrs.frozen
class WebhookCertFiles:
    ca_cert: Path
    cert: Path
    key: Path


def write_webhook_certs(
    directory: Path,
    *,
    hosts: tuple[str, ...],
    ca: Issued | None = None,
    validity: datetime.timedelta = datetime.timedelta(days=365),
    cert_name: str = "tls.crt",
    key_name: str = "tls.key",
) -> WebhookCertFiles:
    """Write ``ca.crt`` and a serving pair for ``hosts`` into ``directory``. Pass ``ca`` to
    re-issue the serving pair under an existing CA (what a rotation looks like)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = ca or new_ca("vworkspace-webhook-ca", validity=validity)
    pair = new_serving_pair(ca, hosts=hosts, common_name=hosts[0], validity=validity)
    files = WebhookCertFiles(directory / "ca.crt", directory / cert_name, directory / key_name)
    files.ca_cert.write_bytes(ca.cert_pem)
    # Key first, then certificate: a reader that sees the new certificate also sees its key.
    write_private(files.key, pair.key_pem)
    files.cert.write_bytes(pair.cert_pem)
    return files
