"""The writes of the fake (create, replace, merge patch, apply, delete) checked as the API
server checks them, then handed to the object store; and the paths of routes."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import attrs

from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.kube.rest.api import APPLY_PATCH, MERGE_PATCH
from vworkspace.kube.rest.errors import ApiError
from vworkspace.kube.rest.paths import ApiPath
from vworkspace.kube.rest.resources import ResourceType
from vworkspace.testing.fakeapi.merge import merge_patch
from vworkspace.testing.fakeapi.routes import Route
from vworkspace.testing.fakeapi.status import failure
from vworkspace.testing.fakeapi.store import ObjectStore


def plain(path: ApiPath) -> str:
    """The path as text, unencoded (what ``fail_next`` prefixes are compared with)."""
    return "/" + "/".join(path.segments)


class StoreVerbs:
    """One write request against the store: the checks, then the store's rule."""

    def __init__(self, store: ObjectStore) -> None:
        self._store = store

    def live(self, route: Route, method: str) -> JsonObj:
        """The stored object of ``route``; 404 if there is none."""
        live = self._store.get(route.resource, route.key)
        if live is None:
            raise self.fail_for(method, route)(404, f'{route.resource} "{route.name}" not found')
        return live

    def dispatch(
        self, method: str, route: Route, query: dict[str, str], body: Any, content_type: str
    ) -> JsonObj:
        fail = self.fail_for(method, route)
        if method == "POST" and not route.name:
            return self._create(route, body)
        if not route.name:
            raise fail(405, f"{method} is not supported on a collection")
        if method == "DELETE":
            return self._store.delete(route, self.live(route, method))
        if not isinstance(body, dict):
            raise fail(400, "the request body must be a JSON object")
        if method == "PUT":
            return self._replace(route, body)
        if method == "PATCH" and content_type == MERGE_PATCH:
            live = self.live(route, method)
            self._check_precondition(route, live, body)
            return self._store.update(route, live, merge_patch(live, body), fail=fail)
        if method == "PATCH" and content_type == APPLY_PATCH:
            return self._apply(route, query, body)
        if method == "PATCH":
            raise fail(415, f"the fake does not support the patch type {content_type}")
        raise fail(405, f"{method} is not supported")

    def _create(self, route: Route, body: Any) -> JsonObj:
        fail = self.fail_for("POST", route)
        if not isinstance(body, dict) or not isinstance(body.get("metadata"), dict):
            raise fail(400, "the request body must be an object with metadata")
        meta = body["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = f"{meta['generateName']}{self._store.revision + 1:05d}"
        if not meta.get("name"):
            raise fail(
                422,
                f"{route.resource} is invalid: metadata.name: Required value: name or "
                "generateName is required",
            )
        if route.namespace and meta.get("namespace") not in (None, "", route.namespace):
            raise fail(
                400,
                "the namespace of the provided object does not match the namespace sent "
                "on the request",
            )
        return self._store.create(attrs.evolve(route, name=meta["name"]), body, fail=fail)

    def _replace(self, route: Route, body: JsonObj) -> JsonObj:
        fail = self.fail_for("PUT", route)
        if (body.get("metadata") or {}).get("name") != route.name:
            raise fail(400, "the name of the object does not match the name on the URL")
        live = self.live(route, "PUT")
        self._check_precondition(route, live, body)
        return self._store.update(route, live, body, fail=fail)

    def _check_precondition(self, route: Route, live: JsonObj, body: JsonObj) -> None:
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted and wanted != live["metadata"]["resourceVersion"]:
            raise self.fail_for("PUT", route)(
                409,
                f'Operation cannot be fulfilled on {route.resource} "{route.name}": the object '
                "has been modified; please apply your changes to the latest version and try again",
            )

    def _apply(self, route: Route, query: dict[str, str], body: JsonObj) -> JsonObj:
        fail = self.fail_for("PATCH", route)
        manager = query.get("fieldManager", "")
        if not manager:
            raise fail(422, "PatchOptions is invalid: fieldManager: Required value")
        if (body.get("metadata") or {}).get("name") != route.name:
            raise fail(400, "the name of the object does not match the name on the URL")
        status_only = route.subresource == "status"
        if status_only:
            applied = {"status": body.get("status") or {}}
        elif self._store.has_status(route.resource):
            applied = {k: v for k, v in body.items() if k != "status"}
        else:
            applied = body
        live = self._store.get(route.resource, route.key)
        if live is None:
            if route.subresource:
                raise fail(404, f'{route.resource} "{route.name}" not found')
            created = self._store.create(route, copy.deepcopy(applied), fail=fail)
            _, owners = self._store.owners(route.resource, route.key).applied({}, applied, manager)
            self._store.set_owners(route.resource, route.key, owners)
            return created
        self._check_precondition(route, live, body)
        owners = self._store.owners(route.resource, route.key)
        conflicts = owners.conflicts(live, applied, manager)
        if conflicts and query.get("force") != "true":
            raise fail(
                409,
                f"Apply failed with {len(conflicts)} conflict(s)",
                causes=[
                    {
                        "reason": "FieldManagerConflict",
                        "message": f'conflict with "{other}"',
                        "field": "." + ".".join(path),
                    }
                    for other, path in conflicts
                ],
            )
        merged, after = owners.applied(live, applied, manager)
        stored = self._store.update(route, live, merged, fail=fail)
        self._store.set_owners(route.resource, route.key, after)
        return stored

    def fail_for(self, method: str, route: Route) -> Callable[..., ApiError]:
        text = plain(path_of(route))

        def fail(code: int, message: str, **details: Any) -> ApiError:
            return failure(
                method,
                text,
                code,
                message,
                name=route.name,
                group=route.group,
                kind=route.plural,
                **details,
            )

        return fail


def route_of(resource: ResourceType, key: ObjectKey) -> Route:
    return Route(
        resource.group,
        resource.version,
        resource.plural,
        key.namespace if resource.namespaced else None,
        key.name,
    )


def path_of(route: Route) -> ApiPath:
    segments = ["apis", route.group, route.version] if route.group else ["api", route.version]
    if route.namespace:
        segments += ["namespaces", route.namespace]
    segments.append(route.plural)
    segments += [s for s in (route.name, route.subresource) if s]
    return ApiPath(tuple(segments))
