"""The mock's job signer: what a control plane does to sign a job (docs/pull-mode.md, "Signed
jobs").

Written from the documented format, not imported from the agent: the mock shares nothing with
the operator but the protocol, so a signer/verifier disagreement shows up as a failing test
rather than being hidden by shared code.

Modes for the admin API (``"signing"`` in ``POST /api/admin/enqueue``), for tests and demos:

* ``sign`` (default with a key): sign the job as delivered, replacing any signature;
* ``none``: deliver it unsigned;
* ``tampered-payload``: sign, then change the payload as a hostile hop would;
* ``tampered-signature``: sign, then flip one bit of the signature;
* ``as-is``: deliver the ``signature`` the job carries, untouched (tests that sign themselves).

Without a key every mode but ``none`` delivers the job as given (as before signing existed).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
from pathlib import Path
from typing import Any

import attrs
import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from vworkspace.api.jsontypes import JsonObj

MODES = ("sign", "none", "tampered-payload", "tampered-signature", "as-is")
SIGNED_FIELDS = (
    "id",
    "kind",
    "idempotencyKey",
    "createdAt",
    "expiresAt",
    "payload",
    "encryptedPayload",
)
ZERO_TIME = "0001-01-01T00:00:00Z"
# A signed job without an expiry gets one: the agent refuses signed jobs that never expire.
DEFAULT_TTL = datetime.timedelta(hours=1)


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@attrs.frozen
class Signer:
    key: Ed25519PrivateKey = attrs.field(repr=False)
    key_id: str

    @classmethod
    def load(cls, path: Path, key_id: str = "") -> Signer:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path}: not an Ed25519 private key")
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return cls(key=key, key_id=key_id or "ed25519-" + hashlib.sha256(raw).hexdigest()[:16])

    def signature(self, job: JsonObj, cluster_id: str) -> str:
        envelope: JsonObj = {"v": 1, "clusterId": cluster_id}
        envelope.update({k: job[k] for k in SIGNED_FIELDS if job.get(k) is not None})
        return f"v1.{self.key_id}.{_b64url(self.key.sign(rfc8785.dumps(envelope)))}"

    def apply(self, job: JsonObj, *, cluster_id: str, mode: str) -> JsonObj:
        """``job`` (in its wire form) as the mode delivers it."""
        job = dict(job)
        if mode == "none":
            job.pop("signature", None)
            return job
        if mode == "as-is":
            return job
        now = _now()
        if job.get("createdAt") in (None, "", ZERO_TIME):
            job["createdAt"] = now
        if job.get("expiresAt") in (None, "", ZERO_TIME):
            expires = datetime.datetime.now(datetime.UTC) + DEFAULT_TTL
            job["expiresAt"] = expires.strftime("%Y-%m-%dT%H:%M:%SZ")
        job["signature"] = self.signature(job, cluster_id)
        if mode == "tampered-payload":
            job["payload"] = _tamper(job.get("payload"))
        elif mode == "tampered-signature":
            prefix, _, encoded = job["signature"].rpartition(".")
            raw = bytearray(base64.urlsafe_b64decode(encoded + "=="))
            raw[0] ^= 0x01
            job["signature"] = f"{prefix}.{_b64url(bytes(raw))}"
        return job


def _tamper(payload: Any) -> Any:
    """The payload with one value changed (a label added to an object, else wrapped)."""
    if isinstance(payload, dict):
        changed = dict(payload)
        meta = dict(changed.get("metadata") or {})
        meta["labels"] = {**(meta.get("labels") or {}), "tampered-by": "a-hostile-hop"}
        changed["metadata"] = meta
        return changed
    return {"tampered": payload}
