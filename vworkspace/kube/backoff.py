"""Jittered exponential backoff for reconnect loops (client-go's reflector numbers by default:
0.8 s doubling to 30 s, up to 100 % jitter, reset after 2 minutes without errors)."""

from __future__ import annotations

import random

from vworkspace.kube.clock import Clock


class Backoff:
    def __init__(
        self,
        *,
        clock: Clock,
        rng: random.Random,
        initial: float = 0.8,
        cap: float = 30.0,
        jitter: float = 1.0,
        reset_after: float = 120.0,
    ) -> None:
        self._clock = clock
        self._rng = rng
        self.initial = initial
        self.cap = cap
        self.jitter = jitter
        self.reset_after = reset_after
        self._next = initial
        self._last_failure: float | None = None

    def next_delay(self) -> float:
        """The delay to wait after a failure now (and grow the next one)."""
        now = self._clock.monotonic()
        if self._last_failure is not None and now - self._last_failure > self.reset_after:
            self._next = self.initial
        self._last_failure = now
        base = self._next
        self._next = min(self.cap, self._next * 2)
        return min(self.cap, base * (1 + self.jitter * self._rng.random()))

    def reset(self) -> None:
        self._next = self.initial
        self._last_failure = None
