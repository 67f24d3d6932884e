"""The engines that run, as the controllers ask for them.

The registry knows the catalog (every engine the operator has, engines/catalog.py) and which of
them are registered (their CRDs are served; app/engines.py registers them, at start or later).
The controllers ask only three questions:

* :meth:`EngineRegistry.operation_engine`: the engine an Operation's ``spec.engine`` names, or
  None while it is not registered (the Operation is Blocked ``DependencyMissing``);
* :meth:`EngineRegistry.instance_engine`: the registered engine that claims an instance;
* :meth:`EngineRegistry.instance_engine_missing`: when none does, why (the missing CRDs of the
  catalog's engine that would claim it), the instance's Blocked message.
"""

from __future__ import annotations

from collections.abc import Sequence

from vworkspace.api.applicationinstance import ApplicationInstanceView
from vworkspace.engines.base import InstanceEngine, OperationEngine
from vworkspace.engines.descriptor import (
    AnyDescriptor,
    EngineContext,
    InstanceEngineDescriptor,
    OperationEngineDescriptor,
)

NO_ENGINE = "no engine of this operator renders this ApplicationInstance"


class EngineRegistry:
    """Descriptors of the catalog, and the engines built from those registered so far."""

    def __init__(self, catalog: Sequence[AnyDescriptor] = ()) -> None:
        self.catalog = tuple(catalog)
        self._operations: dict[str, OperationEngine] = {}
        # In catalog order: the first registered engine that claims an instance renders it.
        self._instances: list[tuple[InstanceEngineDescriptor, InstanceEngine]] = []

    def register(self, descriptor: AnyDescriptor, context: EngineContext) -> None:
        """Build the engine of ``descriptor`` and make it available (its CRDs are served)."""
        if isinstance(descriptor, OperationEngineDescriptor):
            self._operations[descriptor.name] = descriptor.build(context)
        else:
            self._instances.append((descriptor, descriptor.build(context)))

    def operation_engine(self, name: str) -> OperationEngine | None:
        return self._operations.get(name)

    def instance_engine(self, ai: ApplicationInstanceView) -> InstanceEngine | None:
        for descriptor, engine in self._instances:
            if descriptor.claims(ai):
                return engine
        return None

    def instance_engine_missing(self, ai: ApplicationInstanceView) -> str:
        """Why no registered engine claims ``ai``: the message of the catalog's engine that
        would (its CRDs are not installed)."""
        for descriptor in self.catalog:
            if isinstance(descriptor, InstanceEngineDescriptor) and descriptor.claims(ai):
                return descriptor.missing
        return NO_ENGINE

    def names(self) -> list[str]:
        """The registered engines' names, sorted (logs, tests)."""
        return sorted([*self._operations, *(d.name for d, _ in self._instances)])
