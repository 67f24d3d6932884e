"""What a controller's ``setup`` needs of the manager, as controller-runtime's
``SetupWithManager(mgr)`` needs a ``Manager``.

Each controller module (vworkspace/controllers/*.py) has a ``setup(host, ...)`` that asks the
host for the shared informers of the kinds it reads, builds its queue, reconciler and
:class:`~vworkspace.kube.runtime.controller.Controller`, declares its watches and registers the
controller with the host. The application's Manager (app/manager.py) is the host; the protocol
lives here, below the controllers, so they never import the app layer.

Shared informers: :meth:`ControllerHost.informer` gives one informer per resource, created on
first request, so two controllers (and the agent's snapshots) that read ApplicationInstances
share one watch and one cache, whatever order they are set up in.
"""

from __future__ import annotations

from typing import Protocol

import attrs

from vworkspace.api.meta import ObjectKey
from vworkspace.kube.cache.informer import Informer
from vworkspace.kube.clock import Clock
from vworkspace.kube.metrics import Metrics
from vworkspace.kube.rest.resources import ResourceType
from vworkspace.kube.runtime.controller import Controller, Reconciler
from vworkspace.kube.runtime.workqueue import WorkQueue

__all__ = ["ControllerHost", "ControllerOptions", "new_controller", "new_queue"]


@attrs.frozen
class ControllerOptions:
    """The same for every controller of a process (``run --workers``, ``--reconcile-timeout``)."""

    workers: int = 2
    reconcile_timeout: float = 30.0


class ControllerHost(Protocol):
    @property
    def clock(self) -> Clock: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def controller_options(self) -> ControllerOptions: ...

    def informer(self, resource: ResourceType) -> Informer:
        """The shared informer of ``resource`` (created and started on first request)."""
        ...

    def add_controller(self, controller: Controller) -> Controller: ...


def new_queue(host: ControllerHost, name: str) -> WorkQueue[ObjectKey]:
    """A controller's work queue, created before its reconciler so the reconciler can be handed
    the queue's ``add`` (e.g. to wake an object from a callback) at construction."""
    return WorkQueue(name, clock=host.clock, metrics=host.metrics.queue(name))


def new_controller(
    host: ControllerHost, name: str, reconciler: Reconciler, queue: WorkQueue[ObjectKey]
) -> Controller:
    """Build the controller with the host's options and metrics, and register it."""
    options = host.controller_options
    return host.add_controller(
        Controller(
            name,
            reconciler,
            queue,
            workers=options.workers,
            reconcile_timeout=options.reconcile_timeout,
            metrics=host.metrics.controller(name),
        )
    )
