"""Condition transitions to the control plane: the event batcher and the status reporter.

**Batcher** (docs/pull-mode.md, "Events"; what differs from Go is marked):

* flush every second, or at once when 100 events are waiting; at most 100 per POST;
* a bounded buffer (default 1000) that drops the *oldest* event when full and counts the drops;
* a failed POST puts its batch back at the front (dropping the oldest past the bound) and marks
  the connection as reconnecting; nothing is lost while credentials do not exist yet (Go
  discarded those events at flush);
* after a reconnect or a drop, the buffer is sent and **then** the current condition snapshot
  of every owned resource: an outage that overflowed the buffer still leaves the control plane
  with the true final state as its last word (Go had no such re-sync).

**Reporter**: one ``ConditionTransition`` event per condition that is new or changed status,
reason or message in a reconcile. The eventKey is Go's
``condition/<apiVersion>/<kind>/<namespace|_>/<name>/<uid|_>/<type>/<status>@<generation>`` plus
``#<lastTransitionTime as Unix seconds>``: the control plane keeps the first event per key, so
without the suffix a True -> False -> True flap at one generation would be deduplicated away.
``lastTransitionTime`` has whole seconds only, so a flap *within one second* would still repeat
the first key: :class:`TransitionKeys` counts transitions to the same status in the same second
and appends ``.<n>`` from the second one on (``...#1767225600.1``). Re-sending an unchanged
condition (a repeated report, the snapshot) yields the key it was last sent with and is
deduplicated. A change of reason or message alone (same status, so the same
``lastTransitionTime``) is reported too and counted the same way, so it gets ``.<n>`` as well
(Go reported status changes only). The count lives in memory: after a restart the snapshot of
a condition last keyed ``.<n>`` goes out under the plain key, which the control plane already
holds from the first transition (docs/pull-mode.md, "eventKey").
"""

from __future__ import annotations

import asyncio
import datetime
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable

import attrs
import structlog

from vworkspace.agent.metrics import CONNECTED, RECONNECTING, AgentMetrics
from vworkspace.agent.wire import AppliedRef, format_time
from vworkspace.api.conditions import Condition
from vworkspace.api.converter import format_time as format_condition_time
from vworkspace.api.converter import from_dict
from vworkspace.api.jsontypes import JsonObj
from vworkspace.kube.clock import Clock

_log = structlog.get_logger("vworkspace.agent.events")


def event_key(obj: JsonObj, cond: Condition) -> str:
    meta = obj.get("metadata") or {}
    generation = int(meta.get("generation") or 0)
    stamp = int(cond.last_transition_time.timestamp())
    namespace = meta.get("namespace") or "_"
    uid = meta.get("uid") or "_"
    ref = f"{obj.get('apiVersion')}/{obj.get('kind')}/{namespace}/{meta.get('name')}/{uid}"
    return f"condition/{ref}/{cond.type}/{cond.status.value}@{generation}#{stamp}"


