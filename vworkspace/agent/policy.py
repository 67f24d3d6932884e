"""The cluster's own limits on what jobs may do, which the control plane cannot override
(docs/operations.md, "Hardening", "Local policy").

Checked by the applier on the object a job is about to write or delete, after the signature
check and in addition to the kind allow-list. Each rule is off (``None``: anything the
allow-list allows) unless configured:

* ``namespaces``: shell-style globs (``team-*``) for every namespace a job touches: the object's
  namespace, an ApplicationInstance's ``spec.release.namespace``, the name of a Namespace object,
  the namespace of a delete;
* ``catalog_ids``: ApplicationInstance ``spec.appRef.catalogId``;
* ``chart_sources``: URL prefixes for ApplicationInstance ``spec.chart.url``; a prefix matches at
  a boundary only (the URL equals it, or the prefix ends with ``/``, or the URL continues with
  ``/``), so ``https://charts.example.com`` does not admit ``https://charts.example.com.evil.io``;
* ``operation_types`` / ``engines``: Operation ``spec.type`` / ``spec.engine``.

A violation is a :class:`PolicyError` naming the rule (its flag) and the value; a value of the
wrong type counts as not allowed. The trade-off: the policy sees only what a job writes, so an
ApplicationInstance that already exists keeps running even if the policy is narrowed later.
"""

from __future__ import annotations

import fnmatch
from typing import Any

import attrs

from vworkspace.api import constants

JsonObj = dict[str, Any]


class PolicyError(Exception):
    """A job outside the local policy; ``rule`` is the metric label (``policy_<rule>``)."""

    def __init__(self, message: str, *, rule: str) -> None:
        super().__init__(message)
        self.rule = rule


Rule = tuple[str, ...] | None


@attrs.frozen
class Policy:
    namespaces: Rule = None
    catalog_ids: Rule = None
    chart_sources: Rule = None
    operation_types: Rule = None
    engines: Rule = None

    @property
    def restricted(self) -> bool:
        return any(
            rule is not None
            for rule in (
                self.namespaces,
                self.catalog_ids,
                self.chart_sources,
                self.operation_types,
                self.engines,
            )
        )

    def check_namespace(self, namespace: Any) -> None:
        if self.namespaces is None or namespace in (None, ""):
            return
        if not isinstance(namespace, str) or not any(
            fnmatch.fnmatchcase(namespace, glob) for glob in self.namespaces
        ):
            _deny("namespace", "namespaces", namespace, self.namespaces)

    def check_object(self, group: str, kind: str, obj: JsonObj) -> None:
        """Every rule that applies to an object about to be written."""
        meta = _dict(obj.get("metadata"))
        if (group, kind) == ("", "Namespace"):
            self.check_namespace(meta.get("name"))
            return
        self.check_namespace(meta.get("namespace"))
        spec = _dict(obj.get("spec"))
        if (group, kind) == (constants.APPS_GROUP, "ApplicationInstance"):
            self._check_instance(spec)
        elif (group, kind) == (constants.OPS_GROUP, "Operation"):
            types = self.operation_types
            _check_exact("operation type", "operation-types", spec.get("type"), types)
            _check_exact("engine", "engines", spec.get("engine"), self.engines)

    def _check_instance(self, spec: JsonObj) -> None:
        release = spec.get("release")
        if isinstance(release, dict):
            self.check_namespace(release.get("namespace"))
        app_ref = spec.get("appRef")
        catalog_id = app_ref.get("catalogId") if isinstance(app_ref, dict) else None
        _check_exact("catalog id", "catalog-ids", catalog_id, self.catalog_ids)
        chart = spec.get("chart")
        if self.chart_sources is not None and chart is not None:
            url = chart.get("url") if isinstance(chart, dict) else None
            if not isinstance(url, str) or not any(
                _prefix_match(url, prefix) for prefix in self.chart_sources
            ):
                _deny("chart source", "chart-sources", url, self.chart_sources)


def _dict(value: Any) -> JsonObj:
    return value if isinstance(value, dict) else {}


def _prefix_match(url: str, prefix: str) -> bool:
    if not url.startswith(prefix):
        return False
    return len(url) == len(prefix) or prefix.endswith("/") or url[len(prefix)] == "/"


def _check_exact(what: str, flag: str, value: Any, allowed: Rule) -> None:
    if allowed is not None and value not in allowed:
        _deny(what, flag, value, allowed)


def _deny(what: str, flag: str, value: Any, allowed: tuple[str, ...]) -> None:
    shown = f'"{value}"' if isinstance(value, str) else "missing" if value is None else repr(value)
    listed = ", ".join(allowed) or "nothing"
    raise PolicyError(
        f"policy: {what} {shown} is not allowed by --agent-allowed-{flag} ({listed})",
        rule=flag.replace("-", "_"),
    )


def parse_list(values: list[str]) -> Rule:
    """Repeatable, comma-separated flag values -> a rule; no values at all -> None (allow all).
    An explicitly empty value (``--agent-allowed-namespaces ''``) allows nothing."""
    if not values:
        return None
    return tuple(item.strip() for value in values for item in value.split(",") if item.strip())
