"""Label and field selectors, the subset the API server's list and watch accept that the
operator and its tests use.

Label selectors: ``key=value``, ``key==value``, ``key!=value``, ``key`` (exists), ``!key`` (does
not exist), ``key in (a,b)`` and ``key notin (a,b)``, joined by commas. Field selectors:
``metadata.name`` and ``metadata.namespace`` with ``=``, ``==`` and ``!=``. Anything else is a
:class:`SelectorError` (the fake answers 400, as the API server does for what it cannot parse).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from vworkspace.api.jsontypes import JsonObj

Selector = Callable[[JsonObj], bool]

_SET = re.compile(r"^\s*([^\s!=(),]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_FIELDS = {"metadata.name": "name", "metadata.namespace": "namespace"}


class SelectorError(ValueError):
    """A selector the fake cannot read."""


def _split(text: str) -> list[str]:
    """Split at the commas outside parentheses (``a in (x,y),b`` is two requirements)."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return [part.strip() for part in parts if part.strip()]


def _requirement(text: str) -> Callable[[dict[str, str]], bool]:
    if match := _SET.match(text):
        key, op, values = (
            match.group(1),
            match.group(2),
            {v.strip() for v in match.group(3).split(",") if v.strip()},
        )
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    for op in ("!=", "==", "="):
        if op in text:
            key, _, value = (part.strip() for part in text.partition(op))
            if not key:
                raise SelectorError(f"label selector {text!r}")
            if op == "!=":
                return lambda labels: labels.get(key) != value
            return lambda labels: labels.get(key) == value
    if text.startswith("!"):
        key = text[1:].strip()
        return lambda labels: key not in labels
    if not text or any(c in text for c in " ()"):
        raise SelectorError(f"label selector {text!r}")
    return lambda labels: text in labels


def label_selector(text: str) -> Selector:
    """The predicate of a label selector (every requirement must hold)."""
    requirements = [_requirement(part) for part in _split(text)]

    def matches(obj: JsonObj) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(requirement(labels) for requirement in requirements)

    return matches


def _field_check(attr: str, value: str, *, negate: bool) -> Selector:
    def check(obj: JsonObj) -> bool:
        return (((obj.get("metadata") or {}).get(attr) or "") == value) != negate

    return check


def field_selector(text: str) -> Selector:
    """The predicate of a field selector on ``metadata.name`` / ``metadata.namespace``."""
    checks: list[Selector] = []
    for part in _split(text):
        op = "!=" if "!=" in part else "==" if "==" in part else "="
        field, _, value = (p.strip() for p in part.partition(op))
        if field not in _FIELDS:
            raise SelectorError(f"field selector {part!r}: only {sorted(_FIELDS)}")
        checks.append(_field_check(_FIELDS[field], value, negate=op == "!="))
    return lambda obj: all(check(obj) for check in checks)


def selector(query: dict[str, str]) -> Selector:
    """The predicate of a list or watch query's ``labelSelector`` and ``fieldSelector``."""
    labels = label_selector(query["labelSelector"]) if query.get("labelSelector") else None
    fields = field_selector(query["fieldSelector"]) if query.get("fieldSelector") else None
    return lambda obj: (labels is None or labels(obj)) and (fields is None or fields(obj))
