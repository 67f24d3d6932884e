"""A test-only engine, written as any engine of vworkspace/engines/ is: the engine and its
descriptor in one file. ``noop`` carries out an Operation by succeeding at once; it needs no
CRD and watches nothing. tests/unit/test_engine_catalog.py registers it by extending the
catalog, the one line an engine adds besides its own file."""

from __future__ import annotations

from vworkspace.api.operation import OperationView
from vworkspace.engines.base import EngineRef, Observation, OperationRequest, State
from vworkspace.engines.descriptor import OperationEngineDescriptor


class NoopEngine:
    name = "noop"

    def __init__(self) -> None:
        self.seen: list[OperationRequest] = []  # what reached the engine, for the test

    def approval_required(self, op: OperationView) -> bool:
        return False

    def runs_without_target(self, op: OperationView) -> bool:
        return False

    async def materialize(self, request: OperationRequest) -> EngineRef:
        self.seen.append(request)
        op = request.operation
        return EngineRef("noop", op.name, op.namespace or "")

    async def observe(self, request: OperationRequest) -> Observation:
        self.seen.append(request)
        return Observation(State.SUCCEEDED, "EngineCompleted", "nothing to do", {"noop": "done"})

    async def cancel(self, request: OperationRequest) -> None:
        """Nothing was made."""


DESCRIPTOR = OperationEngineDescriptor(name=NoopEngine.name, build=lambda context: NoopEngine())
