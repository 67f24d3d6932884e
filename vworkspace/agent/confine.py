"""A job names only the objects it may: every name and namespace it carries is checked as the
Kubernetes name it must be before any request is built (issue 24, F1).

The client would refuse a name that changes a path's shape anyway (kube/rest/resources.py); the
agent checks earlier and stricter, so that

* a failure is a ``failed`` result naming the field of the job (``metadata.namespace``,
  ``spec.release.namespace``, ``name``, ``namespace``), not a client error;
* nothing at all happens first: no namespace is created, no GET is sent;
* names are held to what the API server would accept for the kind: a namespace (and a
  Namespace object's name) is a DNS-1123 label, any other object name a DNS-1123 subdomain. The
  trade-off: a kind added to the allow-list whose names are looser (RBAC's ``system:...``)
  cannot be written or deleted through a job.

The policy (agent/policy.py) is checked after this, on the values as they will be sent.
"""

from __future__ import annotations

from vworkspace.api import constants
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.names import (
    InvalidNameError,
    check_label,
    check_namespace,
    check_subdomain,
)
from vworkspace.kube.rest.resources import ResourceType


def _is_namespace_kind(resource: ResourceType) -> bool:
    return (resource.group, resource.kind) == ("", "Namespace")


def object_name(resource: ResourceType, name: object, *, field: str) -> str:
    """``name`` as an object name of ``resource``'s kind, else InvalidNameError naming
    ``field``."""
    if _is_namespace_kind(resource):
        return check_label(name, field=field, what="namespace name")
    return check_subdomain(name, field=field)


def object_namespace(resource: ResourceType, namespace: object, *, field: str) -> str | None:
    """The namespace a request for ``resource`` goes to: a valid namespace name for a
    namespaced kind (required), None for a cluster-scoped one (whatever the job said: it is
    not part of the path)."""
    if not resource.namespaced:
        return None
    if namespace in (None, ""):
        raise InvalidNameError(f"{field} is required for {resource.kind}", field=field, value=None)
    return check_namespace(namespace, field=field)


def check_applied(resource: ResourceType, obj: JsonObj) -> None:
    """An apply payload (after the applier normalised its metadata): ``metadata.name``,
    ``metadata.namespace`` of a namespaced kind, and an ApplicationInstance's
    ``spec.release.namespace`` (a namespace the agent may create)."""
    meta = obj["metadata"]
    object_name(resource, meta.get("name"), field="metadata.name")
    object_namespace(resource, meta.get("namespace"), field="metadata.namespace")
    if (resource.group, resource.kind) == (constants.APPS_GROUP, "ApplicationInstance"):
        release = (obj.get("spec") or {}).get("release")
        release_ns = release.get("namespace") if isinstance(release, dict) else None
        if release_ns not in (None, ""):
            check_namespace(release_ns, field="spec.release.namespace")
