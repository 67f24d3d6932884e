"""List-then-watch of one resource into an indexed cache, robust against the ways watches fail.

The loop (client-go's reflector; docs/operations.md, "How the watches stay healthy"):

1. **List**, paginated (``limit``/``continue``), as a consistent read; replace the cache; objects
   that vanished since the last list are removed *and reported*, so a delete that happened while
   the watch was down is never missed.
2. **Watch** from the list's resourceVersion with bookmarks, a server timeout drawn at random from
   300-600 s (so a fleet of informers does not reconnect in step), a hard client cap a little
   above it, and an **inactivity watchdog**: a watch that delivers neither events nor bookmarks for
   ``inactivity_timeout`` seconds is presumed dead (a half-open TCP path, a stuck proxy) and
   reopened from the last resourceVersion.
3. A watch that ends normally is reopened from the last resourceVersion; **410 Gone** (compacted)
   goes back to 1; any other error waits a jittered 0.8 s -> 30 s backoff first (at least the
   server's ``Retry-After``). Bytes are untrusted: a watch line that is not a JSON event of the
   documented shape, or a list page that is not a list, is a :class:`WatchDecodeError`, counted
   and retried like any error; the informer never ends because of what the server sent.

Handlers receive the object (the last known state for a delete) and whether it came from the
initial list; they must only enqueue keys (level-triggered: never act on the event type). A
handler may come with an *update predicate* (controller-runtime's predicates): for an object the
cache already held, it is called with the previous and the new state and the handler only runs
when it says so. Adds, deletes and objects new to the cache always reach the handler.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Callable

import aiohttp
import structlog

from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.kube.backoff import Backoff
from vworkspace.kube.cache.store import Indexer, Store
from vworkspace.kube.clock import Clock, RealClock
from vworkspace.kube.metrics import Metrics
from vworkspace.kube.rest import safejson
from vworkspace.kube.rest.api import KubeApi
from vworkspace.kube.rest.errors import ApiError, GoneError, RetryableError, error_for
from vworkspace.kube.rest.resources import ResourceType, key_of
from vworkspace.kube.trace import tracer_of

EventHandler = Callable[[JsonObj, bool], None]
UpdatePredicate = Callable[[JsonObj, JsonObj], bool]  # (previous, current) -> notify?

_log = structlog.get_logger("vworkspace.informer")


class WatchInactiveError(Exception):
    """The watch delivered nothing, not even a bookmark, for too long."""


class WatchDecodeError(ValueError):
    """A watch event or list page that is not of the API's shape (garbage from a proxy)."""


_EVENT_TYPES = frozenset({"ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"})


TOMBSTONES = 1000  # deleted keys remembered before old ones are pruned
TOMBSTONE_SECONDS = 120.0


