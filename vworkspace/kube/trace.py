"""Event traces: what the operator received from Kubernetes and what it made of it, as NDJSON.

``run --trace-file PATH`` (off by default) writes one JSON object per line (docs/traces.md):

* ``{"t": "event", ...}``: an informer event (resource, ``ADDED``/``MODIFIED``/``DELETED``, the
  object, scrubbed), whether from a watch, a relist or the write-through of our own write
  (``via``: ``watch``, ``list``, ``write``);
* ``{"t": "reconcile", ...}``: one reconcile: controller, key, the clock time it started, how
  many events had been traced before it started (``seq``, so a replay knows the world it saw),
  the cached objects it read (references: resource, key, the first and the last
  resourceVersion it read; their content is in the events), the objects it fetched with GET
  (whole, scrubbed), the writes it made (method, resource, key, subresource, body, scrubbed,
  and the answer's code), the status it committed (the body of its last status write) and its
  outcome (``done``, ``after`` with the requeue, ``terminal``, ``error``, ``timeout``).

``python -m vworkspace trace to-fixture`` turns a trace into a replay fixture
(vworkspace/devtools/trace_cmd.py; tests/unit/test_replay_fixtures.py replays them).

How it is wired, with no constructor changes: tracing is a property of the API connection.
``build_manager`` wraps the client in a :class:`TracingApi` when a trace file is set; an
:class:`~vworkspace.kube.cache.informer.Informer` built on it finds the tracer with
:func:`tracer_of` and a :class:`~vworkspace.kube.runtime.controller.Controller` takes it from
the informers it watches. A reconcile in progress is a context variable, so the writes its
engines and event recorder make through the API are attributed to it without touching a call
site. Cost when off: the informer and the controller test one attribute per event and per
reconcile (``if self.tracer is not None``), the store one per read.

Secrets never reach a trace: every object and body goes through
:func:`~vworkspace.kube.scrub.scrub` first (Secret data, secret-looking fields, JWTs,
``last-applied-configuration``).

Trade-offs: the file is written synchronously from the event loop; event lines are buffered
(flushed with the next reconcile line, when 64 KiB are pending, by :meth:`Tracer.run` every
second and at shutdown), a reconcile line is flushed at once. A trace is for debugging and
fixtures, not for production at 10,000 objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, TextIO

import attrs

from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.kube.clock import Clock
from vworkspace.kube.rest.api import JSON, KubeApi, RestVerbs
from vworkspace.kube.rest.errors import ApiError
from vworkspace.kube.rest.paths import ApiPath
from vworkspace.kube.scrub import scrub

TRACE_VERSION = 1
FLUSH_BYTES = 64 * 1024
_STATUS_SUBRESOURCE = "status"
_SECRETS = "secrets"


@attrs.frozen
class Target:
    """What a REST path addresses: ``resource`` as ``str(ResourceType)`` (``plural.group``)."""

    resource: str
    namespace: str | None
    name: str | None
    subresource: str | None

    @classmethod
    def of(cls, path: ApiPath) -> Target:
        segs = list(path.segments)
        # /api/v1/... or /apis/GROUP/VERSION/...
        group = "" if segs[:1] == ["api"] else (segs[1] if len(segs) > 1 else "")
        rest = segs[2:] if group == "" else segs[3:]
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        plural = rest[0] if rest else ""
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        return cls(f"{plural}.{group}" if group else plural, namespace, name, sub)

    def key(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else str(self.name)


def key_text(key: ObjectKey) -> str:
    return f"{key.namespace}/{key.name}" if key.namespace else key.name


@attrs.define
class ReconcileRecord:
    """One reconcile in progress; becomes one ``reconcile`` line when it ends."""

    controller: str
    key: str
    id: str
    time: str
    seq: int
    started: float
    reads: dict[tuple[str, str], tuple[str, str]] = attrs.field(factory=dict)
    fetched: list[JsonObj] = attrs.field(factory=list)
    writes: list[JsonObj] = attrs.field(factory=list)

    def note_request(self, method: str, path: ApiPath, body: Any, answer: Any, code: int) -> None:
        target = Target.of(path)
        secret = target.resource == _SECRETS
        if method == "GET":
            if target.name is not None:  # lists are not replayed; their items are events
                entry: JsonObj = {"resource": target.resource, "key": target.key(), "code": code}
                if code < 300:
                    entry["object"] = scrub(answer, secret=secret)
                self.fetched.append(entry)
            return
        write: JsonObj = {
            "method": method,
            "resource": target.resource,
            "key": target.key() if target.name else (target.namespace or ""),
            "body": scrub(body, secret=secret),
            "code": code,
        }
        if target.subresource:
            write["subresource"] = target.subresource
        self.writes.append(write)

    def line(self, outcome: JsonObj, now: float) -> JsonObj:
        status = [
            w["body"].get("status")
            for w in self.writes
            if w.get("subresource") == _STATUS_SUBRESOURCE
            and w["code"] < 300
            and w["key"] == self.key
            and isinstance(w["body"], dict)
        ]
        return {
            "t": "reconcile",
            "controller": self.controller,
            "key": self.key,
            "id": self.id,
            "time": self.time,
            "seq": self.seq,
            "reads": [
                {"resource": r, "key": k, "resourceVersion": first, "lastResourceVersion": last}
                for (r, k), (first, last) in sorted(self.reads.items())
            ],
            "fetched": self.fetched,
            "writes": self.writes,
            "status": status[-1] if status else None,
            "outcome": outcome,
            "duration": round(now - self.started, 4),
        }


_current: contextvars.ContextVar[ReconcileRecord | None] = contextvars.ContextVar(
    "vworkspace_trace_reconcile", default=None
)


def current_reconcile() -> ReconcileRecord | None:
    """The reconcile this task works for, if it is traced."""
    return _current.get()


class Tracer:
    """Writes trace lines to ``out``, buffered. One per process, made by ``build_manager``."""

    def __init__(self, out: TextIO, *, clock: Clock) -> None:
        self._out = out
        self._clock = clock
        self._pending: list[str] = []
        self._pending_bytes = 0
        self.events = 0  # informer events traced so far (a reconcile's ``seq``)
        self.stopped = False
        self.lines = 0

    @classmethod
    def open(cls, path: Path, *, clock: Clock, settings: JsonObj | None = None) -> Tracer:
        """Append to ``path`` (created with its directory); a header line names the version
        and the ``settings`` a replay needs to build the same operator."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tracer = cls(path.open("a", encoding="utf-8"), clock=clock)
        header = {"t": "header", "version": TRACE_VERSION, "time": tracer._now()}
        tracer._write({**header, "settings": settings or {}})
        return tracer

    def _now(self) -> str:
        return self._clock.now().isoformat()

    def _write(self, line: JsonObj) -> None:
        text = json.dumps(line, separators=(",", ":"), sort_keys=True, default=str) + "\n"
        self._pending.append(text)
        self._pending_bytes += len(text)
        self.lines += 1
        if self._pending_bytes >= FLUSH_BYTES or self.stopped:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._out.write("".join(self._pending))
            self._pending.clear()
            self._pending_bytes = 0
        self._out.flush()

    def close(self) -> None:
        self.flush()
        self._out.close()

    async def run(self, stop: asyncio.Event, interval: float = 1.0) -> None:
        """Flush every ``interval`` seconds until ``stop`` (a manager runnable); from then on
        every line is written at once, so the reconciles that finish during shutdown are kept."""
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)
                self.flush()
        finally:
            self.stopped = True
            self.flush()

    # -- hooks -----------------------------------------------------------------------------

    def informer_event(self, resource: str, kind: str, obj: JsonObj, *, via: str) -> None:
        """An event the informer applied to its cache."""
        self.events += 1
        self._write(
            {
                "t": "event",
                "seq": self.events,
                "time": self._now(),
                "resource": resource,
                "type": kind,
                "via": via,
                "object": scrub(obj),
            }
        )

    def cache_read(self, resource: str, obj: JsonObj) -> None:
        """A reconcile read ``obj`` from an informer's cache (a reference is enough)."""
        record = _current.get()
        if record is None:
            return
        meta = obj.get("metadata") or {}
        ns, name = meta.get("namespace"), meta.get("name")
        key = f"{ns}/{name}" if ns else str(name)
        # The first and the last version read: a reconcile reads its own writes back, and a
        # watch event that arrives while it awaits something can be read by it too.
        version = str(meta.get("resourceVersion", ""))
        first, _ = record.reads.get((resource, key), (version, version))
        record.reads[(resource, key)] = (first, version)

    def begin(self, controller: str, key: ObjectKey, reconcile_id: str) -> contextvars.Token[Any]:
        """Start tracing a reconcile in this task's context; :meth:`end` with the token."""
        record = ReconcileRecord(
            controller=controller,
            key=key_text(key),
            id=reconcile_id,
            time=self._now(),
            seq=self.events,
            started=time.perf_counter(),
        )
        return _current.set(record)

    def end(self, token: contextvars.Token[Any], outcome: JsonObj) -> None:
        record = _current.get()
        _current.reset(token)
        if record is not None:
            self._write(record.line(outcome, time.perf_counter()))
            # A reconcile is what a trace is read for: it reaches the file at once (the events
            # before it with it), so a process killed later loses at most the events since.
            self.flush()


