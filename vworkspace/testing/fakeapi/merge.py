"""The two ways the fake combines a write with the stored object: JSON merge patch (RFC 7386)
and a documented subset of server-side apply.

Server-side apply here (see the package docstring for what is left out):

* a field is a *leaf path*: a scalar, a list, or an empty map, reached through maps. Lists are
  atomic (the applied list replaces the live one), except ``metadata.finalizers``, a set whose
  every item is a field of its own (as the API server's ``listType=set``);
* each field manager owns the fields of what it last applied (:class:`Owners`);
* applying merges the applied object into the live one (maps recursively), removes the fields
  the manager applied before and no longer applies (unless another manager owns them too), and
  takes ownership of what it applies; an applied field that another manager owns with a
  different value is a conflict, unless ``force`` takes it over. Equal values are shared.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from vworkspace.api.jsontypes import JsonObj

Path = tuple[str, ...]
FINALIZERS: Path = ("metadata", "finalizers")

# Identity and server-managed fields: nobody owns them, apply never removes them.
_NOT_FIELDS = frozenset(
    {
        ("apiVersion",),
        ("kind",),
        ("metadata", "name"),
        ("metadata", "namespace"),
        ("metadata", "uid"),
        ("metadata", "resourceVersion"),
        ("metadata", "generation"),
        ("metadata", "creationTimestamp"),
        ("metadata", "deletionTimestamp"),
        ("metadata", "deletionGracePeriodSeconds"),
        ("metadata", "managedFields"),
    }
)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: maps merge key by key, ``null`` removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def fields(obj: JsonObj) -> set[Path]:
    """The leaf paths ``obj`` sets (see the module docstring)."""
    return {path for path in _leaves(obj, ()) if path not in _NOT_FIELDS}


def _leaves(value: Any, prefix: Path) -> Iterator[Path]:
    if prefix == FINALIZERS and isinstance(value, list):
        for item in value:
            yield (*prefix, str(item))
    elif isinstance(value, dict) and value:
        for key, child in value.items():
            yield from _leaves(child, (*prefix, key))
    elif prefix:
        yield prefix


def value_at(obj: Any, path: Path) -> Any:
    """The value at ``path`` (a finalizer path: the finalizer if present); None if absent."""
    if path[:2] == FINALIZERS and len(path) == 3:
        present = path[2] in ((obj.get("metadata") or {}).get("finalizers") or [])
        return path[2] if present else None
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def remove(obj: JsonObj, path: Path) -> None:
    """Remove the field at ``path`` from ``obj`` (in place), and the maps it leaves empty."""
    if path[:2] == FINALIZERS and len(path) == 3:
        meta = obj.get("metadata") or {}
        meta["finalizers"] = [f for f in meta.get("finalizers") or [] if f != path[2]]
        if not meta["finalizers"]:
            del meta["finalizers"]
        return
    parents: list[tuple[JsonObj, str]] = []
    node: Any = obj
    for key in path[:-1]:
        if not isinstance(node, dict) or not isinstance(node.get(key), dict):
            return
        parents.append((node, key))
        node = node[key]
    if isinstance(node, dict):
        node.pop(path[-1], None)
    for parent, key in reversed(parents[1:]):  # keep top-level maps (metadata, spec, status)
        if parent[key]:
            break
        del parent[key]


def merge_applied(live: Any, applied: Any, prefix: Path = ()) -> Any:
    """``applied`` merged into ``live``: maps recursively, lists replaced, finalizers united."""
    if prefix == FINALIZERS and isinstance(live, list) and isinstance(applied, list):
        return [*live, *(f for f in applied if f not in live)]
    if not (isinstance(live, dict) and isinstance(applied, dict)):
        return copy.deepcopy(applied)
    result = dict(live)
    for key, value in applied.items():
        result[key] = merge_applied(live.get(key), value, (*prefix, key))
    return result


class Owners:
    """Which field manager owns which fields of one object (what each last applied)."""

    def __init__(self) -> None:
        self._owned: dict[str, set[Path]] = {}

    def managers(self) -> dict[str, set[Path]]:
        return {manager: set(paths) for manager, paths in self._owned.items()}

    def conflicts(self, live: JsonObj, applied: JsonObj, manager: str) -> list[tuple[str, Path]]:
        """(other manager, field) for every applied field another manager owns with another
        value."""
        found = []
        for path in sorted(fields(applied)):
            for other, paths in sorted(self._owned.items()):
                if (
                    other != manager
                    and path in paths
                    and value_at(live, path) != value_at(applied, path)
                ):
                    found.append((other, path))
        return found

    def applied(self, live: JsonObj, applied: JsonObj, manager: str) -> tuple[JsonObj, Owners]:
        """The object after ``manager`` applies ``applied`` to ``live`` (conflicts forced), and
        the ownership after it (a new :class:`Owners`: this one is unchanged until the caller
        stores both)."""
        wanted = fields(applied)
        merged: JsonObj = merge_applied(copy.deepcopy(live), applied)
        for path in self._owned.get(manager, set()) - wanted:
            if not any(path in paths for other, paths in self._owned.items() if other != manager):
                remove(merged, path)
        after = Owners()
        for other, paths in self._owned.items():
            if other != manager:
                taken = {p for p in wanted if value_at(live, p) != value_at(applied, p)}
                after._owned[other] = paths - taken
        after._owned[manager] = wanted
        return merged, after
