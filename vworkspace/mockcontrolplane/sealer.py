"""The mock's encryption of jobs to a cluster's age recipient (docs/pull-mode.md, "Encrypted
payloads"): what a control plane does before it signs.

Written from the documented format with ``pyrage`` directly, not imported from the agent (as
the signer): a disagreement between the two sides shows up as a failing test.

Modes (``"encrypt"`` in ``POST /api/admin/enqueue``, ``--encrypt-to`` for every job):

* ``payload``: the whole payload becomes ``encryptedPayload``, an armored age file of its JSON;
  ``payload`` is then ``null``;
* ``values``: every string leaf of the ApplicationInstance's ``spec.values.inline`` (an
  ``apply`` of an ApplicationInstance, or an ``ensure-application-instance`` intent) becomes an
  armored age file of its UTF-8 text; the rest of the job stays as it is;
* ``none``: as given.
"""

from __future__ import annotations

import json
from typing import Any

import pyrage
from pyrage import x25519

from vworkspace.api.jsontypes import JsonObj

MODES = ("payload", "values", "none")
# --encrypt-to: the recipient the cluster itself sent (register body or heartbeat).
REGISTERED = "registered"


def recipient_problem(recipient: str) -> str | None:
    """None when ``recipient`` is an age X25519 recipient (``age1...``)."""
    try:
        x25519.Recipient.from_str(recipient)
    except pyrage.RecipientError:
        return f"{recipient[:80]!r} is not an age X25519 recipient (age1...)"
    return None


def armor(plaintext: bytes, recipient: str) -> str:
    armored: bytes = pyrage.encrypt(plaintext, [x25519.Recipient.from_str(recipient)], armored=True)
    return armored.decode("ascii")


def seal(job: JsonObj, *, mode: str, recipient: str) -> JsonObj:
    """``job`` with its payload or values encrypted to ``recipient`` as ``mode`` says."""
    job = dict(job)
    if mode == "payload":
        job["encryptedPayload"] = armor(json.dumps(job.get("payload")).encode(), recipient)
        job["payload"] = None
    elif mode == "values":
        job["payload"] = _seal_values(job.get("payload"), recipient)
    return job


def _seal_values(payload: Any, recipient: str) -> Any:
    if not isinstance(payload, dict):
        return payload
    payload = json.loads(json.dumps(payload))  # a copy the caller's job does not share
    instance = payload
    if payload.get("intent") == "ensure-application-instance":
        instance = payload.get("applicationInstance")
    values = (
        ((instance or {}).get("spec") or {}).get("values") if isinstance(instance, dict) else None
    )
    if isinstance(values, dict) and isinstance(values.get("inline"), dict):
        values["inline"] = _seal_leaves(values["inline"], recipient)
    return payload


def _seal_leaves(node: Any, recipient: str) -> Any:
    if isinstance(node, dict):
        return {k: _seal_leaves(v, recipient) for k, v in node.items()}
    if isinstance(node, list):
        return [_seal_leaves(v, recipient) for v in node]
    if isinstance(node, str):
        return armor(node.encode("utf-8"), recipient)
    return node
