"""Pinning the control plane's public key (``--control-plane-pin-sha256``).

A pin is base64(SHA-256(DER SubjectPublicKeyInfo)) of any certificate in the verified chain, leaf
to root (the value ``openssl x509 -pubkey | openssl pkey -pubin -outform der | openssl dgst
-sha256 -binary | base64`` prints, and HPKP's ``pin-sha256``). Pinning a key rather than a
certificate survives a renewal that keeps the key; pinning the issuing CA's key survives any
renewal by that CA. Several pins are allowed so that a rotation can list the old and the new key.

How: :class:`PinningConnector` overrides aiohttp's ``TCPConnector._create_connection``, the one
place both a direct connection and a CONNECT tunnel through a proxy come out of, after the TLS
handshake and before aiohttp writes a byte of the request. A chain without a pinned key closes
the connection (fail closed: no request, no bearer token, is ever sent to that server), counts
``vworkspace_agent_tls_pin_failures_total`` and raises :class:`PinMismatchError`, a connection
error the client retries with backoff. Trade-off: ``_create_connection`` is aiohttp-internal
(stable since 3.0, checked in tests/unit/test_egress_pinning.py against the real connector); the
public alternative, aiohttp's ``Fingerprint``, pins only the leaf certificate's whole DER, so
every renewal would need a new flag value.

The verified chain comes from ``SSLObject.get_verified_chain()`` (public from Python 3.13; on
3.10-3.12 the same method of the private ``_sslobj``). Where neither exists the connection is
refused, never let through unchecked.
"""

from __future__ import annotations

import _ssl
import base64
import binascii
import hashlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

if TYPE_CHECKING:  # aiohttp's internal types, for the override's signature only
    from aiohttp.client_proto import ResponseHandler
    from aiohttp.client_reqrep import ClientRequest
    from aiohttp.tracing import Trace

PIN_FLAG = "--control-plane-pin-sha256"
_DIGEST_SIZE = 32


class PinMismatchError(aiohttp.ClientConnectionError):
    """The server's verified chain holds none of the pinned keys; nothing was sent."""


def parse_pin(text: str) -> bytes:
    """A pin as given on the command line (``sha256/`` prefix optional) -> the 32-byte digest.
    Raises ValueError saying what is wrong and how to compute the value."""
    value = text.strip().removeprefix("sha256/")
    try:
        digest = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != _DIGEST_SIZE:
        raise ValueError(
            f"{PIN_FLAG} {text!r}: not the base64 of a SHA-256 digest (32 bytes); compute it "
            "with `openssl x509 -in cert.pem -pubkey -noout | openssl pkey -pubin -outform der "
            "| openssl dgst -sha256 -binary | base64`"
        )
    return digest


def show_pin(digest: bytes) -> str:
    return "sha256/" + base64.b64encode(digest).decode()


def spki_digest(der_certificate: bytes) -> bytes:
    """SHA-256 of the certificate's DER SubjectPublicKeyInfo."""
    public_key = x509.load_der_x509_certificate(der_certificate).public_key()
    return hashlib.sha256(
        public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    ).digest()


def verified_chain(ssl_object: Any) -> list[bytes]:
    """The DER certificates of the verified chain, leaf first; [] when Python cannot say."""
    method = getattr(ssl_object, "get_verified_chain", None)  # Python >= 3.13
    if method is None:
        method = getattr(getattr(ssl_object, "_sslobj", None), "get_verified_chain", None)
    if method is None:
        return []
    chain: Iterable[Any] = method() or []
    # Before 3.13 the items are ``_ssl.Certificate`` objects, not DER bytes.
    return [
        item if isinstance(item, bytes) else item.public_bytes(_ssl.ENCODING_DER) for item in chain
    ]


def check_chain(chain: list[bytes], pins: frozenset[bytes], *, host: str) -> None:
    """Raise :class:`PinMismatchError` unless a key of ``chain`` is pinned; the message lists
    the keys offered, leaf to root, so the operator can compare them with the flag."""
    offered = [spki_digest(der) for der in chain]
    if pins.intersection(offered):
        return
    shown = ", ".join(show_pin(digest) for digest in offered) or "none (no verified chain)"
    raise PinMismatchError(
        f"{host}: the server's certificate chain has no pinned key (offered, leaf to root: "
        f"{shown}); nothing was sent. If the control plane's key was rotated, add the new "
        f"value with another {PIN_FLAG}"
    )


class PinningConnector(aiohttp.TCPConnector):
    """A TCPConnector that refuses TLS connections whose chain has no pinned key (see the
    module docstring). ``on_failure`` is called once per refused connection (the metric)."""

    def __init__(
        self,
        *,
        pins: frozenset[bytes],
        on_failure: Callable[[], None] = lambda: None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pins = pins
        self.on_failure = on_failure

    async def _create_connection(
        self,
        req: ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - aiohttp's own signature
    ) -> ResponseHandler:
        proto = await super()._create_connection(req, traces, timeout)
        if not self.pins or not req.is_ssl():
            return proto
        transport = proto.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        try:
            check_chain(verified_chain(ssl_object), self.pins, host=f"{req.host}:{req.port}")
        except PinMismatchError:
            proto.close()
            self.on_failure()
            raise
        return proto
