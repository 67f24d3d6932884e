"""The TLS context of the agent's connection to the control plane: the system trust store plus
an optional private CA, an optional client certificate (mTLS), TLS 1.2 at least.

Sources, each flag winning over the credentials Secret's key (as for the other credentials):
``--control-plane-ca-file`` / ``ca.crt``, ``--control-plane-client-cert`` + ``-key`` /
``tls.crt`` + ``tls.key``. A private CA is *added* to the system's trust store, so a control
plane with a public certificate keeps working while a proxy's CA is rolled out.

Reload without restart: every request compares the files' ``(mtime_ns, size, inode)`` (one
``os.stat`` each; the agent makes a few requests a minute) and the Secret's material (read from
the credential store's cache) with those the current context was built from; any change builds a
new context. aiohttp keys pooled connections by the request's SSL context, so new connections
use the new material while open ones finish with the old (an inode change catches the atomic
symlink swap of a mounted Secret).

Fail closed: an unreadable or invalid CA bundle, a certificate that is not PEM, a key that does
not match its certificate, a client certificate that is expired or not yet valid: no context,
no request. The error names the flag or the Secret key and, for validity, the dates; it is logged
once per distinct problem (not per request) and counted in
``vworkspace_agent_tls_material_errors_total``.
"""

from __future__ import annotations

import datetime
import ssl
from collections.abc import Callable
from pathlib import Path

import aiohttp
import attrs
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from vworkspace.agent.credentials import KEY_CA, KEY_CERT, KEY_KEY, SecretTls
from vworkspace.kube.rest.credentials import ClientCertificate, load_certificate

_log = structlog.get_logger("vworkspace.agent.egress")
FileStamp = tuple[int, int, int] | None


class TlsMaterialError(aiohttp.ClientConnectionError):
    """The CA bundle or the client certificate cannot be used; nothing was sent."""


