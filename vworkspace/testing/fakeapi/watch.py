"""Watch events of the fake: one history of changes in revision order, and the open watches.

Every write the fake stores is published once, as (revision, ADDED/MODIFIED/DELETED, object).
A watch replays the history after its ``resourceVersion`` and then receives new events as they
are published, through a queue, so the order is the global revision order as with etcd. With a
selector, an object that starts or stops matching arrives as ADDED or DELETED, as the API
server's watch cache sends it. :meth:`Watches.compact` forgets the history, after which a watch
from an older revision is answered with an ERROR event of code 410 (what kube-apiserver sends
for "too old resource version").
"""

from __future__ import annotations

import asyncio
import json

import attrs

from vworkspace.api.jsontypes import JsonObj
from vworkspace.testing.fakeapi.selectors import Selector
from vworkspace.testing.fakeapi.status import status_body


@attrs.frozen
class Change:
    """One stored change; ``previous`` is the state before (None for a create)."""

    revision: int
    type: str
    resource: str
    obj: JsonObj
    previous: JsonObj | None


def line(type_: str, obj: JsonObj) -> bytes:
    return json.dumps({"type": type_, "object": obj}).encode() + b"\n"


# What a watch queue carries: a line, the end of the stream (None), or an error to raise.
Item = bytes | BaseException | None


@attrs.define(eq=False)
class Watch:
    """One open watch stream."""

    resource: str
    namespace: str | None
    matches: Selector
    bookmarks: bool
    queue: asyncio.Queue[Item] = attrs.Factory(asyncio.Queue)

    def _visible(self, obj: JsonObj | None) -> bool:
        if obj is None:
            return False
        namespace = (obj.get("metadata") or {}).get("namespace")
        return (self.namespace is None or namespace == self.namespace) and self.matches(obj)

    def offer(self, change: Change) -> None:
        """Queue ``change`` as this watch sees it (through its namespace and selector)."""
        if change.resource != self.resource:
            return
        now, before = self._visible(change.obj), self._visible(change.previous)
        if change.type == "DELETED":
            type_ = "DELETED" if now else ""
        elif now:
            type_ = "MODIFIED" if before else "ADDED"
        else:
            type_ = "DELETED" if before else ""
        if type_:
            self.queue.put_nowait(line(type_, change.obj))

    def end(self, error: BaseException | None = None) -> None:
        self.queue.put_nowait(error)


class Watches:
    """The history of changes and the watches open on it."""

    def __init__(self) -> None:
        self.history: list[Change] = []
        self.compacted = 0
        self.open: set[Watch] = set()

    def publish(self, change: Change) -> None:
        self.history.append(change)
        for watch in list(self.open):
            watch.offer(change)

    def start(self, watch: Watch, since: int) -> None:
        """Register ``watch`` with every change after revision ``since`` queued; an ERROR 410
        (then the end) if the history before ``since`` was compacted away."""
        if since < self.compacted:
            message = f"too old resource version: {since} ({self.compacted})"
            watch.queue.put_nowait(line("ERROR", status_body(410, message, reason="Expired")))
            watch.end()
            return
        for change in self.history:
            if change.revision > since:
                watch.offer(change)
        self.open.add(watch)

    def stop(self, watch: Watch) -> None:
        self.open.discard(watch)

    def compact(self, revision: int) -> None:
        self.history = [c for c in self.history if c.revision > revision]
        self.compacted = max(self.compacted, revision)

    def bookmark(self, revision: int, kinds: dict[str, tuple[str, str]]) -> None:
        """A BOOKMARK at ``revision`` to every watch that asked for bookmarks (``kinds``:
        resource -> (apiVersion, kind))."""
        for watch in self.open:
            if watch.bookmarks:
                api_version, kind = kinds.get(watch.resource, ("v1", ""))
                obj = {
                    "apiVersion": api_version,
                    "kind": kind,
                    "metadata": {"resourceVersion": str(revision)},
                }
                watch.queue.put_nowait(line("BOOKMARK", obj))

    def break_all(self, error: BaseException | None = None) -> None:
        """End every open watch (with ``error`` raised to its reader, if given)."""
        for watch in list(self.open):
            watch.end(error)
            self.open.discard(watch)
