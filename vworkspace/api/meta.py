"""Object metadata as the operator reads it: a projection of ``ObjectMeta``, not all of it.

Only the fields the operator looks at are modelled; everything else in ``metadata`` is ignored on
read and never written back (writes go through server-side apply of owned fields).
"""

from __future__ import annotations

import datetime

import attrs


@attrs.frozen
class OwnerReference:
    """An owner of this object."""

    api_version: str
    kind: str
    name: str
    uid: str
    controller: bool | None = None
    block_owner_deletion: bool | None = None


@attrs.frozen
class ObjectMeta:
    """The parts of metadata the operator reads or writes."""

    name: str = ""
    namespace: str | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: datetime.datetime | None = None
    deletion_timestamp: datetime.datetime | None = None
    labels: dict[str, str] = attrs.field(factory=dict)
    annotations: dict[str, str] = attrs.field(factory=dict)
    finalizers: tuple[str, ...] = ()
    owner_references: tuple[OwnerReference, ...] = ()


@attrs.frozen
class ObjectKey:
    """Namespace and name: how the work queues and caches identify an object."""

    namespace: str | None
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name
