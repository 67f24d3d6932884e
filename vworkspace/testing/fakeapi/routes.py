"""Reading a REST path back into what it addresses: group, version, plural, namespace, name and
subresource (the inverse of :meth:`vworkspace.kube.rest.resources.ResourceType.path`).

The fake parses paths rather than receive typed calls so that the real verbs
(:class:`~vworkspace.kube.rest.api.RestVerbs`) and the real informer run unchanged against it.
A path it cannot read (``/version``, ``/healthz``) is :data:`None`; the fake answers it 404.
"""

from __future__ import annotations

import attrs

from vworkspace.api.meta import ObjectKey
from vworkspace.kube.rest.paths import ApiPath

# The subresources of a Namespace; ``namespaces/NAME/X`` is otherwise a namespaced collection.
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})


@attrs.frozen
class Route:
    """One resource path: a collection (``name`` empty) or an object, maybe a subresource."""

    group: str
    version: str
    plural: str
    namespace: str | None = None
    name: str = ""
    subresource: str = ""

    @property
    def resource(self) -> str:
        """``plural.group`` (``plural`` for the core group): the key of the kind in the fake."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def key(self) -> ObjectKey:
        return ObjectKey(self.namespace, self.name)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


def parse(path: ApiPath) -> Route | None:
    """The route of ``path``, or None for a path that does not address a resource."""
    segments = path.segments
    if len(segments) >= 3 and segments[0] == "apis":
        group, version, rest = segments[1], segments[2], segments[3:]
    elif len(segments) >= 2 and segments[0] == "api":
        group, version, rest = "", segments[1], segments[2:]
    else:
        return None
    namespace: str | None = None
    if (
        len(rest) >= 3
        and rest[0] == "namespaces"
        and not (len(rest) == 3 and rest[2] in _NAMESPACE_SUBRESOURCES)
    ):
        namespace, rest = rest[1], rest[2:]
    if not 1 <= len(rest) <= 3:
        return None
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    return Route(group, version, rest[0], namespace, name, subresource)
