"""Replaying a trace fixture (tests/replay/*.ndjson) through the real reconcilers, in memory.

A fixture (``python -m vworkspace trace to-fixture``, vworkspace/devtools/trace_cmd.py) is the
informer events one operator process received and the reconciles it ran, each with the writes
it made, the status it committed and its outcome. :func:`replay` rebuilds that world and asks
today's reconcilers the same questions:

1. the operator is built by the production wiring (:func:`build_reconcilers`, the one place that
   knows how), on an in-memory API, with a :class:`~vworkspace.kube.clock.FakeClock`;
2. for each recorded reconcile, in order, the events recorded before it started are put into
   the API *and* the informers' caches verbatim (the world as the real cluster had it, whatever
   the replay's own earlier writes made of it: each reconcile is judged on the recorded world,
   so one difference does not cascade), then the cached objects at the resourceVersions it read
   (an event that arrived while it ran may have been read by it), the objects it fetched with
   GET, and the clock is set to its recorded time;
3. the reconcile runs, through a :class:`~vworkspace.kube.trace.TracingApi` like in production,
   and its writes, status and outcome are compared with the recorded ones after
   :func:`comparable` (no resourceVersions, uids, managed fields or generated Event names;
   timestamps as ``<time>``, since a replay cannot reproduce the sub-second they were taken at;
   applied digests as ``<digest>``, since they hash owner uids the fixture renamed).

``update=True`` rewrites the fixture's expectations from what the reconcilers do now (the
replay test's ``--update-replay``/``VWORKSPACE_UPDATE_REPLAY=1``, docs/traces.md).

The in-memory API (:class:`ReplayApi`) is deliberately naive: it stores what it is given
verbatim (metadata.generation included, which the reconcilers compare with observedGeneration),
answers GET/LIST, applies merge patches and applies (as merge patches), replaces, bumps
``metadata.generation`` when anything but metadata and status changes, keeps status out of
main-resource writes, keeps objects with finalizers on DELETE. It checks no preconditions: the
recorded world is authoritative, and a replay is about what the reconcilers decide, not about
conflicts (the fake API's own tests, vworkspace/testing/fakeapi, cover those semantics).
"""

from __future__ import annotations

import copy
import datetime
import io
import json
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
from prometheus_client import CollectorRegistry

from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.app.engines import OPTIONAL_KINDS
from vworkspace.app.wiring import OperatorSettings, build_manager
from vworkspace.kube.cache.informer import Informer
from vworkspace.kube.clock import FakeClock
from vworkspace.kube.rest.api import JSON, MERGE_PATCH, RestVerbs
from vworkspace.kube.rest.errors import error_for
from vworkspace.kube.rest.paths import ApiPath
from vworkspace.kube.runtime.controller import Reconciler, Result
from vworkspace.kube.trace import Target, Tracer, TracingApi, outcome_of, status_only

_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_DROPPED = frozenset({"resourceVersion", "uid", "managedFields", "reportingInstance"})
# A digest of the applied object: it covers owner uids, which a fixture normalizes.
_DIGEST = "apps.vworkspace.io/applied-digest"
_EVENTS = "events.events.k8s.io"


