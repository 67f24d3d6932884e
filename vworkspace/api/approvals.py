"""``vws1`` approval claims (docs/api.md, "Approval claims"): HMAC-SHA256, base64url JSON body.

``vws1.<body>.<digest>``: body is base64url without padding of a JSON object with keys ``v``
(1), ``rid``, ``op`` (the Operation name), ``by``, ``at``, ``exp`` (Unix seconds); digest is the
lowercase hex HMAC-SHA256 of the body string under the shared approval-claim secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any


class ClaimError(ValueError):
    pass


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(payload: dict[str, Any], secret: str) -> str:
    """Issue a claim (the control plane's side; used by tests and tooling)."""
    body = (
        base64.urlsafe_b64encode(
            json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        )
        .decode()
        .rstrip("=")
    )
    digest = hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()
    return f"vws1.{body}.{digest}"


def verify(claim: str, *, secret: str, operation: str, now: float | None = None) -> dict[str, Any]:
    """Return the claim's payload, or raise ClaimError saying why it is not valid."""
    if not secret:
        raise ClaimError("no approval-claim secret is configured on the operator")
    parts = claim.strip().split(".")
    if len(parts) != 3 or parts[0] != "vws1":
        raise ClaimError("approval claim is not of the form vws1.<body>.<digest>")
    _, body, digest = parts
    expected = hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, digest.lower()):
        raise ClaimError("approval claim signature does not verify")
    try:
        payload = json.loads(_b64decode(body))
    except (ValueError, UnicodeDecodeError):
        raise ClaimError("approval claim body is not base64url JSON") from None
    if not isinstance(payload, dict) or payload.get("v") != 1:
        raise ClaimError("approval claim version must be 1")
    if str(payload.get("op", "")).strip() != operation:
        raise ClaimError(
            f"approval claim is for operation {payload.get('op')!r}, not {operation!r}"
        )
    exp = payload.get("exp")
    if not isinstance(exp, int) or (now if now is not None else time.time()) > exp:
        raise ClaimError("approval claim has expired")
    return payload
