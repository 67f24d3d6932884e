"""Update predicates: which updates of a watched object are worth a reconcile.

Without one, every status write a reconciler makes comes back to it as a watch event and runs
the reconcile a second time (docs/api.md, deviation 18: the Go operator has no event filters). For
the Cluster that meant a second heartbeat to the control plane a few milliseconds after each
one; for the others, a reconcile that finds nothing to do. What the operator's reconcilers read
from their primary object is the spec and the metadata (labels, annotations such as
``ops.vworkspace.io/rotate-credentials``, finalizers, the deletion timestamp, owners); the status
is only their own memory. So an update that changes nothing but the status is skipped:
controller-runtime's ``GenerationChangedPredicate`` or'ed with its label and annotation
predicates, plus finalizers, deletion and owner references.

Trade-off: a status edited by hand is not "repaired" at once, only at the object's next
reconcile (requeue, spec or metadata change, relist after a restart). Adds, deletes and the
initial list are never filtered (the informer does not ask the predicate for them).
"""

from __future__ import annotations

from vworkspace.api.jsontypes import JsonObj

_METADATA = ("labels", "annotations", "finalizers", "deletionTimestamp", "ownerReferences")


def spec_or_metadata_changed(previous: JsonObj, current: JsonObj) -> bool:
    """True unless only the status (or nothing we read) changed between the two states."""
    before, after = previous.get("metadata") or {}, current.get("metadata") or {}
    if before.get("generation") is None or before.get("generation") != after.get("generation"):
        return True  # no generation (no status subresource): every write may be a spec change
    return any(before.get(field) != after.get(field) for field in _METADATA)
