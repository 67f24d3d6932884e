"""The cluster's own limits on what jobs may do, which the control plane cannot override
(docs/operations.md, "Hardening", "Local policy").

Checked by the applier on the object a job is about to write or delete, after the signature
check and in addition to the kind allow-list. Each rule is off (``None``: anything the
allow-list allows) unless configured:

* ``namespaces``: shell-style globs (``team-*``) for every namespace a job touches: the object's
  namespace, an ApplicationInstance's ``spec.release.namespace``, the name of a Namespace object,
  the namespace of a delete. Globs match whole namespace *names* (issue 24, F1): a value that is
  not a valid namespace name (a DNS-1123 label, so no ``/`` and no ``.``) never matches, so
  ``team-b-*`` cannot admit ``team-b-x/../kube-system`` although ``fnmatch``'s ``*`` matches
  ``/``; a glob with a character no namespace name can hold is refused when the flag is parsed;
* ``catalog_ids``: ApplicationInstance ``spec.appRef.catalogId``;
* ``chart_sources``: URL prefixes for ApplicationInstance ``spec.chart.url``, compared as parsed
  URLs (issue 24, F6): scheme and host case-insensitively (default ports dropped), the path
  segment by segment, so a prefix matches at a ``/`` boundary only and
  ``https://charts.example.com`` does not admit ``https://charts.example.com.evil.io``. A URL
  (or prefix) with a dot segment (``..``, ``.``, also percent-encoded as ``%2e``), an encoded
  ``/`` (``%2f``), a backslash, an empty segment, userinfo (``user@``), a query or a fragment is
  refused outright: a chart server or a proxy may resolve those after the policy looked, so
  ``oci://reg.example.com/team-a/../team-b`` does not pass ``oci://reg.example.com/team-a/``;
* ``operation_types`` / ``engines``: Operation ``spec.type`` / ``spec.engine``.

A violation is a :class:`PolicyError` naming the rule (its flag) and the value; a value of the
wrong type counts as not allowed. The trade-off: the policy sees only what a job writes, so an
ApplicationInstance that already exists keeps running even if the policy is narrowed later.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any
from urllib.parse import unquote, urlsplit

import attrs

from vworkspace.api import constants
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.names import is_namespace_name


class PolicyError(Exception):
    """A job outside the local policy; ``rule`` is the metric label (``policy_<rule>``)."""

    def __init__(self, message: str, *, rule: str) -> None:
        super().__init__(message)
        self.rule = rule


Rule = tuple[str, ...] | None
# What a namespace glob may hold: what a namespace name may hold, and fnmatch's * ? [ ] !.
_GLOB_RE = re.compile(r"[-a-z0-9*?\[\]!]+")
_DEFAULT_PORTS = {"https": 443, "http": 80}


def _check_globs(_: object, __: object, rule: Rule) -> None:
    for glob in rule or ():
        if not _GLOB_RE.fullmatch(glob):
            raise ValueError(
                f"--agent-allowed-namespaces: {glob!r} is not a namespace glob: it may hold only "
                "lower case letters, digits, '-' and the glob characters * ? [ ] ! (a namespace "
                "name is a DNS-1123 label: no '/', no '.')"
            )


def _check_prefixes(_: object, __: object, rule: Rule) -> None:
    for prefix in rule or ():
        try:
            ChartSource.parse(prefix)
        except ValueError as err:
            raise ValueError(f"--agent-allowed-chart-sources: {prefix!r}: {err}") from None


@attrs.frozen
class ChartSource:
    """A chart URL (or an allowed prefix) as the policy compares it: scheme, host (with a
    non-default port) and path segments, each decoded once."""

    scheme: str
    host: str
    segments: tuple[str, ...]

    @classmethod
    def parse(cls, url: str) -> ChartSource:
        """Parse ``url``; ValueError naming the problem for anything a server might read
        differently from the policy (see the module docstring)."""
        if "\\" in url:
            raise ValueError("a backslash is not allowed")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as err:
            raise ValueError(f"not a URL: {err}") from None
        if not parts.scheme or not parts.hostname:
            raise ValueError("needs a scheme and a host")
        if parts.username is not None or "@" in parts.netloc:
            raise ValueError("userinfo (user@) is not allowed")
        if "%" in parts.netloc:
            raise ValueError("a percent-encoded host is not allowed")
        if parts.query or parts.fragment or "?" in url or "#" in url:
            raise ValueError("a query or fragment is not allowed")
        scheme = parts.scheme.lower()
        host = parts.hostname.lower()
        if port is not None and port != _DEFAULT_PORTS.get(scheme):
            host = f"{host}:{port}"
        return cls(scheme=scheme, host=host, segments=_segments(parts.path))

    def within(self, prefix: ChartSource) -> bool:
        """Same scheme and host, and the prefix's segments begin this URL's path."""
        count = len(prefix.segments)
        return (self.scheme, self.host) == (prefix.scheme, prefix.host) and self.segments[
            :count
        ] == prefix.segments


def _segments(path: str) -> tuple[str, ...]:
    """The decoded path segments; a trailing ``/`` adds none. Dot segments, encoded ``/`` or
    ``\\`` and a second level of encoding are refused, as are empty segments (``//``)."""
    raw = path.removeprefix("/").removesuffix("/")
    if not raw:
        return ()
    segments = []
    for segment in raw.split("/"):
        decoded = unquote(segment)
        if not segment:
            raise ValueError("an empty path segment ('//') is not allowed")
        if decoded in (".", "..") or any(c in decoded for c in "/\\%"):
            raise ValueError(f"path segment {segment!r} is not allowed (dot segment or encoding)")
        segments.append(decoded)
    return tuple(segments)


@attrs.frozen
class Policy:
    namespaces: Rule = attrs.field(default=None, validator=_check_globs)
    catalog_ids: Rule = None
    chart_sources: Rule = attrs.field(default=None, validator=_check_prefixes)
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
        """``namespace`` (a job's, after the applier normalised it; empty: none) against the
        globs. Only a valid namespace name can match (issue 24, F1)."""
        if self.namespaces is None or namespace in (None, ""):
            return
        if not is_namespace_name(namespace) or not any(
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
            if not isinstance(url, str) or not _source_allowed(url, self.chart_sources):
                _deny("chart source", "chart-sources", url, self.chart_sources)


def _dict(value: Any) -> JsonObj:
    return value if isinstance(value, dict) else {}


def _source_allowed(url: str, prefixes: tuple[str, ...]) -> bool:
    try:
        source = ChartSource.parse(url)
    except ValueError:
        return False  # denied, naming the URL and the allowed prefixes
    return any(source.within(ChartSource.parse(prefix)) for prefix in prefixes)


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
