"""Typed, read-only views over objects as they come off the wire.

An object enters the operator once, as JSON (an informer's list or watch, a GET, an apply's
answer), and is kept as that dict: the informer's store holds 10,000 of them and a copy into
attrs models would double the memory. A view is a slotted wrapper (one pointer) around the
stored dict that reads fields on demand with the defaults the CRD schema gives, so reconcilers
and engines say ``op.target_name`` instead of ``((op.get("spec") or {}).get("targetRef") or
{}).get("name") or ""``. Creating a view copies nothing; it is as cheap as the dict lookup that
found the object.

Views never write: the stored dict is shared with the cache, and a reconciler that mutated it
would change what the next reconcile reads. Writes build new JSON (a status, an apply body) and
go through the API; :attr:`ObjectView.raw` is the stored dict for the few places that hand it
on unchanged (an owner reference, a trace record, ``update_status``'s optimistic-lock
baseline). The attrs models beside each view (``api/operation.py`` etc.) stay what generates
the CRDs and validates what the agent applies.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, TypeVar

from vworkspace.api.conditions import Condition, ConditionStatus
from vworkspace.api.converter import from_dict, parse_time
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey

__all__ = ["ObjectView", "OwnerRefView", "mapping", "time_field", "view_or_none"]

_EMPTY: Mapping[str, Any] = {}


def mapping(value: Any) -> Mapping[str, Any]:
    """``value`` when it is an object, else an empty one (absent, null or a wrong type)."""
    return value if isinstance(value, dict) else _EMPTY


class OwnerRefView:
    """One ``metadata.ownerReferences`` entry."""

    __slots__ = ("_ref",)

    def __init__(self, ref: Mapping[str, Any]) -> None:
        self._ref = ref

    @property
    def kind(self) -> str:
        return str(self._ref.get("kind") or "")

    @property
    def name(self) -> str:
        return str(self._ref.get("name") or "")

    @property
    def uid(self) -> str:
        return str(self._ref.get("uid") or "")

    @property
    def controller(self) -> bool:
        return self._ref.get("controller") is True


class ObjectView:
    """Metadata, spec and status of any object, read-only. Subclasses add their kind's fields."""

    __slots__ = ("_obj",)

    def __init__(self, obj: JsonObj) -> None:
        self._obj = obj

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.kind} {self.key})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectView) and other._obj == self._obj

    __hash__ = None  # type: ignore[assignment]  # a view of a mutable dict is not hashable

    # -- the stored object -------------------------------------------------------------------

    @property
    def raw(self) -> JsonObj:
        """The stored dict itself (not a copy): never mutate it."""
        return self._obj

    @property
    def api_version(self) -> str:
        return str(self._obj.get("apiVersion") or "")

    @property
    def kind(self) -> str:
        return str(self._obj.get("kind") or "")

    # -- metadata ----------------------------------------------------------------------------

    @property
    def metadata(self) -> Mapping[str, Any]:
        return mapping(self._obj.get("metadata"))

    @property
    def name(self) -> str:
        return str(self.metadata.get("name") or "")

    @property
    def namespace(self) -> str | None:
        return self.metadata.get("namespace") or None

    @property
    def key(self) -> ObjectKey:
        return ObjectKey(self.namespace, self.name)

    @property
    def uid(self) -> str:
        return str(self.metadata.get("uid") or "")

    @property
    def resource_version(self) -> str:
        return str(self.metadata.get("resourceVersion") or "")

    @property
    def generation(self) -> int | None:
        value = self.metadata.get("generation")
        return value if isinstance(value, int) else None

    @property
    def labels(self) -> Mapping[str, str]:
        return mapping(self.metadata.get("labels"))

    @property
    def annotations(self) -> Mapping[str, str]:
        return mapping(self.metadata.get("annotations"))

    @property
    def finalizers(self) -> tuple[str, ...]:
        return tuple(self.metadata.get("finalizers") or ())

    def has_finalizer(self, finalizer: str) -> bool:
        return finalizer in (self.metadata.get("finalizers") or ())

    @property
    def deleting(self) -> bool:
        """``metadata.deletionTimestamp`` is set."""
        return bool(self.metadata.get("deletionTimestamp"))

    @property
    def owner_references(self) -> tuple[OwnerRefView, ...]:
        return tuple(OwnerRefView(r) for r in self.metadata.get("ownerReferences") or ())

    def owned_by(self, *, kind: str, name: str) -> bool:
        return any(r.kind == kind and r.name == name for r in self.owner_references)

    # -- spec and status ---------------------------------------------------------------------

    @property
    def spec(self) -> Mapping[str, Any]:
        return mapping(self._obj.get("spec"))

    @property
    def status(self) -> Mapping[str, Any]:
        return mapping(self._obj.get("status"))

    def status_copy(self) -> JsonObj:
        """A shallow copy of ``status`` to build the next status from."""
        return dict(self.status)

    @property
    def conditions(self) -> tuple[Condition, ...]:
        return tuple(from_dict(Condition, c) for c in self.status.get("conditions") or ())

    def condition(self, type_: str) -> Mapping[str, Any] | None:
        """The raw condition of ``type_`` (cheap: no model decoding)."""
        for cond in self.status.get("conditions") or ():
            if isinstance(cond, dict) and cond.get("type") == type_:
                return cond
        return None

    def condition_true(self, type_: str) -> bool:
        cond = self.condition(type_)
        return cond is not None and cond.get("status") == ConditionStatus.TRUE

    @property
    def observed_generation(self) -> int | None:
        value = self.status.get("observedGeneration")
        return value if isinstance(value, int) else None


def time_field(value: Any) -> datetime.datetime | None:
    """An RFC 3339 timestamp field, or None when unset or unreadable."""
    if not value:
        return None
    try:
        return parse_time(value)
    except (TypeError, ValueError):
        return None


V = TypeVar("V", bound=ObjectView)


def view_or_none(cls: type[V], obj: JsonObj | None) -> V | None:
    """``cls(obj)``, or None for None (a cache miss)."""
    return None if obj is None else cls(obj)