def status_only(write: JsonObj) -> JsonObj:
    """A status write as what it can change: its body's ``status`` (the API server ignores the
    rest; fixtures keep only that, devtools/trace_cmd.py)."""
    body = write.get("body")
    if write.get("subresource") != "status" or not isinstance(body, dict):
        return write
    return {**write, "body": {"status": body.get("status")}}


def outcome_of(
    requeue_after: float | None = None, *, error: BaseException | None = None
) -> JsonObj:
    """The ``outcome`` of a reconcile line, from its Result or the exception it raised."""
    if error is None:
        if requeue_after is None:
            return {"result": "done"}
        return {"result": "after", "requeue_after": round(requeue_after, 3)}
    kind = {"TerminalError": "terminal", "InvalidNameError": "terminal"}.get(
        type(error).__name__, "timeout" if isinstance(error, TimeoutError) else "error"
    )
    return {"result": kind, "error": f"{type(error).__name__}: {error}"[:500]}


class TracingApi(RestVerbs):
    """A :class:`KubeApi` that attributes each request made inside a traced reconcile to it
    (GETs as fetched objects, everything else as writes) and passes everything through."""

    def __init__(self, inner: KubeApi, tracer: Tracer) -> None:
        self.inner = inner
        self.tracer = tracer

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
        record = _current.get()
        if record is None:
            return await self.inner.request(
                method, path, query=query, body=body, content_type=content_type, timeout_s=timeout_s
            )
        try:
            answer = await self.inner.request(
                method, path, query=query, body=body, content_type=content_type, timeout_s=timeout_s
            )
        except ApiError as err:
            record.note_request(method, path, body, None, err.status)
            raise
        record.note_request(method, path, body, answer, 200)
        return answer

    def stream_lines(
        self,
        path: ApiPath,
        *,
        query: Mapping[str, str],
        connect_timeout: float,
        total_timeout: float,
    ) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        return self.inner.stream_lines(
            path, query=query, connect_timeout=connect_timeout, total_timeout=total_timeout
        )

    def __getattr__(self, name: str) -> Any:
        # The concrete client's extras (server, close, instrument) stay reachable.
        return getattr(self.inner, name)


def tracer_of(api: object) -> Tracer | None:
    """The tracer of a traced API, else None (how informers find it without a parameter)."""
    return api.tracer if isinstance(api, TracingApi) else None
