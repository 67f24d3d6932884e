"""Server-side apply that is skipped when the cached object already is what we would apply.

A server-side apply of an unchanged object still costs a full write on the API server (admission,
managed-fields merge, an etcd round trip when nothing changed is avoided but the rest is not),
and the reconciler applies its children on every reconcile. With thousands of instances that
was most of the API server's load on a restart (docs/development.md, "Performance"). So:

* the applied object carries the digest of what we applied, in the annotation
  ``apps.vworkspace.io/applied-digest`` (sha256 of the canonical JSON of the desired object);
* the apply is skipped when the cached live object carries the digest of what we would apply
  now **and** still holds every field we set with the value we set (``covers``).

The digest catches what a subset test cannot see: a field we set before and no longer set (the
apply removes it). The ``covers`` test catches drift: another writer changing or removing one of
our fields brings its watch event, a reconcile, and a fresh apply. Fields others add are theirs,
as with SSA itself. Trade-off: one annotation on each applied object.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from vworkspace.api.jsontypes import JsonObj
from vworkspace.kube.rest.api import KubeApi
from vworkspace.kube.rest.resources import ResourceType

DIGEST_ANNOTATION = "apps.vworkspace.io/applied-digest"


def digest(desired: JsonObj) -> str:
    canonical = json.dumps(desired, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def covers(live: Any, desired: Any) -> bool:
    """Does ``live`` hold every field of ``desired`` with the same value? Maps may hold more
    keys (server defaults, other managers); lists must match item by item."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(
            key in live and covers(live[key], value) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(live) == len(desired)
            and all(covers(a, b) for a, b in zip(live, desired, strict=True))
        )
    return bool(live == desired)


def with_digest(desired: JsonObj) -> JsonObj:
    """``desired`` with the digest annotation of its content (the annotation itself excluded)."""
    meta = dict(desired.get("metadata") or {})
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items()}
    annotations.pop(DIGEST_ANNOTATION, None)
    meta["annotations"] = annotations
    plain = {**desired, "metadata": meta}
    annotations = {**annotations, DIGEST_ANNOTATION: digest(plain)}
    return {**desired, "metadata": {**meta, "annotations": annotations}}


def up_to_date(live: JsonObj | None, desired: JsonObj) -> bool:
    """Is ``live`` (from a cache) already the result of applying ``desired`` (from
    :func:`with_digest`)?"""
    if live is None:
        return False
    wanted = desired["metadata"]["annotations"][DIGEST_ANNOTATION]
    have = ((live.get("metadata") or {}).get("annotations") or {}).get(DIGEST_ANNOTATION)
    return have == wanted and covers(live, desired)


async def apply_if_changed(
    client: KubeApi,
    resource: ResourceType,
    desired: JsonObj,
    *,
    live: JsonObj | None,
    field_manager: str,
) -> JsonObj | None:
    """Server-side apply ``desired`` unless ``live`` already is it; the stored object when a
    write was made, else None."""
    stamped = with_digest(desired)
    if up_to_date(live, stamped):
        return None
    return await client.apply(resource, stamped, field_manager=field_manager)
