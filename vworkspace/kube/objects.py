"""Writing our own objects safely: status through the status subresource, finalizers without
clobbering anyone else's.

Both use optimistic concurrency: the write carries the ``resourceVersion`` it was computed from,
and a 409 means "someone wrote in between": re-read and compute again (up to ``attempts`` times).
A status equal to the one stored is not written at all, so a steady-state reconcile makes no
API writes (no watch-event feedback loop).
"""

from __future__ import annotations

from collections.abc import Callable

from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.kube.rest.api import KubeApi
from vworkspace.kube.rest.errors import ConflictError
from vworkspace.kube.rest.resources import ResourceType


async def update_status(
    client: KubeApi,
    resource: ResourceType,
    key: ObjectKey,
    compute: Callable[[JsonObj], JsonObj | None],
    *,
    field_manager: str,
    current: JsonObj | None = None,
    attempts: int = 5,
) -> JsonObj | None:
    """Write ``compute(object)`` as the object's status; None from ``compute`` means no write.

    ``current`` (e.g. from the informer cache) saves the first GET; on a conflict the object is
    read fresh and ``compute`` runs again on it, so what is written is decided from what is
    stored, never re-sent from a stale read (a ``compute`` that ignores its argument would make
    the last writer win: controllers/status.py renders its decision onto the fresh object).
    Returns the stored object, or None when nothing was written.
    """
    obj = current if current is not None else await client.get(resource, key)
    for attempt in range(attempts):
        status = compute(obj)
        if status is None or status == obj.get("status"):
            return None
        try:
            return await client.replace(
                resource,
                {**obj, "status": status},
                field_manager=field_manager,
                subresource="status",
            )
        except ConflictError:
            if attempt == attempts - 1:
                raise
            obj = await client.get(resource, key)
    return None


async def ensure_finalizer(
    client: KubeApi,
    resource: ResourceType,
    obj: JsonObj,
    finalizer: str,
    *,
    present: bool,
    field_manager: str,
    attempts: int = 5,
) -> JsonObj:
    """Add (``present=True``) or remove ``finalizer``, keeping every other finalizer.

    The merge patch carries the full finalizer list *and* the resourceVersion it was computed
    from, so a concurrent change by another controller makes it fail (409) instead of erasing that
    controller's finalizer; we then re-read and retry.
    """
    key = ObjectKey(obj["metadata"].get("namespace"), obj["metadata"]["name"])
    for attempt in range(attempts):
        finalizers = list(obj["metadata"].get("finalizers") or [])
        if (finalizer in finalizers) == present:
            return obj
        updated = [*finalizers, finalizer] if present else [f for f in finalizers if f != finalizer]
        patch = {
            "metadata": {
                "finalizers": updated,
                "resourceVersion": obj["metadata"]["resourceVersion"],
            }
        }
        try:
            return await client.merge_patch(resource, key, patch, field_manager=field_manager)
        except ConflictError:
            if attempt == attempts - 1:
                raise
            obj = await client.get(resource, key)
    return obj
