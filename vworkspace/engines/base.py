"""The engine interface (materialize, status, cancel) and the registry keyed by engine name."""

from __future__ import annotations

import enum
from typing import Any, Protocol

import attrs

JsonObj = dict[str, Any]


class State(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@attrs.frozen
class EngineRequest:
    """What an engine acts for: the target ApplicationInstance, and the Operation if any."""

    target: JsonObj
    operation: JsonObj | None = None


@attrs.frozen
class EngineRef:
    kind: str
    name: str
    namespace: str


@attrs.frozen
class EngineStatus:
    state: State
    reason: str = ""
    message: str = ""
    outputs: dict[str, str] = attrs.field(factory=dict)

    @property
    def done(self) -> bool:
        return self.state in (State.SUCCEEDED, State.FAILED)


class EngineError(Exception):
    """Materializing or reading the engine's objects failed in a way retrying will not fix."""


class Engine(Protocol):
    name: str

    async def materialize(self, request: EngineRequest) -> EngineRef: ...

    async def status(self, request: EngineRequest) -> EngineStatus: ...

    async def cancel(self, request: EngineRequest) -> None: ...


class EngineRegistry:
    def __init__(self) -> None:
        self._engines: dict[str, Engine] = {}

    def register(self, engine: Engine) -> None:
        self._engines[engine.name] = engine

    def get(self, name: str) -> Engine | None:
        return self._engines.get(name)

    def names(self) -> list[str]:
        return sorted(self._engines)
