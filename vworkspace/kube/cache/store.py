"""The informer's in-memory cache: objects by key, with secondary indexes.

Indexes map a value to the keys of the objects that have it, so controllers can ask "which
HelmReleases does this ApplicationInstance own" without scanning. Objects are stored as decoded
JSON minus ``metadata.managedFields`` and kubectl's last-applied annotation (often the largest
part of an object, and never needed by a controller): that keeps the cache of 10,000 instances
small.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.kube.rest.resources import key_of

Indexer = Callable[[JsonObj], Iterable[str]]

INDEX_NAMESPACE = "namespace"
INDEX_OWNER = "owner"  # value: the owner's UID
INDEX_LABEL = "label"  # value: "key=value"


def namespace_index(obj: JsonObj) -> Iterable[str]:
    namespace = obj.get("metadata", {}).get("namespace")
    return [namespace] if namespace else []


def owner_index(obj: JsonObj) -> Iterable[str]:
    return [
        ref["uid"]
        for ref in obj.get("metadata", {}).get("ownerReferences", []) or []
        if "uid" in ref
    ]


def label_index(obj: JsonObj) -> Iterable[str]:
    return [f"{k}={v}" for k, v in (obj.get("metadata", {}).get("labels") or {}).items()]


DEFAULT_INDEXERS: dict[str, Indexer] = {
    INDEX_NAMESPACE: namespace_index,
    INDEX_OWNER: owner_index,
    INDEX_LABEL: label_index,
}


LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def slim(obj: JsonObj) -> JsonObj:
    """``obj`` without ``metadata.managedFields`` and kubectl's last-applied annotation (a full
    copy of the object as a string): neither is read by a controller, and together they are
    often most of an object's size."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return obj
    annotations = meta.get("annotations")
    bulky = isinstance(annotations, dict) and LAST_APPLIED in annotations
    if "managedFields" in meta or bulky:
        meta = {k: v for k, v in meta.items() if k != "managedFields"}
        if isinstance(annotations, dict) and bulky:
            meta["annotations"] = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
        obj = {**obj, "metadata": meta}
    return obj


SHARED_STRING = 64  # strings up to this length are interned: keys, kinds, reasons, namespaces


def compact(value: Any) -> Any:
    """``value`` with its map keys and short strings interned (``sys.intern``).

    Ten thousand decoded objects hold ten thousand copies of every key ("apiVersion",
    "lastTransitionTime", ...) and of every repeated value ("True", "Ready", the namespace):
    interning them shares one copy each, about halving the memory of a cached instance
    (72 to 33 MiB for 10,000 ApplicationInstances with status, measured with tracemalloc), for
    one walk of each object as it enters the cache."""
    if isinstance(value, dict):
        return {sys.intern(k) if isinstance(k, str) else k: compact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [compact(v) for v in value]
    if isinstance(value, str) and len(value) <= SHARED_STRING:
        return sys.intern(value)
    return value


class Store:
    def __init__(self, indexers: dict[str, Indexer] | None = None) -> None:
        self._indexers = dict(DEFAULT_INDEXERS if indexers is None else indexers)
        self._items: dict[ObjectKey, JsonObj] = {}
        self._indexes: dict[str, defaultdict[str, set[ObjectKey]]] = {
            name: defaultdict(set) for name in self._indexers
        }
        # Told of every object read, when a trace is on (run --trace-file; kube/trace.py).
        self.on_read: Callable[[JsonObj], None] | None = None

    def get(self, key: ObjectKey) -> JsonObj | None:
        obj = self._items.get(key)
        if self.on_read is not None and obj is not None:
            self.on_read(obj)
        return obj

    def all_keys(self) -> list[ObjectKey]:
        return list(self._items)

    def items(self) -> list[JsonObj]:
        return [*self._items.values()]

    def by_index(self, index: str, value: str) -> list[JsonObj]:
        found = [self._items[k] for k in self._indexes[index].get(value, ())]
        if self.on_read is not None:
            for obj in found:
                self.on_read(obj)
        return found

    def __len__(self) -> int:
        return len(self._items)

    def upsert(self, obj: JsonObj) -> JsonObj | None:
        """Store ``obj``; return the previous version, if any."""
        obj = compact(slim(obj))
        key = key_of(obj)
        previous = self._items.get(key)
        if previous is not None:
            self._unindex(key, previous)
        self._items[key] = obj
        for name, indexer in self._indexers.items():
            for value in indexer(obj):
                self._indexes[name][value].add(key)
        return previous

    def delete(self, key: ObjectKey) -> JsonObj | None:
        previous = self._items.pop(key, None)
        if previous is not None:
            self._unindex(key, previous)
        return previous

    def _unindex(self, key: ObjectKey, obj: JsonObj) -> None:
        for name, indexer in self._indexers.items():
            for value in indexer(obj):
                keys = self._indexes[name].get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del self._indexes[name][value]
