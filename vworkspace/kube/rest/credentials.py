"""How requests to the API server authenticate: the small interface the transport asks before
every request, and the simple credential kinds (a static token, basic auth, a token file).

The transport (kube/rest/transport.py) calls :meth:`Credentials.current` for each request and adds
the headers; a credential may also carry a client certificate (an exec plugin can return one),
which the transport loads into its TLS context for new connections. After a 401 the transport
calls :meth:`Credentials.invalidate`, so the next request re-reads a token file or re-runs an
exec plugin rather than repeating a credential the server just refused (client-go does the
same). The request that got the 401 is not retried here: callers already retry failures.

Token files (the projected service-account token, a kubeconfig ``tokenFile``) are re-read at
most once a minute, as client-go's cached file token source does; the read is a small blocking
file read, once a minute, which is cheaper than an executor hop. A failed re-read keeps the last
good token, since kubelet rewrites the file atomically and a transient error should not turn
into failed requests.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

import aiohttp
import attrs

TOKEN_FILE_PERIOD = 60.0  # client-go re-reads token files every minute


class CredentialError(aiohttp.ClientError):
    """A credential cannot be produced (an unreadable token file, a failing exec plugin).

    An ``aiohttp.ClientError``: the request could not be sent, and every caller already treats
    that as a transient failure to retry with backoff (an exec plugin may work next time)."""


@attrs.frozen
class ClientCertificate:
    """A PEM client certificate (chain) and its PEM private key, held in memory."""

    cert_pem: bytes = attrs.field(repr=False)
    key_pem: bytes = attrs.field(repr=False)


@attrs.frozen
class Credential:
    """What one request carries: headers (``Authorization``), and a client certificate when
    the credential source supplies one (else the kubeconfig's static one is used)."""

    headers: Mapping[str, str] = attrs.field(factory=dict, repr=False)
    certificate: ClientCertificate | None = None


class Credentials(Protocol):
    async def current(self) -> Credential: ...

    def invalidate(self) -> None: ...


@attrs.define
class StaticCredentials:
    """A fixed credential: a bearer token, basic auth, or nothing (client certificate only)."""

    credential: Credential = attrs.field(factory=Credential)

    async def current(self) -> Credential:
        return self.credential

    def invalidate(self) -> None:
        return None


def bearer(token: str) -> Credential:
    return Credential(headers={"Authorization": f"Bearer {token}"})


def basic(username: str, password: str) -> Credential:
    raw = f"{username}:{password}".encode()
    return Credential(headers={"Authorization": f"Basic {base64.b64encode(raw).decode()}"})


@attrs.define
class TokenFileCredentials:
    """A bearer token read from ``path``, re-read when older than ``period`` seconds or after a
    401. The first read happens in :meth:`load` (at start), so a missing file fails early."""

    path: Path
    period: float = TOKEN_FILE_PERIOD
    clock: Callable[[], float] = time.monotonic
    _token: str = attrs.field(default="", init=False, repr=False)
    _read_at: float | None = attrs.field(default=None, init=False)

    def load(self) -> TokenFileCredentials:
        """Read the token now; raise :class:`CredentialError` naming the file if it cannot be."""
        self._token = read_token(self.path)
        self._read_at = self.clock()
        return self

    async def current(self) -> Credential:
        if self._read_at is None or self.clock() - self._read_at >= self.period:
            try:
                self._token = read_token(self.path)
            except CredentialError:
                if not self._token:
                    raise
            self._read_at = self.clock()
        return bearer(self._token)

    def invalidate(self) -> None:
        self._read_at = None


def read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as err:
        raise CredentialError(f"cannot read token file {path}: {err}") from err
    if not token:
        raise CredentialError(f"token file {path} is empty")
    return token


def load_certificate(context: ssl.SSLContext, certificate: ClientCertificate) -> None:
    """Load an in-memory PEM pair into ``context``. OpenSSL only loads a chain from files, so
    the pair goes through anonymous memory files (``memfd``, Linux: nothing on any disk) or,
    elsewhere, files in a fresh private temporary directory (0700, files 0600), removed at
    once. Raises ``ssl.SSLError`` if the key does not match or the PEM is invalid."""
    if hasattr(os, "memfd_create"):
        fds = [os.memfd_create(name) for name in ("client-cert", "client-key")]
        try:
            for fd, data in zip(fds, (certificate.cert_pem, certificate.key_pem), strict=True):
                os.write(fd, data)
            context.load_cert_chain(f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}")
        finally:
            for fd in fds:
                os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="vworkspace-cert-") as private:  # pragma: no cover
        paths = [Path(private, name) for name in ("tls.crt", "tls.key")]
        for path, data in zip(paths, (certificate.cert_pem, certificate.key_pem), strict=True):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as sink:
                sink.write(data)
        context.load_cert_chain(str(paths[0]), str(paths[1]))