def _merge(live: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(live) if isinstance(live, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


class ReplayApi(RestVerbs):
    """The naive in-memory API of a replay (module docstring)."""

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self._objects: dict[tuple[str, str | None, str], JsonObj] = {}
        self._revision = 10_000  # above a fixture's normalized resourceVersions

    # -- the recorded world --------------------------------------------------------------

    def put(self, resource: str, obj: JsonObj) -> JsonObj:
        meta = obj.get("metadata") or {}
        stored = copy.deepcopy(obj)
        self._objects[(resource, meta.get("namespace"), meta["name"])] = stored
        return copy.deepcopy(stored)

    def remove(self, resource: str, obj: JsonObj) -> None:
        meta = obj.get("metadata") or {}
        self._objects.pop((resource, meta.get("namespace"), meta["name"]), None)

    # -- KubeApi -----------------------------------------------------------------------------

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
        target = Target.of(path)
        if target.name is None:
            if method == "GET":
                return {"items": self._list(target), "metadata": {"resourceVersion": "1"}}
            return self._write(target, None, body, method, content_type)
        slot = (target.resource, target.namespace, target.name)
        live = self._objects.get(slot)
        if method == "GET":
            if live is None:
                raise self._not_found(method, path)
            return copy.deepcopy(live)
        if method == "DELETE":
            if live is None:
                raise self._not_found(method, path)
            if live.get("metadata", {}).get("finalizers"):
                live["metadata"]["deletionTimestamp"] = _now(self._clock)
                return copy.deepcopy(live)
            del self._objects[slot]
            return copy.deepcopy(live)
        if live is None and not (method == "PATCH" and content_type != MERGE_PATCH):
            raise self._not_found(method, path)
        return self._write(target, live, body, method, content_type)

    def _list(self, target: Target) -> list[JsonObj]:
        return [
            copy.deepcopy(o)
            for (resource, ns, _), o in sorted(self._objects.items(), key=lambda i: str(i[0]))
            if resource == target.resource and (target.namespace in (None, ns))
        ]

    def _write(
        self, target: Target, live: JsonObj | None, body: Any, method: str, content_type: str
    ) -> JsonObj:
        # Through JSON, as over the wire: str enums become plain strings (the cache interns them).
        body = json.loads(json.dumps(body)) if isinstance(body, dict) else {}
        # POST, merge patch, server-side apply (as a merge: the replay's subset) merge.
        new = copy.deepcopy(body) if method == "PUT" else _merge(live or {}, body)
        if target.subresource == "status" and live is not None:
            new = {**live, "status": new.get("status")}
        elif live is not None and "status" in live:
            new["status"] = live["status"]  # the main resource does not write status
        meta = new.setdefault("metadata", {})
        self._revision += 1
        if live is not None and _spec(live) != _spec(new):
            meta["generation"] = int(live.get("metadata", {}).get("generation") or 0) + 1
        if live is None:  # created (POST, or an apply of a missing object)
            meta.setdefault("namespace", target.namespace)
            if not meta.get("name"):
                meta["name"] = f"{meta.get('generateName', 'obj-')}{self._revision}"
            meta.update(uid=f"replay-uid-{self._revision}", generation=1)
            meta["creationTimestamp"] = _now(self._clock)
        meta["resourceVersion"] = str(self._revision)
        if live is not None and live.get("metadata", {}).get("deletionTimestamp"):
            meta["deletionTimestamp"] = live["metadata"]["deletionTimestamp"]
            if not meta.get("finalizers"):
                self.remove(target.resource, new)
                return copy.deepcopy(new)
        return self.put(target.resource, new)

    def _not_found(self, method: str, path: ApiPath) -> Exception:
        body = {"kind": "Status", "reason": "NotFound", "code": 404, "message": "not found"}
        return error_for(status=404, body=body, method=method, path=str(path))

    @asynccontextmanager
    async def stream_lines(
        self,
        path: ApiPath,
        *,
        query: Mapping[str, str],
        connect_timeout: float,
        total_timeout: float,
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """No watches: a replay feeds the informers' caches itself."""

        async def nothing() -> AsyncIterator[bytes]:
            return
            yield b""  # pragma: no cover - makes this an async generator

        yield nothing()

    def instrument(self, metrics: object) -> None:
        """build_manager instruments the concrete client; nothing to count here."""


def _spec(obj: JsonObj) -> JsonObj:
    """What bumps metadata.generation: everything but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _now(clock: FakeClock) -> str:
    return clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")


@attrs.frozen
class Operator:
    """What a replay needs of the built operator."""

    reconcilers: dict[str, Reconciler]
    informers: list[Informer]


def build_reconcilers(api: TracingApi, clock: FakeClock, header: JsonObj) -> Operator:
    """The operator as production wires it, on ``api``: the one function that knows how (adapt
    it, not the replay, when the wiring changes)."""
    recorded = header.get("settings") or {}
    settings = OperatorSettings(
        workers=1,
        velero_namespace=recorded.get("velero_namespace", "velero"),
        flux_service_account=recorded.get("flux_service_account", ""),
    )
    manager = build_manager(
        settings,
        # build_manager takes the concrete client until the components take KubeApi (issue 28).
        api,  # type: ignore[arg-type]
        registry=CollectorRegistry(),
        served=frozenset(OPTIONAL_KINDS),
        clock=clock,
    )
    return Operator(
        reconcilers={c.name: c.reconciler for c in manager.controllers},
        informers=list(manager.informers),
    )


def comparable(value: Any, *, resource: str = "") -> Any:
    """``value`` without what a replay cannot reproduce (module docstring)."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in _DROPPED:
                continue
            if resource == _EVENTS and key == "name":
                continue  # a generated Event name
            if key == _DIGEST:
                out[key] = "<digest>"
                continue
            out[key] = comparable(item, resource=resource)
        return out
    if isinstance(value, list):
        return [comparable(v, resource=resource) for v in value]
    if isinstance(value, str) and _TIME.match(value):
        return "<time>"
    return value


def _comparable_writes(writes: list[JsonObj]) -> list[JsonObj]:
    """In a stable order: the order of a reconcile's writes to different objects can depend on
    which of its children's watch events had arrived (a race of the recorded run), not on its
    decisions; the writes to one object keep their order."""
    found = [comparable(status_only(w), resource=w.get("resource", "")) for w in writes]
    return sorted(found, key=lambda w: (w.get("resource", ""), w.get("key", "")))


@attrs.frozen
class Mismatch:
    """One reconcile whose replay differs from the recording."""

    index: int
    controller: str
    key: str
    field: str
    expected: Any
    actual: Any

    def __str__(self) -> str:
        return (
            f"reconcile #{self.index} {self.controller} {self.key}: {self.field} differs\n"
            f"  recorded: {json.dumps(self.expected, sort_keys=True)[:2000]}\n"
            f"  replayed: {json.dumps(self.actual, sort_keys=True)[:2000]}"
        )


def load(path: Path) -> list[JsonObj]:
    lines = [json.loads(t) for t in path.read_text(encoding="utf-8").splitlines() if t.strip()]
    if not lines or lines[0].get("t") != "header":
        raise ValueError(f"{path}: not a fixture (no header line)")
    return lines


def _clock_seconds(text: str) -> float:
    moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    epoch = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    return (moment - epoch).total_seconds()


class _Replay:
    def __init__(self, header: JsonObj) -> None:
        self.clock = FakeClock(start=_clock_seconds(header["time"]))
        self.world = ReplayApi(self.clock)
        self.tracer = Tracer(io.StringIO(), clock=self.clock)
        operator = build_reconcilers(TracingApi(self.world, self.tracer), self.clock, header)
        self.reconcilers = operator.reconcilers
        self.errors: list[Exception] = []  # what the replayed reconciles raised, for a debugger
        self.informers: dict[str, list[Informer]] = {}
        for informer in operator.informers:
            self.informers.setdefault(str(informer.resource), []).append(informer)

    def feed(self, event: JsonObj) -> None:
        resource, obj = event["resource"], event["object"]
        if event["type"] == "DELETED":
            self.world.remove(resource, obj)
            for informer in self.informers.get(resource, []):
                informer.store.delete(_key(obj))
            return
        stored = self.world.put(resource, obj)
        for informer in self.informers.get(resource, []):
            informer.store.upsert(stored)

    def seed_reads(self, rec: JsonObj, states: dict[tuple[str, str, str], JsonObj]) -> None:
        """The cached objects at the versions the reconcile read: an event that arrived while
        it was already running (a concurrent watch) can have been read by it. Not the objects
        it wrote itself: it may have read those only after its own write."""
        written = {(w["resource"], w["key"]) for w in rec.get("writes", [])}
        for ref in rec.get("reads", []):
            if (ref["resource"], ref["key"]) in written:
                continue
            version = ref.get("lastResourceVersion", ref.get("resourceVersion", ""))
            event = states.get((ref["resource"], ref["key"], version))
            if event is not None and event["type"] != "DELETED":
                self.feed(event)

    def seed_fetched(self, fetched: list[JsonObj]) -> None:
        for entry in fetched:
            if entry.get("code", 200) < 300 and isinstance(entry.get("object"), dict):
                self.world.put(entry["resource"], entry["object"])
            elif entry.get("code") == 404:
                namespace, _, name = entry["key"].rpartition("/")
                self.world.remove(
                    entry["resource"], {"metadata": {"namespace": namespace or None, "name": name}}
                )

    async def run(self, rec: JsonObj) -> JsonObj:
        """One recorded reconcile, replayed; its trace line."""
        # The recorded moment; concurrent reconciles may have started a little out of order.
        await self.clock.advance(max(0.0, _clock_seconds(rec["time"]) - self.clock.monotonic()))
        namespace, _, name = rec["key"].rpartition("/")
        key = ObjectKey(namespace or None, name)
        out = self.tracer._out
        assert isinstance(out, io.StringIO)
        out.seek(0)
        out.truncate()
        token = self.tracer.begin(rec["controller"], key, rec.get("id", "replay"))
        try:
            result = await self.reconcilers[rec["controller"]].reconcile(key)
            outcome = outcome_of(result.requeue_after if isinstance(result, Result) else None)
        except Exception as err:
            outcome = outcome_of(error=err)
            self.errors.append(err)
        self.tracer.end(token, outcome)
        line: JsonObj = json.loads(out.getvalue().splitlines()[-1])
        return line


def _text(key: ObjectKey) -> str:
    return f"{key.namespace}/{key.name}" if key.namespace else key.name


def _version(obj: JsonObj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion", ""))


def _key(obj: JsonObj) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return ObjectKey(meta.get("namespace") or None, meta["name"])


def _compare(index: int, rec: JsonObj, got: JsonObj) -> Iterator[Mismatch]:
    pairs = {
        "writes": (_comparable_writes(rec["writes"]), _comparable_writes(got["writes"])),
        "status": (comparable(rec["status"]), comparable(got["status"])),
        "outcome": (_outcome_kind(rec["outcome"]), _outcome_kind(got["outcome"])),
    }
    for field, (expected, actual) in pairs.items():
        if expected != actual:
            yield Mismatch(index, rec["controller"], rec["key"], field, expected, actual)


def _outcome_kind(outcome: JsonObj) -> JsonObj:
    """The outcome without the error text's details and with the requeue to the second (a
    requeue computed from the clock, e.g. a grace period's rest, differs in its fractions)."""
    kept: JsonObj = {"result": outcome.get("result")}
    if outcome.get("requeue_after") is not None:
        kept["requeue_after"] = round(float(outcome["requeue_after"]))
    if outcome.get("error"):
        kept["error"] = str(outcome["error"]).split(":", 1)[0]
    return kept


async def replay(path: Path, *, update: bool = False) -> list[Mismatch]:
    """Replay the fixture at ``path``; the mismatches (none: the reconcilers agree with the
    recording). With ``update``, the fixture's expectations are rewritten from the replay."""
    lines = load(path)
    state = _Replay(lines[0])
    states = {
        (line["resource"], _text(_key(line["object"])), _version(line["object"])): line
        for line in lines
        if line["t"] == "event"
    }
    mismatches: list[Mismatch] = []
    rewritten: list[JsonObj] = [lines[0]]
    index = 0
    for line in lines[1:]:
        if line["t"] == "event":
            state.feed(line)
            rewritten.append(line)
            continue
        if line["t"] != "reconcile":
            rewritten.append(line)
            continue
        index += 1
        state.seed_reads(line, states)
        state.seed_fetched(line.get("fetched", []))
        got = await state.run(line)
        mismatches.extend(_compare(index, line, got))
        if update:
            line = {**line, **{k: got[k] for k in ("writes", "status", "outcome")}}
        rewritten.append(line)
    if update:
        _rewrite(path, rewritten)
    return mismatches


def _rewrite(path: Path, lines: list[JsonObj]) -> None:
    text = "".join(json.dumps(x, sort_keys=True, separators=(",", ":")) + "\n" for x in lines)
    path.write_text(text, encoding="utf-8")
