"""A work queue of keys, not events (client-go's workqueue semantics, for asyncio).

* **Dedup.** A key is queued at most once (the *dirty* set). A key being processed is not handed
  to a second worker; if it is added meanwhile it is queued again when the first worker calls
  :meth:`done` (the *processing* set). So one object is never reconciled concurrently, and a burst
  of events for it collapses into one reconcile.
* **Two priorities.** Keys from an informer's initial list are queued behind live changes, so a
  restart with thousands of objects does not delay a change someone just made.
* **Delays.** :meth:`add_after` holds a key until its time; a second ``add_after`` keeps the
  earlier time. :meth:`add_rate_limited` delays by the per-key exponential backoff;
  :meth:`forget` resets it.
* **Shutdown.** :meth:`shutdown` stops handing out work (waiting ``get`` calls return None) and
  :meth:`wait_idle` waits for the keys in flight to be marked done.

Time comes from an injected clock, so unit tests run on fake time.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

from vworkspace.kube.clock import Clock, RealClock
from vworkspace.kube.metrics import QueueMetrics
from vworkspace.kube.runtime.ratelimit import ItemExponentialBackoff

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(
        self,
        name: str,
        *,
        clock: Clock | None = None,
        backoff: ItemExponentialBackoff | None = None,
        metrics: QueueMetrics | None = None,
    ) -> None:
        self.name = name
        self._clock = clock or RealClock()
        self._backoff = backoff or ItemExponentialBackoff()
        self._metrics = metrics
        self._high: deque[K] = deque()
        self._low: deque[K] = deque()
        self._dirty: dict[K, bool] = {}  # key -> low priority?
        self._processing: set[K] = set()
        self._added_at: dict[K, float] = {}
        self._delayed: list[tuple[float, int, K]] = []
        self._ready_at: dict[K, float] = {}
        self._seq = itertools.count()
        self._changed = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._shutting_down = False

    # -- adding ----------------------------------------------------------------------------

    def add(self, key: K, *, low_priority: bool = False) -> None:
        if self._shutting_down:
            return
        if key in self._dirty:
            if self._dirty[key] and not low_priority:  # promote: a live change beats a relist
                self._dirty[key] = False
                if key in self._low:
                    self._low.remove(key)
                    self._high.append(key)
            return
        self._dirty[key] = low_priority
        if self._metrics:
            self._metrics.adds.inc()
        if key in self._processing:
            return  # queued again by done()
        self._added_at[key] = self._clock.monotonic()
        (self._low if low_priority else self._high).append(key)
        self._update_depth()
        self._changed.set()

    def add_after(self, key: K, delay: float) -> None:
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(key)
            return
        ready = self._clock.monotonic() + delay
        if key in self._ready_at and self._ready_at[key] <= ready:
            return
        self._ready_at[key] = ready
        heapq.heappush(self._delayed, (ready, next(self._seq), key))
        self._changed.set()

    def add_rate_limited(self, key: K) -> None:
        if self._metrics:
            self._metrics.retries.inc()
        self.add_after(key, self._backoff.when(key))

    def forget(self, key: K) -> None:
        self._backoff.forget(key)

    def num_requeues(self, key: K) -> int:
        return self._backoff.retries(key)

    # -- taking ----------------------------------------------------------------------------

    async def get(self) -> K | None:
        """The next key to process, or None once the queue is shut down."""
        while True:
            if self._shutting_down:
                return None
            self._promote_due()
            queue = self._high or self._low
            if queue:
                key = queue.popleft()
                self._dirty.pop(key, None)
                self._processing.add(key)
                self._idle.clear()
                if self._metrics:
                    added = self._added_at.pop(key, self._clock.monotonic())
                    self._metrics.queue_duration.observe(self._clock.monotonic() - added)
                self._update_depth()
                return key
            self._changed.clear()
            await self._wait_for_change()

    def done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._dirty and not self._shutting_down:
            self._added_at[key] = self._clock.monotonic()
            (self._low if self._dirty[key] else self._high).append(key)
            self._update_depth()
            self._changed.set()
        if not self._processing:
            self._idle.set()

    def _promote_due(self) -> None:
        now = self._clock.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            ready, _, key = heapq.heappop(self._delayed)
            if self._ready_at.get(key) != ready:
                continue  # superseded by an earlier add_after
            del self._ready_at[key]
            self.add(key)

    async def _wait_for_change(self) -> None:
        changed: asyncio.Future[object] = asyncio.ensure_future(self._changed.wait())
        waiters: set[asyncio.Future[object]] = {changed}
        if self._delayed:
            delay = self._delayed[0][0] - self._clock.monotonic()
            waiters.add(asyncio.ensure_future(self._clock.sleep(delay)))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    # -- lifecycle -------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop handing out keys; waiting getters return None. Keys in flight may finish."""
        self._shutting_down = True
        self._changed.set()

    async def wait_idle(self) -> None:
        """Wait until no key is being processed."""
        await self._idle.wait()

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def __len__(self) -> int:
        return len(self._high) + len(self._low)

    @property
    def in_flight(self) -> int:
        """Keys being processed now."""
        return len(self._processing)

    @property
    def pending_delayed(self) -> int:
        return len(self._ready_at)

    def _update_depth(self) -> None:
        if self._metrics:
            self._metrics.depth.set(len(self))
