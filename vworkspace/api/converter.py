"""The one converter between API models and wire dictionaries (cattrs).

* Field names are camelCase on the wire (``catalog_id`` <-> ``catalogId``).
* Unset fields (None, empty lists and maps, false) are omitted when writing, like Go's
  ``omitempty``; meaningful defaults (apiVersion, kind, ``mode: managed``) are always written.
* Unknown keys are ignored when reading, so a newer server or CRD never breaks an older operator.
* Timestamps are RFC 3339 in UTC with second precision, as Kubernetes stores them.
* Tuples (immutable lists in the frozen models) become JSON lists.

Built once per process by :func:`converter`; it holds no state beyond its hooks.
"""

from __future__ import annotations

import datetime
import enum
import functools
from collections.abc import Mapping
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from vworkspace.api.schema import FreeForm, camel, wire_name

T = TypeVar("T")


def format_time(value: datetime.datetime) -> str:
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: API timestamps must be timezone-aware")
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any, _: Any = None) -> datetime.datetime:
    if isinstance(value, datetime.datetime):
        parsed = value
    else:
        parsed = datetime.datetime.fromisoformat(str(value))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.astimezone(datetime.UTC)


def _omit_when_default(a: attrs.Attribute[Any]) -> bool:
    """Omit a field on write when it holds its default *and* that default means "unset"
    (None, empty, false). Meaningful defaults such as apiVersion, kind or mode are always
    written, so a written object is explicit about them."""
    default: Any = a.default
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        default = default.factory()
    return default is None or default is False or default in ("", (), {}, [])


def _unstructure_factory(conv: cattrs.Converter) -> Any:
    def factory(cls: type) -> Any:
        overrides: dict[str, Any] = {
            a.name: override(rename=wire_name(a), omit_if_default=_omit_when_default(a))
            for a in attrs.fields(cls)
        }
        return make_dict_unstructure_fn(cls, conv, **overrides)

    return factory


def _structure_factory(conv: cattrs.Converter) -> Any:
    def factory(cls: type) -> Any:
        overrides: dict[str, Any] = {
            a.name: override(rename=wire_name(a)) for a in attrs.fields(cls)
        }
        return make_dict_structure_fn(cls, conv, **overrides)

    return factory


@functools.cache
def converter() -> cattrs.Converter:
    """The process-wide converter (pure; built on first use)."""
    conv = cattrs.Converter(unstruct_collection_overrides={tuple: list})
    conv.register_unstructure_hook(datetime.datetime, format_time)
    conv.register_structure_hook(datetime.datetime, parse_time)
    # Plain values on the wire: StrEnum members are str subclasses that YAML dumpers reject.
    conv.register_unstructure_hook(enum.StrEnum, lambda v: v.value)
    conv.register_unstructure_hook(FreeForm, dict)
    conv.register_structure_hook(FreeForm, lambda value, _: FreeForm(value))
    conv.register_unstructure_hook_factory(attrs.has, _unstructure_factory(conv))
    conv.register_structure_hook_factory(attrs.has, _structure_factory(conv))
    return conv


def to_dict(obj: Any) -> dict[str, Any]:
    """A model as its wire dictionary."""
    result: dict[str, Any] = converter().unstructure(obj)
    return result


def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """A model from a wire dictionary. Raises cattrs' ClassValidationError for wrong shapes."""
    return converter().structure(dict(data), cls)


def describe_error(exc: BaseException) -> list[str]:
    """Readable messages for a failed :func:`from_dict`, naming fields by their wire path,
    e.g. ``required field missing @ $.spec.appRef.catalogId``."""
    if not isinstance(exc, cattrs.BaseValidationError):
        return [str(exc)]
    messages = []
    for message in cattrs.transform_error(exc):
        text, sep, path = message.rpartition(" @ ")
        if sep:
            path = ".".join(camel(part) for part in path.split("."))
            message = f"{text} @ {path}"
        messages.append(message)
    return messages
