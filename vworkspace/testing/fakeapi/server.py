"""The :class:`FakeApi`: REST requests in, the object store's answers out (the semantics are
described in the package docstring)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from typing import Any

import attrs

from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.kube.clock import Clock, FakeClock
from vworkspace.kube.rest.api import APPLY_PATCH, JSON, MERGE_PATCH, RestVerbs
from vworkspace.kube.rest.errors import ApiError
from vworkspace.kube.rest.paths import ApiPath
from vworkspace.kube.rest.resources import ResourceType
from vworkspace.testing.fakeapi import routes
from vworkspace.testing.fakeapi.merge import merge_patch
from vworkspace.testing.fakeapi.routes import Route
from vworkspace.testing.fakeapi.selectors import SelectorError, selector
from vworkspace.testing.fakeapi.status import failure
from vworkspace.testing.fakeapi.store import WITHOUT_STATUS, ObjectStore
from vworkspace.testing.fakeapi.watch import Watch, line

Responder = Callable[[JsonObj | None], JsonObj]


@attrs.frozen
class Write:
    """One write request the fake received: ``resource`` is ``plural.group`` (as
    ``str(ResourceType)``), ``code`` the HTTP status it answered (2xx or the error's)."""

    method: str
    resource: str
    key: ObjectKey
    subresource: str
    body: Any
    code: int


@attrs.frozen
class _Injected:
    method: str
    prefix: str
    code: int
    message: str


def _plain(path: ApiPath) -> str:
    return "/" + "/".join(path.segments)


def _json_copy(body: Any) -> Any:
    """What the server would decode: a deep copy, and a TypeError for what is not JSON."""
    return json.loads(json.dumps(body)) if body is not None else None


class FakeApi(RestVerbs):
    """An in-memory API server behind the :class:`~vworkspace.kube.rest.api.KubeApi` protocol."""

    def __init__(
        self, *, clock: Clock | None = None, without_status: Collection[str] = WITHOUT_STATUS
    ) -> None:
        self.clock: Clock = clock if clock is not None else FakeClock()
        self._store = ObjectStore(clock=self.clock, without_status=without_status)
        self.writes: list[Write] = []
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request and watch
        self._injected: list[_Injected] = []
        self._responders: dict[tuple[str, str], Responder] = {}

    # ---- the KubeApi primitives ---------------------------------------------------------

    async def request(
        self,
        method: str,
        path: ApiPath,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = JSON,
        timeout_s: float | None = None,
    ) -> JsonObj:
        method, text, query = method.upper(), _plain(path), dict(query or {})
        self.requests.append((method, text))
        self._raise_injected(method, text)
        body = _json_copy(body)
        responder = self._responders.get((method, text))
        if responder is not None:
            return responder(body)
        route = routes.parse(path)
        if route is None:
            raise failure(method, text, 404, "the server could not find the requested resource")
        if method == "GET":
            return self._read(route, query, text)
        return self._write(method, route, query, body, content_type, text)

    @contextlib.asynccontextmanager
    async def stream_lines(
        self,
        path: ApiPath,
        *,
        query: Mapping[str, str],
        connect_timeout: float,
        total_timeout: float,
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """A watch from ``query["resourceVersion"]`` (from now, with the current objects as
        ADDED, when it is empty or "0"); it ends after ``timeoutSeconds`` (or ``total_timeout``)
        on the fake's clock, at :meth:`break_watches` or :meth:`close`."""
        text = _plain(path)
        self.requests.append(("WATCH", text))
        self._raise_injected("WATCH", text)
        route = routes.parse(path)
        if route is None or route.name:
            raise failure("GET", text, 404, "the server could not find the requested resource")
        watch = Watch(
            resource=route.resource,
            namespace=route.namespace,
            matches=self._selector(query, text),
            bookmarks=query.get("allowWatchBookmarks") == "true",
        )
        since = query.get("resourceVersion") or "0"
        if since == "0":
            for obj in self._store.items(route.resource, route.namespace):
                if watch.matches(obj):
                    watch.queue.put_nowait(line("ADDED", obj))
            self._store.watches.start(watch, self._store.revision)
        else:
            self._store.watches.start(watch, _revision(since, text))
        seconds = min(float(query.get("timeoutSeconds") or total_timeout), total_timeout)
        # The deadline is fixed now, not when the timer task first runs.
        timer = asyncio.create_task(self._end_at(watch, self.clock.monotonic() + seconds))
        try:
            yield _drain(watch)
        finally:
            timer.cancel()
            self._store.watches.stop(watch)

    async def _end_at(self, watch: Watch, deadline: float) -> None:
        await self.clock.sleep(deadline - self.clock.monotonic())
        self._store.watches.stop(watch)
        watch.end()

    # ---- test controls ------------------------------------------------------------------

    def fail_next(
        self, method: str, path_prefix: str | ApiPath, status: int, message: str = ""
    ) -> None:
        """The next request of ``method`` (``WATCH`` for opening a watch) whose path starts with
        ``path_prefix`` fails with ``status`` (once), before the fake looks at it."""
        prefix = _plain(path_prefix) if isinstance(path_prefix, ApiPath) else path_prefix
        self._injected.append(
            _Injected(method.upper(), prefix, status, message or f"injected {status}")
        )

    def respond(self, method: str, path: str, responder: Responder) -> None:
        """Answer ``method path`` (exactly) with ``responder(body)``: for the non-resource
        endpoints a test needs (a TokenReview, ``/version``)."""
        self._responders[(method.upper(), path)] = responder

    def compact(self) -> None:
        """Forget the change history: a watch from an older resourceVersion now gets 410."""
        self._store.watches.compact(self._store.revision)

    def bookmark(self) -> None:
        """Send a BOOKMARK at the current resourceVersion to every watch that allows them."""
        self._store.watches.bookmark(self._store.revision, self._store.kinds)

    def break_watches(self, error: BaseException | None = None) -> None:
        """Drop every open watch stream (a lost connection); ``error`` is raised to readers."""
        self._store.watches.break_all(error)

    def close(self) -> None:
        """End every open watch (the test is over)."""
        self._store.watches.break_all()

    @property
    def resource_version(self) -> int:
        """The current (global) revision."""
        return self._store.revision

    def stored(self, resource: ResourceType, key: ObjectKey) -> JsonObj | None:
        """The stored object (a copy), or None: for assertions, without recording a request."""
        return self._store.get(str(resource), key)

    def objects(self, resource: ResourceType, namespace: str | None = None) -> list[JsonObj]:
        return self._store.items(str(resource), namespace)

    def add(self, resource: ResourceType, obj: JsonObj) -> JsonObj:
        """Seed an object, status included (test setup; recorded in neither ``writes`` nor
        ``requests``). The object gets uid, resourceVersion and so on as on create."""
        obj = _json_copy(obj)
        namespace = obj.get("metadata", {}).get("namespace") if resource.namespaced else None
        route = _route_of(resource, ObjectKey(namespace, obj["metadata"]["name"]))
        obj.setdefault("kind", resource.kind)
        return self._store.create(route, obj, fail=self._fail("POST", route), keep_status=True)

    def set_status(self, resource: ResourceType, key: ObjectKey, status: JsonObj) -> JsonObj:
        """Write ``status`` as another controller would (not recorded in ``writes``)."""
        route = attrs.evolve(_route_of(resource, key), subresource="status")
        live = self._live(route, "PUT")
        return self._store.update(
            route, live, {"status": _json_copy(status)}, fail=self._fail("PUT", route)
        )

    def writes_to(self, resource: ResourceType, *, subresource: str = "") -> list[Write]:
        """The successful writes to ``resource`` (and ``subresource``)."""
        return [
            w
            for w in self.writes
            if w.resource == str(resource) and w.subresource == subresource and w.code < 300
        ]

    # ---- reads ----------------------------------------------------------------------------

    def _read(self, route: Route, query: dict[str, str], text: str) -> JsonObj:
        if query.get("watch") in ("true", "1"):
            raise failure("GET", text, 400, "the fake serves watches through stream_lines only")
        if route.name:
            return self._live(route, "GET")
        matches = self._selector(query, text)
        items = [o for o in self._store.items(route.resource, route.namespace) if matches(o)]
        start = int(query["continue"]) if query.get("continue") else 0
        limit = int(query.get("limit") or 0)
        page = items[start : start + limit] if limit else items[start:]
        meta: JsonObj = {"resourceVersion": str(self._store.revision)}
        if limit and start + limit < len(items):
            meta["continue"] = str(start + limit)
        api_version, kind = self._store.kinds.get(route.resource, (route.api_version, ""))
        return {
            "apiVersion": api_version,
            "kind": f"{kind}List" if kind else "List",
            "metadata": meta,
            "items": page,
        }

    def _selector(self, query: Mapping[str, str], text: str) -> Any:
        try:
            return selector(dict(query))
        except SelectorError as err:
            raise failure("GET", text, 400, f"unable to parse requirement: {err}") from None

    def _live(self, route: Route, method: str) -> JsonObj:
        live = self._store.get(route.resource, route.key)
        if live is None:
            raise self._fail(method, route)(404, f'{route.resource} "{route.name}" not found')
        return live

    # ---- writes ---------------------------------------------------------------------------

    def _write(
        self,
        method: str,
        route: Route,
        query: dict[str, str],
        body: Any,
        content_type: str,
        text: str,
    ) -> JsonObj:
        name = route.name or ((body or {}).get("metadata") or {}).get("name", "")
        record = dict(
            method=method,
            resource=route.resource,
            key=ObjectKey(route.namespace, name),
            subresource=route.subresource,
            body=copy.deepcopy(body),
        )
        try:
            answer = self._dispatch(method, route, query, body, content_type)
        except ApiError as err:
            self.writes.append(Write(**record, code=err.status))
            raise
        self.writes.append(Write(**record, code=201 if method == "POST" else 200))
        return answer

    def _dispatch(
        self, method: str, route: Route, query: dict[str, str], body: Any, content_type: str
    ) -> JsonObj:
        fail = self._fail(method, route)
        if method == "POST" and not route.name:
            return self._create(route, body)
        if not route.name:
            raise fail(405, f"{method} is not supported on a collection")
        if method == "DELETE":
            return self._store.delete(route, self._live(route, method))
        if not isinstance(body, dict):
            raise fail(400, "the request body must be a JSON object")
        if method == "PUT":
            return self._replace(route, body)
        if method == "PATCH" and content_type == MERGE_PATCH:
            live = self._live(route, method)
            self._check_precondition(route, live, body)
            return self._store.update(route, live, merge_patch(live, body), fail=fail)
        if method == "PATCH" and content_type == APPLY_PATCH:
            return self._apply(route, query, body)
        if method == "PATCH":
            raise fail(415, f"the fake does not support the patch type {content_type}")
        raise fail(405, f"{method} is not supported")

    def _create(self, route: Route, body: Any) -> JsonObj:
        fail = self._fail("POST", route)
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
        fail = self._fail("PUT", route)
        if (body.get("metadata") or {}).get("name") != route.name:
            raise fail(400, "the name of the object does not match the name on the URL")
        live = self._live(route, "PUT")
        self._check_precondition(route, live, body)
        return self._store.update(route, live, body, fail=fail)

    def _check_precondition(self, route: Route, live: JsonObj, body: JsonObj) -> None:
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted and wanted != live["metadata"]["resourceVersion"]:
            raise self._fail("PUT", route)(
                409,
                f'Operation cannot be fulfilled on {route.resource} "{route.name}": the object '
                "has been modified; please apply your changes to the latest version and try again",
            )

    def _apply(self, route: Route, query: dict[str, str], body: JsonObj) -> JsonObj:
        fail = self._fail("PATCH", route)
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

    def _fail(self, method: str, route: Route) -> Callable[..., ApiError]:
        text = _plain(_path_of(route))

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

    def _raise_injected(self, method: str, text: str) -> None:
        for injected in self._injected:
            if injected.method == method and text.startswith(injected.prefix):
                self._injected.remove(injected)
                raise failure(method, text, injected.code, injected.message)


def _revision(text: str, path: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise failure("GET", path, 400, f"invalid resourceVersion {text!r}") from None


async def _drain(watch: Watch) -> AsyncIterator[bytes]:
    while True:
        item = await watch.queue.get()
        if item is None:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def _route_of(resource: ResourceType, key: ObjectKey) -> Route:
    return Route(
        resource.group,
        resource.version,
        resource.plural,
        key.namespace if resource.namespaced else None,
        key.name,
    )


def _path_of(route: Route) -> ApiPath:
    segments = ["apis", route.group, route.version] if route.group else ["api", route.version]
    if route.namespace:
        segments += ["namespaces", route.namespace]
    segments.append(route.plural)
    segments += [s for s in (route.name, route.subresource) if s]
    return ApiPath(tuple(segments))
