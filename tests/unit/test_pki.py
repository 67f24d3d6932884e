"""The throw-away PKI: a serving certificate that a TLS client trusts for 127.0.0.1."""

from __future__ import annotations

import ipaddress
import ssl
import stat
from pathlib import Path

from cryptography import x509

from vworkspace.testing.pki import write_pki


def test_serving_certificate_is_signed_by_the_ca_for_loopback(tmp_path: Path) -> None:
    pki = write_pki(tmp_path)
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    serving = x509.load_pem_x509_certificate(pki.serving_cert.read_bytes())
    serving.verify_directly_issued_by(ca)
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    # The standard library accepts the pair, as the fixtures' REST client will.
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(pki.serving_cert, pki.serving_key)
    ssl.create_default_context(cafile=str(pki.ca_cert))


def test_private_keys_are_owner_only(tmp_path: Path) -> None:
    pki = write_pki(tmp_path)
    for key in (pki.serving_key, pki.service_account_private):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
