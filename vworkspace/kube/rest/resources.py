"""Resource types by group/version/plural, and the REST paths built from them.

The operator talks to a handful of fixed kinds, so it skips API discovery entirely (kubernetes-
asyncio's dynamic client needs discovery and cannot ask for watch bookmarks).

Paths are :class:`~vworkspace.kube.rest.paths.ApiPath` segments, never joined strings, and every
namespace, name and subresource is checked before it becomes one (api/names.py): a namespace
must be a DNS-1123 label, a subresource too, and a name a valid path segment (not ``.`` or
``..``, no ``/`` or ``%``). A failure is an :class:`~vworkspace.api.names.InvalidNameError`
naming ``namespace``, ``name`` or ``subresource``; callers that take names from data (a job, a
spec) check them first with a field name of their own.
"""

from __future__ import annotations

from typing import Any

import attrs

from vworkspace.api import constants
from vworkspace.api.meta import ObjectKey
from vworkspace.api.names import check_label, check_namespace, check_path_segment
from vworkspace.kube.rest.paths import ApiPath


@attrs.frozen
class ResourceType:
    """One kind as the REST API addresses it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def group_version_path(self) -> ApiPath:
        """``/apis/GROUP/VERSION`` (``/api/VERSION`` for the core group)."""
        if self.group:
            return ApiPath.of("apis", self.group, self.version)
        return ApiPath.of("api", self.version)

    def collection_path(self, namespace: str | None = None) -> ApiPath:
        """The collection, in ``namespace`` if the kind is namespaced and one is given (else
        across all namespaces)."""
        base = self.group_version_path()
        if self.namespaced and namespace:
            base = base.child("namespaces", check_namespace(namespace, field="namespace"))
        return base.child(self.plural)

    def path(self, key: ObjectKey, subresource: str | None = None) -> ApiPath:
        """One object (and optionally its subresource); InvalidNameError naming the field."""
        name = check_path_segment(key.name, field="name")
        path = self.collection_path(key.namespace if self.namespaced else None).child(name)
        if subresource:
            path = path.child(check_label(subresource, field="subresource", what="subresource"))
        return path

    def __str__(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


def key_of(obj: dict[str, Any]) -> ObjectKey:
    meta = obj.get("metadata", {})
    return ObjectKey(namespace=meta.get("namespace") or None, name=meta["name"])


APPLICATION_INSTANCES = ResourceType(
    constants.APPS_GROUP, constants.VERSION, "applicationinstances", "ApplicationInstance"
)
OPERATIONS = ResourceType(constants.OPS_GROUP, constants.VERSION, "operations", "Operation")
CLUSTERS = ResourceType(
    constants.OPS_GROUP, constants.VERSION, "clusters", "Cluster", namespaced=False
)
LEASES = ResourceType("coordination.k8s.io", "v1", "leases", "Lease")
EVENTS = ResourceType("events.k8s.io", "v1", "events", "Event")
NAMESPACES = ResourceType("", "v1", "namespaces", "Namespace", namespaced=False)
CONFIG_MAPS = ResourceType("", "v1", "configmaps", "ConfigMap")
SECRETS = ResourceType("", "v1", "secrets", "Secret")
POD_TEMPLATES = ResourceType("", "v1", "podtemplates", "PodTemplate")
