"""Every engine of the operator, in one list: the only place besides its own file where an
engine is named. Adding an engine is its module (with its ``DESCRIPTOR``) plus a line here.

Order matters only for instance engines claiming the same instance, which the catalog's
engines never do (flux claims what seaweed does not).
"""

from __future__ import annotations

from vworkspace.engines import flux, helm, job, seaweed, velero, workflow
from vworkspace.engines.descriptor import AnyDescriptor

ENGINES: tuple[AnyDescriptor, ...] = (
    job.DESCRIPTOR,
    job.HOOK_DESCRIPTOR,
    flux.DESCRIPTOR,
    helm.DESCRIPTOR,
    velero.DESCRIPTOR,
    workflow.DESCRIPTOR,
    seaweed.DESCRIPTOR,
)
