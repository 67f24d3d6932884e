"""Signed Pull jobs: the envelope, its canonical bytes, and Ed25519 sign/verify
(docs/pull-mode.md, "Signed jobs").

A signature covers an **envelope**, not the bare payload, so it cannot be moved to another
cluster, job id, kind or expiry: ``{"v": 1, "clusterId", "id", "kind", "idempotencyKey",
"createdAt", "expiresAt", "payload", "encryptedPayload"}``, each job field taken exactly as it
appears in the job object on the wire (absent or ``null`` fields omitted), ``clusterId`` being
the cluster the job is for (the verifier uses its own). An encrypted payload is signed as its
ciphertext (encrypt-then-sign): verification needs no decryption key. The bytes signed are the
RFC 8785 (JCS) canonical JSON of that envelope, produced by the ``rfc8785`` library; the
signature is Ed25519 (``cryptography``). No hand-rolled crypto or canonicalisation: the
trade-off is two dependencies for a format another language can reproduce byte for byte.

The wire form is ``v1.<keyId>.<base64url(signature) without padding>``. Key ids are
``[A-Za-z0-9_-]{1,64}`` (no dot, so the form splits unambiguously, and a valid ConfigMap key).

Every failure is a :class:`SignatureError` whose ``reason`` is a metric label and whose message
starts with ``signature:`` and names the cause; nothing here logs or raises anything else.

``cryptography`` is imported in the functions that use it: about 8 MiB of resident memory that
an idle operator, with no signed job or trusted key yet, does not need (docs/development.md,
"Performance").
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import rfc8785

from vworkspace.api.jsontypes import JsonObj

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

VERSION = 1
PREFIX = "v1"
# encryptedPayload: encrypt-then-sign (agent/sealed.py), so a signature verifies without the
# decryption key; absent in a clear job, so signatures made before it existed still verify.
ENVELOPE_FIELDS = (
    "id",
    "kind",
    "idempotencyKey",
    "createdAt",
    "expiresAt",
    "payload",
    "encryptedPayload",
)
KEY_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
SIGNATURE_BYTES = 64

# Rejection reasons (the ``reason`` label of vworkspace_agent_job_rejections_total).
UNSIGNED = "unsigned"
MALFORMED = "malformed"
UNKNOWN_KEY = "unknown_key"
BAD_SIGNATURE = "bad_signature"
NO_EXPIRY = "no_expiry"
EXPIRY_TOO_FAR = "expiry_too_far"
NO_IDEMPOTENCY_KEY = "no_idempotency_key"
# Replay protection (agent/replay.py): a job id answered before (its result is ``noop`` /
# ``replayed``), and a new signed job refused because the remembered ids are at their bound.
REPLAYED = "replayed"
REPLAY_CAPACITY = "replay_capacity"


class SignatureError(ValueError):
    """A job whose signature must not be trusted; ``reason`` is the metric label."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def envelope(job: Mapping[str, Any], *, cluster_id: str) -> JsonObj:
    """The object that is signed, from the job exactly as it is on the wire."""
    signed: JsonObj = {"v": VERSION, "clusterId": cluster_id}
    for name in ENVELOPE_FIELDS:
        if job.get(name) is not None:
            signed[name] = job[name]
    return signed


def canonical(value: Any) -> bytes:
    """RFC 8785 canonical JSON; SignatureError ``malformed`` for values JCS cannot represent
    (integers beyond +-2**53 - 1, NaN, non-string keys)."""
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError, RecursionError) as err:
        raise SignatureError(
            f"signature: the job cannot be canonicalised (RFC 8785): {err}", reason=MALFORMED
        ) from None


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(job: Mapping[str, Any], *, cluster_id: str, key: Ed25519PrivateKey, key_id: str) -> str:
    """The ``signature`` value for ``job`` (signer side: the control plane, the mock, tests)."""
    check_key_id(key_id)
    raw = key.sign(canonical(envelope(job, cluster_id=cluster_id)))
    return f"{PREFIX}.{key_id}.{_b64url(raw)}"


def parse(signature: Any) -> tuple[str, bytes]:
    """``v1.<keyId>.<sig>`` -> (key id, 64 signature bytes); SignatureError ``malformed``."""
    if not isinstance(signature, str):
        raise SignatureError(
            f"signature: must be a string, got {type(signature).__name__}", reason=MALFORMED
        )
    parts = signature.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise SignatureError(
            'signature: malformed, expected "v1.<keyId>.<base64url signature>"', reason=MALFORMED
        )
    _, key_id, encoded = parts
    if not KEY_ID_RE.fullmatch(key_id):
        raise SignatureError(f"signature: malformed key id {key_id[:64]!r}", reason=MALFORMED)
    try:
        raw = _unb64url(encoded)
    except (ValueError, binascii.Error):
        raise SignatureError("signature: malformed, not base64url", reason=MALFORMED) from None
    if len(raw) != SIGNATURE_BYTES or _b64url(raw) != encoded:
        # Exactly one encoding per signature: no padding, no trailing bits.
        raise SignatureError(
            f"signature: malformed, expected {SIGNATURE_BYTES} bytes in unpadded base64url",
            reason=MALFORMED,
        )
    return key_id, raw


def verify(job: Mapping[str, Any], *, cluster_id: str, keys: Mapping[str, Ed25519PublicKey]) -> str:
    """Check ``job["signature"]`` against the trusted ``keys``; the key id on success."""
    from cryptography.exceptions import InvalidSignature

    key_id, raw = parse(job.get("signature"))
    public = keys.get(key_id)
    if public is None:
        raise SignatureError(f'signature: unknown key id "{key_id}"', reason=UNKNOWN_KEY)
    try:
        public.verify(raw, canonical(envelope(job, cluster_id=cluster_id)))
    except InvalidSignature:
        raise SignatureError(
            f'signature: does not verify with key "{key_id}" (the job was changed after '
            "signing, or signed for another cluster)",
            reason=BAD_SIGNATURE,
        ) from None
    return key_id


def check_key_id(key_id: str) -> None:
    if not KEY_ID_RE.fullmatch(key_id):
        raise ValueError(f"key id {key_id!r} must match {KEY_ID_RE.pattern}")


def derived_key_id(public: Ed25519PublicKey) -> str:
    """The default key id: ``ed25519-`` and the first 8 bytes of SHA-256 of the raw public key
    in hex, stable for a key and distinct across keys."""
    from cryptography.hazmat.primitives import serialization

    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519-" + hashlib.sha256(raw).hexdigest()[:16]


def load_public_key(pem: str | bytes) -> Ed25519PublicKey:
    """A PEM (SubjectPublicKeyInfo) Ed25519 public key; ValueError naming the problem."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as err:
        raise ValueError(f"not a PEM public key: {err}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"not an Ed25519 public key ({type(key).__name__})")
    return key


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    """A PEM (PKCS#8, unencrypted) Ed25519 private key; ValueError naming the problem."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as err:
        raise ValueError(f"not an unencrypted PEM private key: {err}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"not an Ed25519 private key ({type(key).__name__})")
    return key


def public_pem(key: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def private_pem(key: Ed25519PrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
