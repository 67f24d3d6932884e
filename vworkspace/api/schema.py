"""Declaring API fields once, and turning the attrs models into OpenAPI v3 schemas.

A model field is an ordinary attrs field made with :func:`field`, which records the validation
the CRD schema should carry (enum values come from the field's ``StrEnum`` type, so they need no
repeating). Its description is the *attribute docstring*, the string literal written under the
field, read from the class source with :mod:`ast` (as Sphinx does): the text a Python reader sees
in the code is the text ``kubectl explain`` shows. A field without a docstring is an error, so
no field reaches the CRD undocumented.

Trade-off: reading docstrings needs the source files, which every install of this package has;
schema generation runs at build time (``python -m vworkspace manifests crds``), never at runtime.
"""

from __future__ import annotations

import ast
import datetime
import enum
import functools
import inspect
import itertools
import textwrap
import types
import typing
from collections.abc import Mapping
from typing import Any

import attrs

SCHEMA_KEY = "vworkspace.api.schema"

JsonSchema = dict[str, Any]


class FreeForm(dict[str, Any]):
    """Marker type: a free-form JSON object (``x-kubernetes-preserve-unknown-fields``)."""


@attrs.frozen
class FieldSchema:
    """What the CRD schema says about one field beyond its type."""

    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    minimum: int | None = None
    crd_default: Any = None
    list_map_keys: tuple[str, ...] = ()
    wire_name: str | None = None


def field(
    *,
    default: Any = attrs.NOTHING,
    factory: Any = None,
    min_length: int | None = None,
    max_length: int | None = None,
    pattern: str | None = None,
    minimum: int | None = None,
    crd_default: Any = None,
    list_map_keys: tuple[str, ...] = (),
    wire_name: str | None = None,
) -> Any:
    """An attrs field carrying CRD validation. No default means *required* in the schema."""
    meta = FieldSchema(
        min_length=min_length,
        max_length=max_length,
        pattern=pattern,
        minimum=minimum,
        crd_default=crd_default,
        list_map_keys=list_map_keys,
        wire_name=wire_name,
    )
    if factory is not None:
        return attrs.field(factory=factory, metadata={SCHEMA_KEY: meta}, kw_only=True)
    return attrs.field(default=default, metadata={SCHEMA_KEY: meta}, kw_only=True)


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def wire_name(a: attrs.Attribute[Any]) -> str:
    meta: FieldSchema | None = a.metadata.get(SCHEMA_KEY)
    if meta is not None and meta.wire_name:
        return meta.wire_name
    return camel(a.name)


def _clean(doc: str) -> str:
    return " ".join(inspect.cleandoc(doc).split())


@functools.cache
def attribute_docs(cls: type) -> Mapping[str, str]:
    """The attribute docstrings of ``cls`` (and its attrs bases), by attribute name."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not attrs.has(klass):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        body = tree.body[0].body  # type: ignore[attr-defined]
        for stmt, nxt in itertools.pairwise(body):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[stmt.target.id] = _clean(nxt.value.value)
    return docs


def class_doc(cls: type) -> str:
    return _clean(cls.__doc__ or "")


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def type_schema(tp: Any) -> JsonSchema:
    """The OpenAPI schema of a Python type used in the models."""
    tp, _ = _unwrap_optional(tp)
    origin = typing.get_origin(tp)
    if tp is FreeForm:
        return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"type": "string", "enum": [m.value for m in tp]}
    if tp is str:
        return {"type": "string"}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer", "format": "int64"}
    if tp is datetime.datetime:
        return {"type": "string", "format": "date-time"}
    if origin is tuple:
        item, *rest = typing.get_args(tp)
        if rest != [Ellipsis]:
            raise TypeError(f"only homogeneous tuples (tuple[X, ...]) are supported, not {tp}")
        return {"type": "array", "items": type_schema(item)}
    if origin in (dict, Mapping):
        key, value = typing.get_args(tp)
        if key is not str:
            raise TypeError(f"object keys must be strings, not {key}")
        return {"type": "object", "additionalProperties": type_schema(value)}
    if attrs.has(tp):
        return object_schema(tp)
    raise TypeError(f"no schema for type {tp!r}")


def object_schema(cls: type) -> JsonSchema:
    """The schema of an attrs model: properties, required keys and descriptions."""
    hints = typing.get_type_hints(cls)
    docs = attribute_docs(cls)
    properties: dict[str, JsonSchema] = {}
    required: list[str] = []
    for a in attrs.fields(cls):
        doc = docs.get(a.name)
        if not doc:
            raise ValueError(
                f"{cls.__qualname__}.{a.name} has no docstring (it becomes the CRD description)"
            )
        schema = {"description": doc, **type_schema(hints[a.name])}
        meta: FieldSchema | None = a.metadata.get(SCHEMA_KEY)
        if meta is not None:
            schema.update(_constraints(meta, schema))
        name = wire_name(a)
        properties[name] = schema
        if a.default is attrs.NOTHING:
            required.append(name)
    result: JsonSchema = {"type": "object", "properties": properties}
    if required:
        result["required"] = required
    return result


def _constraints(meta: FieldSchema, schema: JsonSchema) -> JsonSchema:
    extra: JsonSchema = {}
    if meta.min_length is not None:
        extra["minLength"] = meta.min_length
    if meta.max_length is not None:
        extra["maxLength"] = meta.max_length
    if meta.pattern is not None:
        extra["pattern"] = meta.pattern
    if meta.minimum is not None:
        extra["minimum"] = meta.minimum
    if meta.crd_default is not None:
        extra["default"] = meta.crd_default
    if meta.list_map_keys:
        if schema.get("type") != "array":
            raise TypeError("list_map_keys applies to arrays only")
        extra["x-kubernetes-list-type"] = "map"
        extra["x-kubernetes-list-map-keys"] = list(meta.list_map_keys)
    return extra
