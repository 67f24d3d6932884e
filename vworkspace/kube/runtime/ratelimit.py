"""Per-item exponential backoff for failed reconciles.

client-go's ItemExponentialFailureRateLimiter:

Defaults 5 ms doubling to a cap of 1000 s, as controller-runtime: a key that keeps failing is
retried less and less often, and a success (``forget``) resets it.
"""

from __future__ import annotations

from collections.abc import Hashable


class ItemExponentialBackoff:
    def __init__(self, *, base: float = 0.005, cap: float = 1000.0) -> None:
        if base <= 0 or cap < base:
            raise ValueError("need 0 < base <= cap")
        self.base = base
        self.cap = cap
        self._failures: dict[Hashable, int] = {}

    def when(self, item: Hashable) -> float:
        """The delay before retrying ``item`` now, counting this failure."""
        failures = self._failures.get(item, 0)
        self._failures[item] = failures + 1
        if failures >= 64:  # 2**64 * base overflows any sensible cap
            return self.cap
        return float(min(self.cap, self.base * (2.0**failures)))

    def retries(self, item: Hashable) -> int:
        return self._failures.get(item, 0)

    def forget(self, item: Hashable) -> None:
        self._failures.pop(item, None)
