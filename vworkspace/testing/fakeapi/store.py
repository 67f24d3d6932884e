"""The objects of the fake and the rules of storing them: resourceVersion, generation, uid,
creationTimestamp, the status subresource, finalizers and deletion.

Every method takes a :class:`~vworkspace.testing.fakeapi.routes.Route` and a candidate object
and either stores it (publishing the change to the watches) or raises the typed error the API
server would cause. Objects handed out are deep copies: a caller mutating an answer never
changes what the fake stores, as with a real server.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Collection

from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.kube.clock import Clock
from vworkspace.kube.rest.errors import ApiError
from vworkspace.testing.fakeapi.merge import Owners
from vworkspace.testing.fakeapi.routes import Route
from vworkspace.testing.fakeapi.watch import Change, Watches

# Written by the server, never taken from a client's object.
_SERVER_FIELDS = (
    "uid",
    "creationTimestamp",
    "generation",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "name",
    "namespace",
)

# Kinds without a status subresource (a write to the main resource may change their status).
WITHOUT_STATUS = frozenset(
    {
        "configmaps",
        "secrets",
        "serviceaccounts",
        "podtemplates",
        "endpoints",
        "events",
        "events.events.k8s.io",
        "leases.coordination.k8s.io",
        "roles.rbac.authorization.k8s.io",
        "rolebindings.rbac.authorization.k8s.io",
        "clusterroles.rbac.authorization.k8s.io",
        "clusterrolebindings.rbac.authorization.k8s.io",
    }
)

Fail = Callable[..., ApiError]  # (code, message, **details) -> the error to raise


def _timestamp(clock: Clock) -> str:
    return clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")


def _content(obj: JsonObj) -> JsonObj:
    """What ``metadata.generation`` follows: everything but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _same(a: JsonObj, b: JsonObj) -> bool:
    """Equal but for the resourceVersion (a no-op write is not stored, as the API server does)."""

    def strip(obj: JsonObj) -> JsonObj:
        return {**obj, "metadata": {**obj["metadata"], "resourceVersion": None}}

    return strip(a) == strip(b)


