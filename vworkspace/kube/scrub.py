"""Objects without their secrets, for whatever leaves the process for people to read (traces).

:func:`scrub` returns a copy of a JSON object in which no secret value remains:

* a Secret's ``data`` and ``stringData`` values become a placeholder (the keys stay, so whoever
  reads it sees which exist; the ``data`` placeholder is valid base64);
* a string field whose name says token, password, secret, credential, private/access/API key or
  bearer becomes ``[scrubbed]``, unless the name marks a *reference* to a secret or a fact about
  one (``secretName``, ``secretNamespace``, ``registrationTokenSecretRef``, ``tokenType``,
  ``rotatedAt``, ``registrationTokenConsumed``);
* a JWT-shaped string becomes ``[scrubbed]`` wherever it is;
* ``managedFields`` go (bulky, and they name every field), and so does the
  ``kubectl.kubernetes.io/last-applied-configuration`` annotation (it copies a Secret's data).

The trade-off: names are a heuristic. A secret under an innocent name (``values.db.pw``) is not
recognized unless it is in a Secret; the placeholders are what a replay then sees, which is all a
reconcile may see of credentials anyway.
"""

from __future__ import annotations

import re
from typing import Any

from vworkspace.api.jsontypes import JsonObj

SCRUBBED = "[scrubbed]"
# base64 of "scrubbed": a Secret's data value stays valid base64 for whoever decodes it.
SCRUBBED_B64 = "c2NydWJiZWQ="

_SECRET_NAME = re.compile(
    r"token|password|passwd|secret|credential|private_?key|access_?key|api_?key|bearer", re.I
)
# A field *naming* a secret (secretName, secretNamespace, tokenSecretRef) or describing one
# (tokenType, rotatedAt) is kept; a ``privateKey`` or ``secretAccessKey`` is not.
_REFERENCE = re.compile(r"(name|namespace|ref|consumed|at|type)$", re.I)
_JWT = re.compile(r"^eyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]*$")
_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def _secret_field(name: str) -> bool:
    return bool(_SECRET_NAME.search(name)) and not _REFERENCE.search(name)


def scrub(value: Any, *, secret: bool = False) -> Any:
    """A copy of ``value`` (JSON) without secret values; ``secret``: it is a Secret (or a write
    to ``secrets``), whose ``data``/``stringData`` values are replaced whatever their keys."""
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, str):
        return SCRUBBED if _JWT.match(value) else value
    if not isinstance(value, dict):
        return value
    secret = secret or value.get("kind") == "Secret"
    out: JsonObj = {}
    for key, item in value.items():
        if key == "managedFields":
            continue
        if secret and key in ("data", "stringData") and isinstance(item, dict):
            out[key] = {k: SCRUBBED_B64 if key == "data" else SCRUBBED for k in item}
        elif key == "annotations" and isinstance(item, dict):
            out[key] = {k: scrub(v) for k, v in item.items() if k != _LAST_APPLIED}
        elif isinstance(item, str) and _secret_field(key):
            out[key] = SCRUBBED
        else:
            out[key] = scrub(item)
    return out