def _older(a: JsonObj, b: JsonObj, *, or_same: bool = False) -> bool:
    """Is ``a`` an older state of the object than ``b`` (or the same one, with ``or_same``)?
    resourceVersions are etcd revisions, integers that grow; client-go's MutationCache
    compares them the same way. Anything else (not a number) counts as not older, so the
    newest event wins as before."""
    try:
        va = int(a["metadata"]["resourceVersion"])
        vb = int(b["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return False
    return va <= vb if or_same else va < vb


def _decode_event(line: bytes) -> JsonObj:
    try:
        event = safejson.loads(line)
    except safejson.JsonError as err:
        raise WatchDecodeError(f"watch line is not JSON ({err}): {line[:120]!r}") from None
    if not isinstance(event, dict) or event.get("type") not in _EVENT_TYPES:
        raise WatchDecodeError(f"not a watch event: {line[:120]!r}")
    obj = event.get("object")
    if not isinstance(obj, dict):
        raise WatchDecodeError(f"watch event without an object: {line[:120]!r}")
    meta = obj.get("metadata")
    if event["type"] in ("ADDED", "MODIFIED", "DELETED") and (
        not isinstance(meta, dict) or not isinstance(meta.get("name"), str)
    ):
        raise WatchDecodeError(f"watch event object without metadata.name: {line[:120]!r}")
    return event


def _page_items(page: JsonObj) -> list[JsonObj]:
    items = page.get("items")
    if items is None:
        return []
    if not isinstance(items, list) or not all(
        isinstance(i, dict) and isinstance(i.get("metadata"), dict) for i in items
    ):
        raise WatchDecodeError("list answer whose items are not objects with metadata")
    return items


class Informer:
    def __init__(
        self,
        client: KubeApi,
        resource: ResourceType,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        indexers: dict[str, Indexer] | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
        page_size: int = 500,
        watch_timeout: tuple[int, int] = (300, 600),
        inactivity_timeout: float = 90.0,
        connect_timeout: float = 10.0,
    ) -> None:
        self.client = client
        self.resource = resource
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.store = Store(indexers)
        self._clock = clock or RealClock()
        self._rng = rng or random.Random()
        self._metrics = metrics
        self.page_size = page_size
        self.watch_timeout = watch_timeout
        self.inactivity_timeout = inactivity_timeout
        self.connect_timeout = connect_timeout
        self._handlers: list[tuple[EventHandler, UpdatePredicate | None]] = []
        # Recently deleted keys -> (resourceVersion, when), so that a late record_write cannot
        # bring a deleted object back into the cache.
        self._tombstones: dict[ObjectKey, tuple[JsonObj, float]] = {}
        self._synced = asyncio.Event()
        self._last_heard = self._clock.monotonic()
        self._backoff = Backoff(clock=self._clock, rng=self._rng)
        self.watches_opened = 0
        self.relists = 0
        # Set when the client is a TracingApi (run --trace-file; kube/trace.py).
        self.tracer = tracer_of(client)
        if self.tracer is not None:
            self.store.on_read = functools.partial(self.tracer.cache_read, str(resource))

    @property
    def name(self) -> str:
        return str(self.resource) + (f"[{self.label_selector}]" if self.label_selector else "")

    def add_handler(
        self, handler: EventHandler, *, on_update: UpdatePredicate | None = None
    ) -> None:
        """Call ``handler`` for every change, or for updates only when ``on_update(previous,
        current)`` is true."""
        self._handlers.append((handler, on_update))

    @property
    def has_synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    def last_event_age(self) -> float:
        return self._clock.monotonic() - self._last_heard

    async def run(self) -> None:
        """List and watch until cancelled."""
        log = _log.bind(informer=self.name)
        resource_version: str | None = None
        while True:
            try:
                if resource_version is None:
                    resource_version = await self._relist()
                resource_version = await self._watch(resource_version)
            except GoneError:
                log.info(
                    "watch resourceVersion expired; relisting", resource_version=resource_version
                )
                resource_version = None
                self._count_error("gone")
            except WatchInactiveError:
                log.warning("watch silent; reopening", inactivity_timeout=self.inactivity_timeout)
                self._count_error("inactive")
            except (ApiError, aiohttp.ClientError, TimeoutError, OSError, ValueError) as err:
                delay = self._backoff.next_delay()
                if isinstance(err, RetryableError) and err.retry_after:
                    delay = max(delay, err.retry_after)
                self._count_error(type(err).__name__)
                log.warning("list/watch failed; retrying", error=str(err), retry_in=round(delay, 2))
                await self._clock.sleep(delay)
            except Exception as err:
                # Whatever else the server's bytes provoke: the cache stays, the loop goes on.
                delay = self._backoff.next_delay()
                self._count_error(type(err).__name__)
                log.exception("list/watch failed unexpectedly; retrying", retry_in=round(delay, 2))
                await self._clock.sleep(delay)

    def _count_error(self, kind: str) -> None:
        if self._metrics:
            self._metrics.informer_errors.labels(self.name, kind).inc()

    def _base_query(self) -> dict[str, str]:
        query: dict[str, str] = {}
        if self.label_selector:
            query["labelSelector"] = self.label_selector
        if self.field_selector:
            query["fieldSelector"] = self.field_selector
        return query

    async def _relist(self) -> str:
        initial = not self.has_synced
        items: list[JsonObj] = []
        query = {**self._base_query(), "limit": str(self.page_size)}
        while True:
            page = await self.client.request(
                "GET", self.resource.collection_path(self.namespace), query=query
            )
            kind = self.resource.kind
            for item in _page_items(page):
                # List items carry no apiVersion/kind; add them so handlers see whole objects.
                items.append({"apiVersion": self.resource.api_version, "kind": kind, **item})
            meta = page.get("metadata")
            meta = meta if isinstance(meta, dict) else {}
            token = meta.get("continue")
            if not token:
                resource_version = str(meta.get("resourceVersion", ""))
                break
            query = {**self._base_query(), "limit": str(self.page_size), "continue": token}
        self._replace(items, initial=initial)
        self.relists += 1
        if self._metrics:
            self._metrics.informer_relists.labels(self.name).inc()
        self._last_heard = self._clock.monotonic()
        self._synced.set()
        return resource_version

    def _replace(self, items: list[JsonObj], *, initial: bool) -> None:
        seen = set()
        for obj in items:
            key = key_of(obj)
            seen.add(key)
            previous = self.store.upsert(obj)
            changed = previous is None or previous.get("metadata", {}).get(
                "resourceVersion"
            ) != obj.get("metadata", {}).get("resourceVersion")
            if changed:
                if self.tracer is not None:
                    self._trace("ADDED" if previous is None else "MODIFIED", obj, "list")
                self._notify(obj, initial=initial, previous=previous)
        vanished = [key for key in self.store.all_keys() if key not in seen]
        for key in vanished:
            gone = self.store.delete(key)
            if gone is not None:
                # Deleted at an unknown version after ``gone``'s: refuse any late write-through.
                self._bury({"metadata": {**gone["metadata"], "resourceVersion": str(2**63)}})
                if self.tracer is not None:
                    self._trace("DELETED", gone, "list")
                self._notify(gone, initial=False)

    async def _watch(self, resource_version: str) -> str:
        timeout = self._rng.randint(*self.watch_timeout)
        query = {
            **self._base_query(),
            "watch": "true",
            "allowWatchBookmarks": "true",
            "resourceVersion": resource_version,
            "timeoutSeconds": str(timeout),
        }
        self.watches_opened += 1
        loop = asyncio.get_running_loop()
        try:
            # One deadline covers opening the stream and every read after it; each line (event
            # or bookmark) pushes it back. A stalled connection cannot hang us in either phase.
            async with asyncio.timeout(self.inactivity_timeout) as deadline:
                async with self.client.stream_lines(
                    self.resource.collection_path(self.namespace),
                    query=query,
                    connect_timeout=self.connect_timeout,
                    total_timeout=timeout + 30,
                ) as lines:
                    async for line in lines:
                        deadline.reschedule(loop.time() + self.inactivity_timeout)
                        resource_version = self._apply_event(_decode_event(line), resource_version)
        except TimeoutError:
            raise WatchInactiveError from None
        self._backoff.reset()
        return resource_version

    def _apply_event(self, event: JsonObj, resource_version: str) -> str:
        kind = event.get("type")
        obj = event.get("object") or {}
        self._last_heard = self._clock.monotonic()
        if kind == "ERROR":
            code = obj.get("code")
            raise error_for(
                status=code if isinstance(code, int) else 0,
                body=obj,
                method="WATCH",
                path=str(self.resource.collection_path(self.namespace)),
            )
        new_rv = str(obj.get("metadata", {}).get("resourceVersion") or resource_version)
        if kind in ("ADDED", "MODIFIED"):
            cached = self.store.get(key_of(obj))
            if cached is not None and _older(obj, cached, or_same=True):
                # Our own write (record_write) already brought this state or a newer one.
                return new_rv
            previous = self.store.upsert(obj)
            if self.tracer is not None:
                self._trace(kind, obj, "watch")
            self._notify(obj, initial=False, previous=previous)
        elif kind == "DELETED":
            self.store.delete(key_of(obj))
            self._bury(obj)
            if self.tracer is not None:
                self._trace(kind, obj, "watch")
            self._notify(obj, initial=False)
        return new_rv

    def record_write(self, obj: JsonObj) -> None:
        """Handle the answer of our own write as if its watch event had arrived already
        (client-go's ``MutationCache``, plus the handlers).

        Without it, the next reconcile of the object (often already queued by an event of a
        child) reads the state from before the write, writes again and gets a 409 conflict, a
        re-read and a third request. The handlers run now, while the reconcile that wrote is
        still in hand, so the keys they enqueue collapse into one follow-up reconcile; the watch
        event of the same resourceVersion later is a duplicate and is dropped. An object whose
        deletion the watch reported at a later resourceVersion is not stored (it must not come
        back as a ghost), nor is an answer older than the cached state.
        """
        key = key_of(obj)
        cached = self.store.get(key)
        if cached is None:
            tombstone = self._tombstones.get(key)
            if tombstone is not None and not _older(tombstone[0], obj):
                return
        elif not _older(cached, obj):
            return
        self.store.upsert(obj)
        if self.tracer is not None:
            self._trace("ADDED" if cached is None else "MODIFIED", obj, "write")
        self._notify(obj, initial=False, previous=cached)

    def _trace(self, kind: str, obj: JsonObj, via: str) -> None:
        if self.tracer is not None:
            self.tracer.informer_event(str(self.resource), kind, obj, via=via)

    def _bury(self, obj: JsonObj) -> None:
        now = self._clock.monotonic()
        if len(self._tombstones) >= TOMBSTONES:
            # A write's answer arrives within a request timeout; older graves are not needed.
            horizon = now - TOMBSTONE_SECONDS
            self._tombstones = {k: v for k, v in self._tombstones.items() if v[1] > horizon}
        self._tombstones[key_of(obj)] = (obj, now)

    def _notify(self, obj: JsonObj, *, initial: bool, previous: JsonObj | None = None) -> None:
        """``previous``: the cached state this one replaces (None for adds and deletes)."""
        for handler, on_update in self._handlers:
            try:
                if previous is None or on_update is None or on_update(previous, obj):
                    handler(obj, initial)
            except Exception:  # a faulty handler must not kill the watch
                _log.exception("informer handler failed", informer=self.name)