class ObjectStore:
    """Objects by resource (``plural.group``) and key, with the one revision counter."""

    def __init__(self, *, clock: Clock, without_status: Collection[str] = WITHOUT_STATUS) -> None:
        self.clock = clock
        self.revision = 0
        self.watches = Watches()
        self.kinds: dict[str, tuple[str, str]] = {}  # resource -> (apiVersion, kind)
        self._without_status = frozenset(without_status)
        self._objects: dict[str, dict[ObjectKey, JsonObj]] = {}
        self._owners: dict[tuple[str, ObjectKey], Owners] = {}
        self._uids = itertools.count(1)

    def has_status(self, resource: str) -> bool:
        return resource not in self._without_status

    def get(self, resource: str, key: ObjectKey) -> JsonObj | None:
        obj = self._objects.get(resource, {}).get(key)
        return copy.deepcopy(obj) if obj is not None else None

    def items(self, resource: str, namespace: str | None) -> list[JsonObj]:
        """The objects of ``resource`` (in ``namespace``, or all), by namespace and name."""
        stored = self._objects.get(resource, {})
        keys = sorted(stored, key=lambda k: (k.namespace or "", k.name))
        return [
            copy.deepcopy(stored[k]) for k in keys if namespace is None or k.namespace == namespace
        ]

    def owners(self, resource: str, key: ObjectKey) -> Owners:
        """Who owns which fields of the object (server-side apply); empty for a new one."""
        return self._owners.get((resource, key)) or Owners()

    def set_owners(self, resource: str, key: ObjectKey, owners: Owners) -> None:
        if key in self._objects.get(resource, {}):
            self._owners[(resource, key)] = owners

    def create(
        self, route: Route, obj: JsonObj, *, fail: Fail, keep_status: bool = False
    ) -> JsonObj:
        """Store a new object (``obj`` is the fake's own copy); 409 AlreadyExists if taken."""
        meta = obj["metadata"]
        key = ObjectKey(route.namespace, meta["name"])
        if key in self._objects.get(route.resource, {}):
            raise fail(409, f'{route.resource} "{key.name}" already exists', reason="AlreadyExists")
        for field in ("deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion"):
            meta.pop(field, None)
        if route.namespace:
            meta["namespace"] = route.namespace
        else:
            meta.pop("namespace", None)
        if self.has_status(route.resource) and not keep_status:
            obj.pop("status", None)
        obj["apiVersion"] = route.api_version
        kind = obj.get("kind") or self.kinds.get(route.resource, ("", ""))[1]
        if kind:  # a body without kind, of a kind not seen before: left without
            obj["kind"] = kind
            self.kinds[route.resource] = (route.api_version, kind)
        meta["uid"] = f"00000000-0000-4000-8000-{next(self._uids):012d}"
        meta["creationTimestamp"] = _timestamp(self.clock)
        meta["generation"] = 1
        return self._store(route.resource, key, obj, previous=None)

    def update(self, route: Route, live: JsonObj, candidate: JsonObj, *, fail: Fail) -> JsonObj:
        """Store ``candidate`` (a whole object) over ``live`` through the route's (sub)resource:
        ``/status`` takes only the status, the main resource everything but the status (for
        kinds with a status subresource); server fields always stay the server's."""
        if route.subresource == "status":
            new = copy.deepcopy(live)
            if "status" in candidate:
                new["status"] = copy.deepcopy(candidate["status"])
            else:
                new.pop("status", None)
        elif route.subresource:
            raise fail(
                404, f"the server could not find the requested resource ({route.subresource})"
            )
        else:
            new = copy.deepcopy(candidate)
            for field in ("apiVersion", "kind"):
                if field in live:
                    new[field] = live[field]
            meta = new.setdefault("metadata", {})
            for field in _SERVER_FIELDS:
                if field in live["metadata"]:
                    meta[field] = live["metadata"][field]
                else:
                    meta.pop(field, None)
            if self.has_status(route.resource):
                if "status" in live:
                    new["status"] = copy.deepcopy(live["status"])
                else:
                    new.pop("status", None)
        return self._commit(route, live, new, fail=fail)

    def _commit(self, route: Route, live: JsonObj, new: JsonObj, *, fail: Fail) -> JsonObj:
        meta, live_meta = new["metadata"], live["metadata"]
        new_finalizers = set(meta.get("finalizers") or []) - set(live_meta.get("finalizers") or [])
        if live_meta.get("deletionTimestamp") and new_finalizers:
            raise fail(
                422,
                f'{route.resource} "{route.name}" is invalid: metadata.finalizers: Forbidden: '
                "no new finalizers can be added if the object is being deleted",
            )
        meta["resourceVersion"] = live_meta["resourceVersion"]
        if _same(live, new):
            return copy.deepcopy(live)
        if _content(new) != _content(live):
            meta["generation"] = int(live_meta.get("generation") or 0) + 1
        key = ObjectKey(route.namespace, route.name)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return self._remove(route.resource, key, new)
        return self._store(route.resource, key, new, previous=live)

    def delete(self, route: Route, live: JsonObj) -> JsonObj:
        """Mark ``live`` deleted (finalizers pending) or remove it; the object either way."""
        meta = live["metadata"]
        if not meta.get("finalizers"):
            return self._remove(route.resource, route.key, live)
        if meta.get("deletionTimestamp"):
            return copy.deepcopy(live)
        new = copy.deepcopy(live)
        new["metadata"]["deletionTimestamp"] = _timestamp(self.clock)
        new["metadata"]["deletionGracePeriodSeconds"] = 0
        return self._store(route.resource, route.key, new, previous=live)

    def _store(
        self, resource: str, key: ObjectKey, obj: JsonObj, *, previous: JsonObj | None
    ) -> JsonObj:
        self.revision += 1
        obj["metadata"]["resourceVersion"] = str(self.revision)
        self._objects.setdefault(resource, {})[key] = obj
        change = "MODIFIED" if previous is not None else "ADDED"
        self.watches.publish(Change(self.revision, change, resource, copy.deepcopy(obj), previous))
        return copy.deepcopy(obj)

    def put_verbatim(self, resource: str, obj: JsonObj) -> JsonObj:
        """Store a copy of ``obj`` as it is (uid, generation, status, deletionTimestamp kept), under
        a new resourceVersion, published to the watches: a recorded world replayed
        (vworkspace/testing/replay.py), where ``create`` would give a new uid and generation 1."""
        meta = obj["metadata"]
        key = ObjectKey(meta.get("namespace") or None, meta["name"])
        if obj.get("apiVersion") and obj.get("kind"):
            self.kinds.setdefault(resource, (obj["apiVersion"], obj["kind"]))
        previous = self._objects.get(resource, {}).get(key)
        return self._store(resource, key, copy.deepcopy(obj), previous=previous)

    def forget(self, resource: str, key: ObjectKey) -> None:
        """Drop an object without a watch event (a recorded deletion the caches are told of)."""
        self._objects.get(resource, {}).pop(key, None)
        self._owners.pop((resource, key), None)

    def _remove(self, resource: str, key: ObjectKey, obj: JsonObj) -> JsonObj:
        self.revision += 1
        gone = copy.deepcopy(obj)
        gone["metadata"]["resourceVersion"] = str(self.revision)
        previous = self._objects.get(resource, {}).pop(key, None)
        self._owners.pop((resource, key), None)
        self.watches.publish(Change(self.revision, "DELETED", resource, gone, previous))
        return copy.deepcopy(gone)
