"""The one narrow interface from controllers to the agent: condition transitions and
supplemental events.

Controllers call ``report`` after each status write with the conditions that are new or changed
status, reason or message; the agent's event batcher implements it (structurally, so
controllers never import the agent). ``deliver`` hands over a supplemental event
(controllers/supplements.py) with a callback run once the control plane accepted it;
``pending`` says whether an event key is still waiting (buffered or being posted). Without the
agent, transitions and supplements go nowhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from vworkspace.api.conditions import Condition


class StatusReporter(Protocol):
    def report(self, obj: dict[str, Any], transitions: list[Condition]) -> None: ...

    def deliver(self, event: dict[str, Any], on_delivered: Callable[[], None]) -> None: ...

    def pending(self, event_key: str) -> bool: ...


class NullReporter:
    def report(self, obj: dict[str, Any], transitions: list[Condition]) -> None:
        return None

    def deliver(self, event: dict[str, Any], on_delivered: Callable[[], None]) -> None:
        return None

    def pending(self, event_key: str) -> bool:
        return False
