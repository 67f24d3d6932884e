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

The API is the fake API with real semantics (vworkspace/testing/fakeapi; :class:`ReplayApi`
adds only a verbatim put, since a recorded object keeps its uid and generation, which the
reconcilers compare). What a replay cannot know, it leaves out rather than guess: objects of a
watched kind that a reconcile fetched with GET are not put (the events are their world, and a put
would move the API ahead of the cache into a 409 the recording never had), unless the GET found
nothing; a write's failure in the recording (a 409, a 403) is compared as recorded against the
fake's answer, so a fixture whose reconciles hit such errors needs ``update`` or a re-recording.
"""

from __future__ import annotations

import datetime
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
from prometheus_client import CollectorRegistry

from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.app.engines import required_kinds
from vworkspace.app.wiring import OperatorSettings, build_manager
from vworkspace.kube.cache.informer import Informer
from vworkspace.kube.clock import FakeClock
from vworkspace.kube.runtime.controller import Reconciler, Result
from vworkspace.kube.trace import Tracer, TracingApi, outcome_of, status_only
from vworkspace.testing.fakeapi import FakeApi

_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_DROPPED = frozenset({"resourceVersion", "uid", "managedFields", "reportingInstance"})
# A digest of the applied object: it covers owner uids, which a fixture normalizes.
_DIGEST = "apps.vworkspace.io/applied-digest"
_EVENTS = "events.events.k8s.io"


class ReplayApi(FakeApi):
    """The fake API (vworkspace/testing/fakeapi) with the recorded world put into it verbatim."""

    def put(self, resource: str, obj: JsonObj) -> JsonObj:
        """Store ``obj`` as recorded (uid, generation, status, deletionTimestamp: the reconcilers
        compare them); ``FakeApi.add`` would create it anew, with a new uid and generation 1."""
        return self._store.put_verbatim(resource, obj)

    def remove(self, resource: str, obj: JsonObj) -> None:
        """Forget ``obj`` (a recorded deletion)."""
        self._store.forget(resource, _key(obj))

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
        served=frozenset(required_kinds()),
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
    for write in found:
        if write.get("resource") == _EVENTS:  # a generated name: namespace/<event>
            write["key"] = str(write.get("key", "")).rsplit("/", 1)[0] + "/<event>"
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
        self.world = ReplayApi(clock=self.clock)
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
            if entry["resource"] in self.informers and entry.get("code") != 404:
                # A watched kind: its events are the world, and a put would move it ahead of
                # the cache (a 409 the recorded run did not get). A 404 is kept: the object was
                # gone on the server while the cache still held it.
                continue
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
