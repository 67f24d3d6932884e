"""S3 credentials of a native SeaweedFS instance and the supplemental events that report them.

Discovery (docs/api.md, "Managed storage"): the ``S3Credentials`` in the release namespace whose
``spec.seaweedRef.name`` is the release, by name. ``status.phase`` Ready = candidate, Failed =
terminal, anything else = pending. The first candidate whose access key (``status.accessKey``,
else ``data[secretRef.accessKeyField or "accessKey"]``) and secret key
(``data[secretRef.secretKeyField or "secretKey"]``) of its Secret (``status.secretName``, else
``spec.secretRef.name``) are both non-empty wins. No usable candidate: *pending* when any CR is
pending or a Ready CR's Secret is missing, else *failed*.

Keys and events are Go's wire (docs/pull-mode.md, "Supplemental events"), except that a failure
report is keyed per failure episode so that a later failure is reported again (Go defect 8).
Secret values live only in the returned :class:`Credentials` (``repr=False``) and in the
managed-storage event; nothing here logs.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import enum
import hashlib
from collections.abc import Callable

import attrs

from vworkspace.api.applicationinstance import ApplicationInstanceView
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.api.names import subdomain_problem
from vworkspace.api.view import ObjectView
from vworkspace.kube.rest.api import KubeApi
from vworkspace.kube.rest.errors import NotFoundError
from vworkspace.kube.rest.resources import SECRETS

READY_MESSAGE = "Inline S3 credentials available for control-plane registry sync"
FAILED_MESSAGE = "Matching S3Credentials CRs are unavailable for managed storage reporting"


class Outcome(enum.StrEnum):
    ABSENT = "absent"
    PENDING = "pending"
    FAILED = "failed"
    READY = "ready"


@attrs.frozen
class Credentials:
    outcome: Outcome
    access_key: str = attrs.field(default="", repr=False)
    secret_key: str = attrs.field(default="", repr=False)
    bucket: str = ""
    episode: str = ""  # failed: identifies this failure (the failed CRs' versions)


def short_hash(*parts: str) -> str:
    """Lowercase hex of the first 8 bytes of SHA-256 over ``parts`` joined by NUL (for two
    parts Go's ``a + NUL + b``)."""
    return hashlib.sha256("\x00".join(parts).encode()).digest()[:8].hex()


def report_key(creds: Credentials) -> str:
    return short_hash(creds.access_key, creds.secret_key)


def endpoints_key(endpoints: list[JsonObj]) -> str:
    data = "".join(f"{e['name']}\x00{e['url']}\x00" for e in endpoints)
    return hashlib.sha256(data.encode()).digest()[:8].hex()


def _decode(secret: JsonObj, field: str) -> str:
    raw = (secret.get("data") or {}).get(field) or ""
    try:
        return base64.b64decode(raw).decode()
    except (binascii.Error, UnicodeDecodeError):
        return ""


async def resolve(
    client: KubeApi,
    candidates: Callable[[str], list[JsonObj]],
    *,
    namespace: str,
    release: str,
) -> Credentials:
    """The credentials of ``release``; ``candidates(namespace)`` lists the cached S3Credentials.
    Raises ``ApiError`` when a Secret cannot be read (other than NotFound)."""
    matching = sorted(
        (
            c
            for c in candidates(namespace)
            if ((c.get("spec") or {}).get("seaweedRef") or {}).get("name") == release
        ),
        key=lambda c: ObjectView(c).name,
    )
    if not matching:
        return Credentials(Outcome.ABSENT)
    pending = False
    for cred in matching:
        phase = (cred.get("status") or {}).get("phase") or ""
        if phase == "Failed":
            continue
        if phase != "Ready":
            pending = True
            continue
        spec_ref = (cred.get("spec") or {}).get("secretRef") or {}
        status = cred.get("status") or {}
        secret_name = status.get("secretName") or spec_ref.get("name") or ""
        if subdomain_problem(str(secret_name)) is not None:
            continue  # cannot name a Secret (nor go into a path: issue 24, F1); as if Failed
        try:
            secret = await client.get(SECRETS, ObjectKey(namespace, secret_name))
        except NotFoundError:
            pending = True
            continue
        access = status.get("accessKey") or _decode(
            secret, spec_ref.get("accessKeyField") or "accessKey"
        )
        secret_key = _decode(secret, spec_ref.get("secretKeyField") or "secretKey")
        if access and secret_key:
            return Credentials(Outcome.READY, access, secret_key, bucket=release)
    if pending:
        return Credentials(Outcome.PENDING)
    versions = [f"{v.name}@{v.resource_version}" for v in map(ObjectView, matching)]
    return Credentials(Outcome.FAILED, episode=short_hash(*versions))


def _ref(ai: ApplicationInstanceView) -> JsonObj:
    meta = ai.metadata
    return {
        "apiVersion": ai.raw.get("apiVersion"),
        "kind": ai.raw.get("kind"),
        "namespace": meta.get("namespace"),
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "generation": int(meta.get("generation") or 0),
    }


def _ready_condition(ai: ApplicationInstanceView) -> JsonObj:
    cond = ai.condition("Ready")
    return dict(cond) if cond is not None else {"type": "Ready", "status": "True"}


def managed_storage_event(
    ai: ApplicationInstanceView,
    endpoints: list[JsonObj],
    creds: Credentials,
    *,
    now: datetime.datetime,
) -> JsonObj:
    """The ``ManagedStorageReady`` report; holds the secret key (never log it)."""
    cond = {
        **_ready_condition(ai),
        "reason": "ManagedStorageReady",
        "message": READY_MESSAGE,
        "lastTransitionTime": condition_time(now),
    }
    return {
        "eventKey": f"managedStorage/{ai.namespace}/{ai.name}/Ready/True/{report_key(creds)}",
        "kind": "ConditionTransition",
        "resourceRef": _ref(ai),
        "conditions": [cond],
        "endpoints": [{"name": e["name"], "url": e["url"]} for e in endpoints if e.get("url")],
        "managedStorage": {
            "accessKeyId": creds.access_key,
            "secretAccessKey": creds.secret_key,
            "bucketName": creds.bucket,
        },
        "timestamp": wire_time(now),
    }


def endpoints_event(
    ai: ApplicationInstanceView, endpoints: list[JsonObj], *, now: datetime.datetime
) -> JsonObj:
    return {
        "eventKey": f"endpoints/{ai.namespace}/{ai.name}/{endpoints_key(endpoints)}",
        "kind": "ConditionTransition",
        "resourceRef": _ref(ai),
        "conditions": [_ready_condition(ai)],
        "endpoints": [{"name": e["name"], "url": e["url"]} for e in endpoints if e.get("url")],
        "timestamp": wire_time(now),
    }


def failed_event(ai: ApplicationInstanceView, episode: str, *, now: datetime.datetime) -> JsonObj:
    return {
        "eventKey": f"ManagedStorageFailed/{ai.metadata.get('uid')}/Ready#{episode}",
        "kind": "ManagedStorageFailed",
        "resourceRef": _ref(ai),
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "ManagedStorageFailed",
                "message": FAILED_MESSAGE,
                "lastTransitionTime": None,
            }
        ],
        "timestamp": wire_time(now),
    }


def condition_time(now: datetime.datetime) -> str:
    return now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def wire_time(now: datetime.datetime) -> str:
    """The event timestamp, as the agent writes it (agent/wire.py)."""
    return now.astimezone(datetime.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
