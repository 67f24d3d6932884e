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
from vworkspace.kube.rest.api import JSON, RestVerbs
from vworkspace.kube.rest.errors import ApiError
from vworkspace.kube.rest.paths import ApiPath
from vworkspace.kube.rest.resources import ResourceType
from vworkspace.testing.fakeapi import routes
from vworkspace.testing.fakeapi.routes import Route
from vworkspace.testing.fakeapi.selectors import SelectorError, selector
from vworkspace.testing.fakeapi.status import failure
from vworkspace.testing.fakeapi.store import WITHOUT_STATUS, ObjectStore
from vworkspace.testing.fakeapi.verbs import StoreVerbs, plain, route_of
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
        self._verbs = StoreVerbs(self._store)
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
        method, text, query = method.upper(), plain(path), dict(query or {})
        self.requests.append((method, text))
        if method == "GET":
            self._raise_injected(method, text)  # writes: recorded with the injected answer
        body = _json_copy(body)
        responder = self._responders.get((method, text))
        route = routes.parse(path)
        if method != "GET" and (responder is not None or route is None):
            self._raise_injected(method, text)
        if responder is not None:
            return responder(body)
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
        text = plain(path)
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
        prefix = plain(path_prefix) if isinstance(path_prefix, ApiPath) else path_prefix
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
        route = route_of(resource, ObjectKey(namespace, obj["metadata"]["name"]))
        obj.setdefault("kind", resource.kind)
        return self._store.create(
            route, obj, fail=self._verbs.fail_for("POST", route), keep_status=True
        )

    def set_status(self, resource: ResourceType, key: ObjectKey, status: JsonObj) -> JsonObj:
        """Write ``status`` as another controller would (not recorded in ``writes``)."""
        route = attrs.evolve(route_of(resource, key), subresource="status")
        live = self._live(route, "PUT")
        return self._store.update(
            route, live, {"status": _json_copy(status)}, fail=self._verbs.fail_for("PUT", route)
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
        return self._verbs.live(route, method)

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
            self._raise_injected(method, text)
            answer = self._verbs.dispatch(method, route, query, body, content_type)
        except ApiError as err:
            self.writes.append(Write(**record, code=err.status))
            raise
        self.writes.append(Write(**record, code=201 if method == "POST" else 200))
        return answer

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
