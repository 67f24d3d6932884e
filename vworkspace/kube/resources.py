"""Resource types by group/version/plural, and the REST paths built from them.

The operator talks to a handful of fixed kinds, so it skips API discovery entirely (kubernetes-
asyncio's dynamic client needs discovery and cannot ask for watch bookmarks).
"""

from __future__ import annotations

from typing import Any

import attrs

from vworkspace.api import constants
from vworkspace.api.meta import ObjectKey


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

    def collection_path(self, namespace: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        return f"{base}/{self.plural}"

    def path(self, key: ObjectKey, subresource: str | None = None) -> str:
        path = f"{self.collection_path(key.namespace if self.namespaced else None)}/{key.name}"
        return f"{path}/{subresource}" if subresource else path

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
