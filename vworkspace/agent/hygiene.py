"""Metadata hygiene: what a job may say in the ``metadata`` of an object it applies
(docs/pull-mode.md, "Metadata a job may set").

A job names one object and says what it should look like. Some metadata is not a description of
the object but an instruction to the API server or to a controller: an ``ownerReference`` hands
the object to the garbage collector (an owner that does not exist gets it deleted within a
second), a finalizer can keep it from ever going away, ``generateName`` makes a new object on
every retry, and some labels and annotations change what the operator or Kubernetes does with
the object or with others. So an applied object keeps only ``name``, ``namespace``, ``labels``
and ``annotations``, and anything else is **refused, not stripped**: the job fails with an
error naming the field, and the control plane learns that its job was not applied as sent.

Read-only fields of a round-tripped object (what ``kubectl get -o json`` prints) are the one
exception, and they are dropped instead:

* ``uid``, ``resourceVersion``: server-side apply would treat them as preconditions (a stale
  copy fails with 409); the Python agent has always dropped them so that a job describes the
  object's content, not one version of it, and the protocol's "a complete Kubernetes
  manifest" (docs/pull-mode.md, "Payload kinds") keeps working for manifests exported from a
  cluster. Dropping them can
  only make the apply succeed where the server would have refused; it never widens what the
  object is.
* ``managedFields``: an apply with it set is rejected by the API server ("must be nil");
* ``creationTimestamp`` (``null`` in every ``kubectl create --dry-run -o yaml``), ``generation``,
  ``selfLink``: set by the server, ignored on writes.

An empty value of a refused field (``null``, ``""``, ``[]``, ``{}``) asks nothing of the server
and is dropped as well, so an exported manifest with ``finalizers: []`` still applies.

Labels and annotations must be objects of string to string with valid keys (Kubernetes'
qualified names); label values must be valid label values. Keys a job may not set, whatever the
kind (each is acted on by the operator or by Kubernetes):

* ``app.vworkspace.io/application-instance``: ties an object to an ApplicationInstance (the
  operator's informers select on it and wake that instance);
* ``ops.vworkspace.io/operation``, ``ops.vworkspace.io/hook-name``: mark an Operation's workload,
  which the operator adopts and deletes on cancel, in any namespace;
* ``ops.vworkspace.io/allowed-types``: the namespace's own limit on Operation types, which the
  cluster sets for itself (like the local policy, no job may change it);
* ``vworkspace.io/reported-*`` and ``apps.vworkspace.io/applied-digest``: the operator's own
  bookkeeping (what it reported, what it applied); a forged value suppresses a report or an apply;
* every key in the domains Kubernetes reserves for its components (``kubernetes.io``,
  ``k8s.io`` and their subdomains: Pod Security levels on a Namespace, the token controller's
  ``kubernetes.io/service-account.name``, ingress controllers' snippets), except the
  informational ``app.kubernetes.io/*``, kubectl's ``last-applied-configuration`` and
  ``kubernetes.io/metadata.name`` equal to the object's name (the server keeps it so anyway).

What a control plane does set stays allowed: ``app.vworkspace.io/managed-by`` and
``cluster-id`` (the agent overwrites both), capability annotations ``ops.vworkspace.io/<verb>``
and ``ops.vworkspace.io/migration-image`` (the control plane is the source of truth for its
instances), ``ops.vworkspace.io/rotate-credentials`` on a Cluster (the kind itself is opt-in).
The trade-off: a kind added with ``--agent-allow-kind`` cannot carry Kubernetes-reserved keys
either (an Ingress with ``nginx.ingress.kubernetes.io/*`` annotations is refused).
"""

from __future__ import annotations

import json
import re
from typing import Any

from vworkspace.agent.policy import PolicyError
from vworkspace.api import constants
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.names import shown, subdomain_problem
from vworkspace.kube.applied import DIGEST_ANNOTATION

# The metadata a control plane may set.
ALLOWED_FIELDS = frozenset({"name", "namespace", "labels", "annotations"})
# Read-only fields of a round-tripped object, dropped (module docstring: why).
READ_ONLY_FIELDS = frozenset(
    {"uid", "resourceVersion", "managedFields", "creationTimestamp", "generation", "selfLink"}
)
# Why each field the server acts on is refused; any other field is refused as unknown.
REFUSED_FIELDS = {
    "ownerReferences": "the garbage collector deletes an object whose owners are gone",
    "finalizers": "a finalizer can keep the object from ever being deleted",
    "generateName": "a job must name its object (metadata.name), or every retry makes another",
    "deletionTimestamp": "only the API server sets it, when the object is deleted",
    "deletionGracePeriodSeconds": "only the API server sets it, when the object is deleted",
}
RESERVED_LABELS = frozenset(
    {constants.LABEL_APPLICATION_INSTANCE, constants.LABEL_OPERATION, constants.LABEL_HOOK_NAME}
)
RESERVED_ANNOTATIONS = frozenset(
    {
        constants.ANNOTATION_ALLOWED_TYPES,
        constants.ANNOTATION_REPORTED_MANAGED_STORAGE_KEY,
        constants.ANNOTATION_REPORTED_MANAGED_STORAGE_FAILED,
        constants.ANNOTATION_REPORTED_SEAWEED_ENDPOINTS,
        DIGEST_ANNOTATION,
    }
)
RESERVED_PREFIXES = ("vworkspace.io/reported-",)
KUBERNETES_DOMAINS = ("kubernetes.io", "k8s.io")
KUBERNETES_ALLOWED = frozenset({"kubectl.kubernetes.io/last-applied-configuration"})
KUBERNETES_INFORMATIONAL = "app.kubernetes.io"
NAME_LABEL = "kubernetes.io/metadata.name"
# apimachinery's TotalAnnotationSizeLimitB: the server refuses more, with a less clear message.
MAX_ANNOTATIONS_BYTES = 256 * 1024

