"""Each controller sets itself up against the manager (controllers/*.py ``setup``): one shared
informer per kind whatever the order, the controller registered under its metric name, and no
callback wired after construction (a delivered supplemental event wakes the instance through
the queue handed to the reconciler when it was built)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.app.manager import Manager, ManagerSettings
from vworkspace.controllers import applicationinstance, cluster, operation
from vworkspace.controllers.applicationinstance import ApplicationInstanceReconciler
from vworkspace.controllers.cluster import ClusterOptions
from vworkspace.controllers.initial import InitialReconciler
from vworkspace.controllers.operation import OperationReconciler
from vworkspace.engines.registry import EngineRegistry
from vworkspace.kube.clock import FakeClock
from vworkspace.kube.metrics import Metrics
from vworkspace.kube.rest.api import JSON, RestVerbs
from vworkspace.kube.rest.paths import ApiPath
from vworkspace.kube.rest.resources import APPLICATION_INSTANCES, CLUSTERS, OPERATIONS
from vworkspace.kube.runtime.host import ControllerOptions


class Unreachable(RestVerbs):
    """Setting up makes no request; running is not part of these tests."""

    async def request(
        self,
        method: str,
        path: ApiPath,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = JSON,
        timeout_s: float | None = None,
    ) -> JsonObj:
        raise AssertionError(f"unexpected {method} {path}")

    def stream_lines(
        self,
        path: ApiPath,
        *,
        query: Mapping[str, str],
        connect_timeout: float,
        total_timeout: float,
    ) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        raise AssertionError(f"unexpected watch of {path}")


def manager() -> Manager:
    return Manager(
        settings=ManagerSettings(),
        metrics=Metrics(CollectorRegistry()),
        clock=FakeClock(),
        api=Unreachable(),
        controller_options=ControllerOptions(workers=3, reconcile_timeout=7.0),
    )


def test_the_three_controllers_share_one_informer_per_kind() -> None:
    host, api, engines = manager(), Unreachable(), EngineRegistry()
    # Operations first: it asks for the instances' informer before the AI controller does.
    ops = operation.setup(host, client=api, engines=engines, poll=0.5)
    ais = applicationinstance.setup(host, client=api, engines=engines)
    clusters = cluster.setup(host, client=api, gateway=None, options=ClusterOptions(namespace="ns"))

    assert [i.resource for i in host.informers] == [OPERATIONS, APPLICATION_INSTANCES, CLUSTERS]
    assert host.informer(APPLICATION_INSTANCES) is host.informers[1]
    assert [c.name for c in host.controllers] == ["operation", "applicationinstance", "cluster"]
    assert all((c.workers, c.reconcile_timeout) == (3, 7.0) for c in host.controllers)
    assert isinstance(ops.reconciler, OperationReconciler)
    assert isinstance(ais.reconciler, ApplicationInstanceReconciler)
    # Without the agent's gateway the Cluster controller only takes ownership.
    assert isinstance(clusters.reconciler, InitialReconciler)


def test_a_delivered_supplement_wakes_the_instance_through_the_controllers_queue() -> None:
    host = manager()
    ais = applicationinstance.setup(host, client=Unreachable(), engines=EngineRegistry())
    reconciler = ais.reconciler
    assert isinstance(reconciler, ApplicationInstanceReconciler)

    reconciler.supplements.wake(ObjectKey("demo", "hello"))

    assert len(ais.queue) == 1


def test_a_manager_without_an_api_has_no_shared_informers() -> None:
    bare = Manager(
        settings=ManagerSettings(), metrics=Metrics(CollectorRegistry()), clock=FakeClock()
    )
    with pytest.raises(ValueError, match="without an api"):
        bare.informer(OPERATIONS)
