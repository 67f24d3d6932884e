"""Which ApplicationInstances an ``S3Credentials`` change concerns (docs/api.md, "Native
SeaweedFS"): the ``seaweedfs`` instances in the credential's namespace whose release is the
credential's ``spec.seaweedRef.name`` (and whose release namespace is the credential's)."""

from __future__ import annotations

from collections.abc import Callable

from vworkspace.api.constants import SEAWEED_CATALOG_ID
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.kube.cache.informer import Informer
from vworkspace.kube.cache.store import INDEX_NAMESPACE


def credentials_mapper(instances: Informer) -> Callable[[JsonObj], list[ObjectKey]]:
    def mapper(cred: JsonObj) -> list[ObjectKey]:
        namespace = cred["metadata"].get("namespace") or ""
        release = ((cred.get("spec") or {}).get("seaweedRef") or {}).get("name")
        keys = []
        for ai in instances.store.by_index(INDEX_NAMESPACE, namespace):
            spec = ai.get("spec") or {}
            ref = spec.get("release") or {}
            if (
                (spec.get("appRef") or {}).get("catalogId") == SEAWEED_CATALOG_ID
                and ref.get("name") == release
                and ref.get("namespace") == namespace
            ):
                keys.append(ObjectKey(namespace, ai["metadata"]["name"]))
        return keys

    return mapper
