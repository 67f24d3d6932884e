"""The one narrow interface from controllers to the agent: condition transitions.

Controllers call ``report`` after each status write with the conditions that are new or changed
status; the agent's event batcher implements it (structurally, so controllers never import the
agent). Without the agent, transitions go nowhere.
"""

from __future__ import annotations

from typing import Any, Protocol

from vworkspace.api.conditions import Condition


class StatusReporter(Protocol):
    def report(self, obj: dict[str, Any], transitions: list[Condition]) -> None: ...


class NullReporter:
    def report(self, obj: dict[str, Any], transitions: list[Condition]) -> None:
        return None
