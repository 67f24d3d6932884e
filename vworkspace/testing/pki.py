"""Certificates and keys for a throw-away control plane.

One small ECDSA CA signs the API server's serving certificate (SANs 127.0.0.1, ::1, localhost);
an RSA key pair signs service-account tokens. Everything lives for seven days and only in the
control plane's data directory. We make our own rather than let kube-apiserver self-sign so that
the kubeconfig can pin a CA that exists before the server starts (no race on the file).
"""

from __future__ import annotations

import datetime
from pathlib import Path

import attrs
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from vworkspace.webhooks.certs import new_ca, new_serving_pair, pem_key, write_private

_VALIDITY = datetime.timedelta(days=7)


@attrs.frozen
class ControlPlanePki:
    """Paths of the files written by :func:`write_pki`."""

    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    service_account_public: Path
    service_account_private: Path


def write_pki(
    directory: Path, *, hosts: tuple[str, ...] = ("127.0.0.1", "::1", "localhost")
) -> ControlPlanePki:
    """Write a CA, a serving pair for ``hosts`` and a service-account key pair to ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = new_ca("vworkspace-testenv-ca", validity=_VALIDITY)
    serving = new_serving_pair(ca, hosts=hosts, common_name="kube-apiserver", validity=_VALIDITY)
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    pki = ControlPlanePki(
        ca_cert=directory / "ca.crt",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        service_account_public=directory / "sa.pub",
        service_account_private=directory / "sa.key",
    )
    pki.ca_cert.write_bytes(ca.cert_pem)
    pki.serving_cert.write_bytes(serving.cert_pem)
    write_private(pki.serving_key, serving.key_pem)
    pki.service_account_public.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    write_private(pki.service_account_private, pem_key(sa_key))
    return pki