@attrs.frozen
class TlsFiles:
    """The files given by flags (None: not given)."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


@attrs.frozen
class _Pem:
    """Material read from one source, with the names to blame in messages."""

    data: bytes = attrs.field(repr=False)
    origin: str  # "--control-plane-ca-file /etc/cp/ca.pem" or "Secret ns/name key ca.crt"


def _stamp(path: Path | None, flag: str) -> FileStamp:
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError as err:
        raise TlsMaterialError(f"{flag} {path}: cannot read: {err.strerror}") from None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _read(path: Path, flag: str) -> _Pem:
    try:
        return _Pem(path.read_bytes(), f"{flag} {path}")
    except OSError as err:
        raise TlsMaterialError(f"{flag} {path}: cannot read: {err.strerror}") from None


@attrs.frozen
class _Built:
    context: ssl.SSLContext
    not_before: datetime.datetime | None = None
    not_after: datetime.datetime | None = None
    certificate_origin: str = ""


def _check_ca(ca: _Pem) -> str:
    try:
        certificates = x509.load_pem_x509_certificates(ca.data)
    except ValueError:
        raise TlsMaterialError(
            f"{ca.origin}: not a PEM CA bundle (expected one or more "
            "'-----BEGIN CERTIFICATE-----' blocks)"
        ) from None
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certificates)


def _check_pair(cert: _Pem, key: _Pem) -> x509.Certificate:
    """The leaf certificate, after checking the key belongs to it."""
    try:
        leaf = x509.load_pem_x509_certificates(cert.data)[0]
    except ValueError:
        raise TlsMaterialError(f"{cert.origin}: not a PEM certificate") from None
    try:
        private_key = serialization.load_pem_private_key(key.data, password=None)
    except (ValueError, TypeError):
        raise TlsMaterialError(f"{key.origin}: not an unencrypted PEM private key") from None
    spki = (Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    if private_key.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
        raise TlsMaterialError(
            f"{key.origin}: the private key does not match the certificate in {cert.origin}; "
            "give the key the certificate was issued for"
        )
    return leaf


def _check_validity(built: _Built, now: datetime.datetime) -> None:
    if built.not_after is not None and now > built.not_after:
        raise TlsMaterialError(
            f"{built.certificate_origin}: the client certificate expired at "
            f"{built.not_after.isoformat()}; renew it (the new file or Secret is used without a "
            "restart)"
        )
    if built.not_before is not None and now < built.not_before:
        raise TlsMaterialError(
            f"{built.certificate_origin}: the client certificate is not valid before "
            f"{built.not_before.isoformat()}; check the clocks or the certificate"
        )


class TlsContexts:
    """The current SSL context for the control plane, rebuilt when its material changes."""

    def __init__(
        self,
        files: TlsFiles,
        *,
        secret: Callable[[], SecretTls] = SecretTls,
        now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
        on_error: Callable[[], None] = lambda: None,
    ) -> None:
        self.files = files
        self.secret = secret
        self.now = now
        self.on_error = on_error
        self._key: object = None
        self._built: _Built | None = None
        self._last_error = ""

    def current(self) -> ssl.SSLContext:
        """The context to use for the next request; raises :class:`TlsMaterialError`."""
        try:
            built = self._current()
            _check_validity(built, self.now())
        except TlsMaterialError as err:
            if str(err) != self._last_error:
                self._last_error = str(err)
                self.on_error()
                _log.error("control plane TLS material refused; no request is sent", error=str(err))
            raise
        if self._last_error:
            self._last_error = ""
            _log.info("control plane TLS material usable again")
        return built.context

    def _current(self) -> _Built:
        files, secret = self.files, self.secret()
        key = (
            _stamp(files.ca_file, "--control-plane-ca-file"),
            _stamp(files.cert_file, "--control-plane-client-cert"),
            _stamp(files.key_file, "--control-plane-client-key"),
            secret,
        )
        if key != self._key or self._built is None:
            self._built = self._build(secret)
            self._key = key
            _log.info(
                "control plane TLS context built",
                client_certificate=bool(self._built.certificate_origin),
            )
        return self._built

    def _build(self, secret: SecretTls) -> _Built:
        context = ssl.create_default_context()
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        ca = self._ca(secret)
        if ca is not None:
            context.load_verify_locations(cadata=_check_ca(ca))
        pair = self._pair(secret)
        if pair is None:
            return _Built(context)
        cert, key = pair
        leaf = _check_pair(cert, key)
        try:
            load_certificate(context, ClientCertificate(cert_pem=cert.data, key_pem=key.data))
        except ssl.SSLError as err:
            raise TlsMaterialError(
                f"{cert.origin}: OpenSSL refused the pair: {err.reason}"
            ) from None
        return _Built(
            context,
            not_before=leaf.not_valid_before_utc,
            not_after=leaf.not_valid_after_utc,
            certificate_origin=cert.origin,
        )

    def _ca(self, secret: SecretTls) -> _Pem | None:
        if self.files.ca_file is not None:
            return _read(self.files.ca_file, "--control-plane-ca-file")
        if secret.ca_pem:
            return _Pem(secret.ca_pem, f"{secret.source} key {KEY_CA}")
        return None

    def _pair(self, secret: SecretTls) -> tuple[_Pem, _Pem] | None:
        files = self.files
        if files.cert_file is not None and files.key_file is not None:
            return (
                _read(files.cert_file, "--control-plane-client-cert"),
                _read(files.key_file, "--control-plane-client-key"),
            )
        if not secret.cert_pem and not secret.key_pem:
            return None
        if not secret.cert_pem or not secret.key_pem:
            missing = KEY_CERT if not secret.cert_pem else KEY_KEY
            raise TlsMaterialError(
                f"{secret.source}: key {missing} is missing; {KEY_CERT} and {KEY_KEY} go together"
            )
        return (
            _Pem(secret.cert_pem, f"{secret.source} key {KEY_CERT}"),
            _Pem(secret.key_pem, f"{secret.source} key {KEY_KEY}"),
        )