# k8s.io/apimachinery/pkg/util/validation: the name part of a qualified name, label values.
_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")


class MetadataError(PolicyError):
    """Metadata a job may not set; counted as rejection reason ``policy_metadata``."""

    def __init__(self, message: str) -> None:
        super().__init__(message, rule="metadata")


def check_metadata(meta: JsonObj) -> None:
    """Refuse what a job may not set in ``meta`` (MetadataError naming the field or key) and drop
    the read-only fields of a round-tripped object, in place. ``meta["name"]`` must already be
    checked to be a string."""
    for field in sorted(meta):
        value = meta[field]
        if field in ALLOWED_FIELDS:
            continue
        if field in READ_ONLY_FIELDS or value in (None, "", [], {}):
            del meta[field]
        elif field in REFUSED_FIELDS:
            raise MetadataError(_refused(f"metadata.{field}", REFUSED_FIELDS[field]))
        else:
            raise MetadataError(_refused(f"metadata.{field}", "not a field a job may set"))
    labels = _string_map(meta, "labels")
    annotations = _string_map(meta, "annotations")
    for key, value in labels.items():
        _check_label(key, value, name=meta.get("name"))
    for key in annotations:
        _check_key(key, "metadata.annotations", lower=True)
        _check_reserved(key, "metadata.annotations", RESERVED_ANNOTATIONS)
    size = sum(len(k.encode()) + len(v.encode()) for k, v in annotations.items())
    if size > MAX_ANNOTATIONS_BYTES:
        raise MetadataError(
            f"metadata.annotations: {size} bytes exceed the API server's limit of "
            f"{MAX_ANNOTATIONS_BYTES}"
        )


def _refused(path: str, why: str) -> str:
    return (
        f"{path} is refused: {why}; an applied object keeps only metadata.name, namespace, "
        "labels and annotations"
    )


def _string_map(meta: JsonObj, field: str) -> dict[str, str]:
    value = meta.get(field)
    if value is None:
        meta.pop(field, None)
        return {}
    path = f"metadata.{field}"
    if not isinstance(value, dict):
        raise MetadataError(f"{path} must be an object of strings, got {type(value).__name__}")
    for key, item in value.items():
        if not isinstance(item, str):
            raise MetadataError(
                f"{path}[{shown(key)}] must be a string, got {type(item).__name__} "
                f"{json.dumps(item)[:40]}"
            )
    return value


def _check_label(key: str, value: str, *, name: Any) -> None:
    _check_key(key, "metadata.labels", lower=False)
    if len(value) > 63 or (value and not _NAME.fullmatch(value)):
        raise MetadataError(
            f"metadata.labels[{shown(key)}]: {shown(value)} is not a valid label value "
            "(at most 63 characters: letters, digits, '-', '_', '.', beginning and ending with "
            "a letter or digit)"
        )
    if key == NAME_LABEL and value != name:
        raise MetadataError(
            f'metadata.labels["{key}"] must equal metadata.name (the API server keeps it so)'
        )
    if key != NAME_LABEL:
        _check_reserved(key, "metadata.labels", RESERVED_LABELS)


def _check_key(key: str, path: str, *, lower: bool) -> None:
    """Kubernetes' qualified name: ``[prefix/]name``, prefix a DNS subdomain (annotation keys
    are checked lower-cased, as the API server does)."""
    prefix, slash, name = (key.lower() if lower else key).rpartition("/")
    good = (
        0 < len(name) <= 63
        and _NAME.fullmatch(name) is not None
        and (not slash or (prefix != "" and subdomain_problem(prefix) is None))
    )
    if not good:
        raise MetadataError(
            f"{path}: key {shown(key)} is not a valid qualified name ([prefix/]name: "
            "name at most 63 characters of letters, digits, '-', '_', '.'; prefix a DNS "
            "subdomain)"
        )


def _check_reserved(key: str, path: str, reserved: frozenset[str]) -> None:
    prefix = key.partition("/")[0].lower() if "/" in key else ""
    if key in reserved or key.startswith(RESERVED_PREFIXES):
        raise MetadataError(
            f'{path}["{key}"] is refused: the operator acts on it, so only the operator sets it'
        )
    kubernetes = any(prefix == d or prefix.endswith("." + d) for d in KUBERNETES_DOMAINS)
    if kubernetes and prefix != KUBERNETES_INFORMATIONAL and key not in KUBERNETES_ALLOWED:
        raise MetadataError(
            f'{path}["{key}"] is refused: keys of the Kubernetes-reserved domains '
            "(kubernetes.io, k8s.io) are acted on by Kubernetes components; only "
            "app.kubernetes.io/* may be set"
        )