class TransitionKeys:
    """Event keys unique per transition, equal for repeats of the same transition.

    Remembers, per object condition (bounded, least recently used evicted), the last key sent
    and how often each (status, generation) was entered in the current second."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, _KeyEntry] = OrderedDict()

    def key(self, obj: JsonObj, cond: Condition, *, transition: bool) -> str:
        """``transition``: a new transition (reporter); False for a re-send (snapshot)."""
        base = event_key(obj, cond)
        meta = obj.get("metadata") or {}
        # The object and condition type: the key up to "/<status>@".
        slot = base.split("@", 1)[0].rsplit("/", 1)[0]
        stamp = int(cond.last_transition_time.timestamp())
        keyed = (cond.status.value, int(meta.get("generation") or 0), stamp)
        # A new reason or message at the same status keeps lastTransitionTime, hence the base
        # key: it is told apart by the same ".<n>" count as a same-second flap.
        signature = (*keyed, cond.reason, cond.message)
        entry = self._entries.get(slot)
        if entry is not None and entry.last == signature:
            self._entries.move_to_end(slot)
            return entry.last_key  # the same transition again: the same key
        if not transition:
            return base
        if entry is None or entry.stamp != stamp:
            entry = _KeyEntry(stamp=stamp)
        seen = entry.seen.get(keyed, 0)
        entry.seen[keyed] = seen + 1
        entry.last, entry.last_key = signature, base if seen == 0 else f"{base}.{seen}"
        self._entries[slot] = entry
        self._entries.move_to_end(slot)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
        return entry.last_key


@attrs.define
class _KeyEntry:
    stamp: int
    seen: dict[tuple[str, int, int], int] = attrs.field(factory=dict)
    last: tuple[str, int, int, str, str] | None = None
    last_key: str = ""


def condition_event(
    obj: JsonObj,
    cond: Condition,
    *,
    now: datetime.datetime,
    keys: TransitionKeys | None = None,
    transition: bool = True,
) -> JsonObj:
    wire: JsonObj = {
        "type": cond.type,
        "status": cond.status.value,
        "lastTransitionTime": format_condition_time(cond.last_transition_time),
        "reason": cond.reason,
        "message": cond.message,
    }
    if cond.observed_generation:
        wire["observedGeneration"] = cond.observed_generation
    return {
        "eventKey": keys.key(obj, cond, transition=transition) if keys else event_key(obj, cond),
        "kind": "ConditionTransition",
        "resourceRef": AppliedRef.of(obj).to_wire(),
        "conditions": [wire],
        "timestamp": format_time(now),
    }


def snapshot_events(
    objects: Iterable[JsonObj], *, now: datetime.datetime, keys: TransitionKeys | None = None
) -> list[JsonObj]:
    """The current conditions of ``objects``, as events (keyed as they were last sent)."""
    events = []
    for obj in objects:
        for raw in (obj.get("status") or {}).get("conditions") or []:
            cond = from_dict(Condition, raw)
            events.append(condition_event(obj, cond, now=now, keys=keys, transition=False))
    return events


class EventBatcher:
    def __init__(
        self,
        *,
        post: Callable[[list[JsonObj]], Awaitable[None]],
        ready: Callable[[], bool],
        clock: Clock,
        metrics: AgentMetrics | None = None,
        snapshot: Callable[[], list[JsonObj]] | None = None,
        capacity: int = 1000,
        batch_size: int = 100,
        interval: float = 1.0,
    ) -> None:
        self._post = post
        self._ready = ready
        self._clock = clock
        self._metrics = metrics
        self._snapshot = snapshot
        self.capacity = capacity
        self.batch_size = batch_size
        self.interval = interval
        self._buffer: deque[JsonObj] = deque()
        self.dropped = 0
        self._wake = asyncio.Event()
        self.keys = TransitionKeys()
        # Supplemental events still waiting (buffered or being posted) -> their callback.
        self._callbacks: dict[str, Callable[[], None]] = {}
        # A new leader does not know what its predecessor delivered (a SIGKILLed Pod loses its
        # buffer): start with the snapshot too. Unchanged conditions deduplicate by key.
        self._needs_resync = snapshot is not None

    # -- reporter side ---------------------------------------------------------------------

    def report(self, obj: JsonObj, transitions: list[Condition]) -> None:
        now = self._clock.now()
        for cond in transitions:
            self.enqueue(condition_event(obj, cond, now=now, keys=self.keys))

    def deliver(self, event: JsonObj, on_delivered: Callable[[], None]) -> None:
        """Send a supplemental event; ``on_delivered`` runs once the control plane accepted
        it. A dropped event is forgotten (no longer :meth:`pending`), so its owner re-sends."""
        self.enqueue(event)
        self._callbacks[event["eventKey"]] = on_delivered

    def pending(self, event_key: str) -> bool:
        return event_key in self._callbacks

    def _forget(self, event: JsonObj) -> None:
        self._callbacks.pop(event.get("eventKey") or "", None)

    def enqueue(self, event: JsonObj) -> None:
        if len(self._buffer) >= self.capacity:
            self._forget(self._buffer.popleft())
            self._count_drop()
        self._buffer.append(event)
        self._occupancy()
        if len(self._buffer) >= self.batch_size:
            self._wake.set()

    @property
    def overflowing(self) -> bool:
        return self.dropped > 0

    def __len__(self) -> int:
        return len(self._buffer)

    def _count_drop(self, count: int = 1) -> None:
        self.dropped += count
        # Dropped events leave the control plane with a stale view: re-send the snapshot.
        self._needs_resync = True
        if self._metrics:
            self._metrics.events_dropped.inc(count)

    def _occupancy(self) -> None:
        if self._metrics:
            self._metrics.buffer_occupancy.set(len(self._buffer))

    # -- sending ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                sleeper = asyncio.ensure_future(self._clock.sleep(self.interval))
                woken = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait({sleeper, woken, stopping}, return_when=asyncio.FIRST_COMPLETED)
                sleeper.cancel()
                woken.cancel()
                self._wake.clear()
                await self.flush()
        finally:
            stopping.cancel()
        await self.flush()  # one last flush on shutdown

    async def flush(self) -> bool:
        """Send what is waiting, then, after a reconnect or a drop, the snapshot. False when a
        POST failed.

        The snapshot goes *last*: the control plane takes the latest arrival as the truth, and
        the buffer still holds older transitions. Sent first, the snapshot's current condition
        would be followed by those older events, and its key, equal to the final transition's
        key still in the buffer, would make the control plane drop that final event as a
        duplicate: its last word would be the stale one before it."""
        if not self._ready():
            return True  # keep everything until credentials exist
        while self._buffer:
            batch = [self._buffer.popleft() for _ in range(min(self.batch_size, len(self._buffer)))]
            if not await self._send(batch):
                self._requeue(batch)
                return False
        self._occupancy()
        if self._needs_resync and self._snapshot is not None:
            snapshot = self._snapshot()
            for start in range(0, len(snapshot), self.batch_size):
                if not await self._send(snapshot[start : start + self.batch_size]):
                    return False
            self._needs_resync = False
            _log.info("re-sent the condition snapshot after reconnecting", events=len(snapshot))
        self.dropped_reset_if_drained()
        return True

    def dropped_reset_if_drained(self) -> None:
        if not self._buffer and self.dropped:
            _log.info("event buffer drained after overflow", dropped=self.dropped)
            self.dropped = 0

    async def _send(self, batch: list[JsonObj]) -> bool:
        try:
            await self._post(batch)
        except Exception as err:  # any failure: keep the events, retry next tick
            _log.warning("posting events failed; keeping them", error=str(err), events=len(batch))
            self._needs_resync = True
            if self._metrics:
                self._metrics.connectivity.set(RECONNECTING)
            return False
        if self._metrics:
            self._metrics.connectivity.set(CONNECTED)
        for event in batch:
            callback = self._callbacks.pop(event.get("eventKey") or "", None)
            if callback is not None:
                callback()
        return True

    def _requeue(self, batch: list[JsonObj]) -> None:
        self._buffer.extendleft(reversed(batch))
        overflow = len(self._buffer) - self.capacity
        for _ in range(max(0, overflow)):
            self._forget(self._buffer.popleft())
        if overflow > 0:
            self._count_drop(overflow)
        self._occupancy()
