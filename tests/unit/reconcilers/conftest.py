"""The reconcilers under test, built in ONE place, on the fake API and a FakeClock.

Everything that depends on a reconciler's constructor, on the engine interface or on how status
is committed lives here (the reconcilers, the fake engines, the fake control-plane gateway), so
a change to those touches this file and not the tests, which only look at behaviour: what ends
up in the fake API (status, conditions, finalizers, Events), what the engine was asked to do,
what went to the control plane, and the reconcile's Result.

The informers are the real ones, running against the fake; :meth:`World.sync` waits until their
caches hold what the fake holds (a condition, never a sleep).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import pytest

from vworkspace.api.applicationinstance import ApplicationInstanceView
from vworkspace.api.conditions import Condition
from vworkspace.api.constants import CLUSTER_FINALIZER
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.api.operation import OperationView
from vworkspace.controllers.applicationinstance import ApplicationInstanceReconciler
from vworkspace.controllers.cluster import ClusterReconciler
from vworkspace.controllers.initial import InitialReconciler
from vworkspace.controllers.operation import OperationReconciler
from vworkspace.engines.base import (
    ConditionView,
    EngineRef,
    InstanceRequest,
    InstanceStatus,
    Observation,
    OperationRequest,
    State,
)
from vworkspace.engines.catalog import ENGINES as CATALOG
from vworkspace.engines.descriptor import (
    EngineContext,
    EngineSettings,
    InstanceEngineDescriptor,
    OperationEngineDescriptor,
)
from vworkspace.engines.registry import EngineRegistry
from vworkspace.kube.cache.informer import Informer
from vworkspace.kube.clock import FakeClock
from vworkspace.kube.events import EventRecorder
from vworkspace.kube.rest.resources import (
    APPLICATION_INSTANCES,
    CLUSTERS,
    EVENTS,
    OPERATIONS,
    ResourceType,
)
from vworkspace.testing.fakeapi import FakeApi

NS = "team"
APPROVAL_SECRET = "approval-secret"
POLL = 5.0  # how often a Running Operation looks at its engine
MISSING_GRACE = 60.0  # how long a missing workload of a Running Operation is tolerated


# ---- fakes ----------------------------------------------------------------------------------


@attrs.define
class FakeOperationEngine:
    """An Operation engine whose answers the test sets: ``observation`` (or an exception to
    raise from ``observe``), ``fail_materialize``; it records what it was asked. Its policy is
    velero's: a Restore needs an approval and may run without its target."""

    name: str = "velero"
    observation: Observation | Exception = attrs.Factory(lambda: Observation(State.RUNNING))
    fail_materialize: Exception | None = None
    materialized: list[str] = attrs.Factory(list)
    observed: list[str] = attrs.Factory(list)
    cancelled: list[str] = attrs.Factory(list)

    def approval_required(self, op: OperationView) -> bool:
        return op.spec.get("type") == "Restore"

    def runs_without_target(self, op: OperationView) -> bool:
        return op.spec.get("type") == "Restore"

    async def materialize(self, request: OperationRequest) -> EngineRef:
        if self.fail_materialize is not None:
            raise self.fail_materialize
        self.materialized.append(request.operation.name)
        return EngineRef(self.name, f"{NS}--{request.operation.name}", "velero")

    async def observe(self, request: OperationRequest) -> Observation:
        self.observed.append(request.operation.name)
        if isinstance(self.observation, Exception):
            raise self.observation
        return self.observation

    async def cancel(self, request: OperationRequest) -> None:
        self.cancelled.append(request.operation.name)


@attrs.define
class FakeInstanceEngine:
    """An instance engine (``flux``, claiming every instance): Ready follows ``observation``;
    ``fail_materialize`` and ``still_present`` (raised by ``cancel``) are the test's to set."""

    name: str = "flux"
    observation: Observation = attrs.Factory(lambda: Observation(State.SUCCEEDED))
    fail_materialize: Exception | None = None
    still_present: Exception | None = None
    materialized: list[str] = attrs.Factory(list)
    cancelled: list[str] = attrs.Factory(list)

    def claims(self, ai: ApplicationInstanceView) -> bool:
        return True

    async def materialize(self, request: InstanceRequest) -> EngineRef:
        if self.fail_materialize is not None:
            raise self.fail_materialize
        self.materialized.append(request.instance.name)
        return EngineRef("HelmRelease", request.instance.name, NS)

    async def observe(self, request: InstanceRequest) -> Observation:
        return self.observation

    async def cancel(self, request: InstanceRequest) -> None:
        self.cancelled.append(request.instance.name)
        if self.still_present is not None:
            raise self.still_present

    async def instance_status(
        self, ai: ApplicationInstanceView, seen: Observation
    ) -> InstanceStatus:
        ready = seen.state == State.SUCCEEDED
        return InstanceStatus(
            conditions=(
                ConditionView(
                    "Ready",
                    "True" if ready else "False",
                    "HelmReleaseReady" if ready else "HelmReleaseFailed",
                    seen.message,
                ),
            ),
            fields={"helmReleaseRef": {"name": ai.name, "namespace": NS}},
            requeue_after=None if ready else 30.0,
        )

    def instance_failure(self, ai: ApplicationInstanceView, message: str) -> InstanceStatus:
        return InstanceStatus(
            conditions=(ConditionView("Ready", "False", "HelmReleaseFailed", message),),
            requeue_after=30.0,
        )


@attrs.define
class RecordingReporter:
    """The control plane's side: the condition changes reported, as (name, type, status,
    reason)."""

    reported: list[tuple[str, str, str, str]] = attrs.Factory(list)

    def report(self, obj: dict[str, Any], transitions: list[Condition]) -> None:
        for c in transitions:
            self.reported.append((obj["metadata"]["name"], c.type, str(c.status), c.reason))

    def deliver(self, event: dict[str, Any], on_delivered: Callable[[], None]) -> None:
        on_delivered()

    def pending(self, event_key: str) -> bool:
        return False


@attrs.define
class FakeGateway:
    """The agent as the Cluster reconciler sees it."""

    issued: str = "c-issued"
    credentials: str | None = None
    heartbeat_error: Exception | None = None
    dropped: int = 0
    registered: list[tuple[str, str]] = attrs.Factory(list)  # (endpoint, token)
    rotations: int = 0
    suspended: list[str] = attrs.Factory(list)

    def cluster_id(self) -> str | None:
        return self.credentials

    async def register(self, *, endpoint: str, token: str, cluster_id: str, owner: JsonObj) -> str:
        self.registered.append((endpoint, token))
        self.credentials = cluster_id or self.issued
        return self.credentials

    async def rotate(self, *, owner: JsonObj) -> None:
        self.rotations += 1

    async def heartbeat(self) -> None:
        if self.heartbeat_error is not None:
            raise self.heartbeat_error

    def dropped_events(self) -> int:
        return self.dropped

    async def follow(self, *, name: str, namespace: str) -> bool:
        return True

    def suspend(self, reason: str, *, name: str, namespace: str) -> bool:
        self.suspended.append(reason)
        return True


# ---- the world ------------------------------------------------------------------------------


@attrs.define
class World:
    """The fake API, its clock, the real informers on it, and what the reconcilers talk to."""

    api: FakeApi
    clock: FakeClock
    informers: dict[str, Informer]
    engines: EngineRegistry
    reporter: RecordingReporter
    recorder: EventRecorder

    async def sync(self) -> None:
        """Wait until every informer's cache holds exactly the fake's objects."""

        def caught_up() -> bool:
            return all(
                _versions(self.api.objects(i.resource)) == _cached(i)
                for i in self.informers.values()
            )

        async with asyncio.timeout(5):
            while not caught_up():
                await asyncio.sleep(0)

    async def create(self, resource: ResourceType, obj: JsonObj) -> JsonObj:
        created = self.api.add(resource, obj)
        await self.sync()
        return created

    def get(self, resource: ResourceType, name: str, namespace: str | None = NS) -> JsonObj:
        obj = self.api.stored(resource, ObjectKey(namespace if resource.namespaced else None, name))
        assert obj is not None, f"{resource} {name} is not stored"
        return obj

    def conditions(self, obj: JsonObj) -> dict[str, tuple[str, str]]:
        """type -> (status, reason) of the object's conditions."""
        return {
            c["type"]: (c["status"], c["reason"])
            for c in (obj.get("status") or {}).get("conditions") or []
        }

    def events(self) -> list[tuple[str, str, str]]:
        """The Events recorded: (regarding name, type, reason), in creation order."""
        items = sorted(
            self.api.objects(EVENTS), key=lambda e: int(e["metadata"]["resourceVersion"])
        )
        return [(e["regarding"]["name"], e["type"], e["reason"]) for e in items]

    def status_writes(self, resource: ResourceType) -> int:
        return len(self.api.writes_to(resource, subresource="status"))


def _versions(objects: list[JsonObj]) -> dict[tuple[str | None, str], str]:
    return {
        (o["metadata"].get("namespace"), o["metadata"]["name"]): o["metadata"]["resourceVersion"]
        for o in objects
    }


def _cached(informer: Informer) -> dict[tuple[str | None, str], str]:
    objects = [informer.store.get(k) for k in informer.store.all_keys()]
    return _versions([o for o in objects if o is not None])


@pytest.fixture
async def world() -> AsyncIterator[World]:
    clock = FakeClock()
    api = FakeApi(clock=clock)
    informers = {
        "operations": Informer(api, OPERATIONS, clock=clock),
        "instances": Informer(api, APPLICATION_INSTANCES, clock=clock),
        "clusters": Informer(api, CLUSTERS, clock=clock),
    }
    tasks = [asyncio.create_task(i.run()) for i in informers.values()]
    async with asyncio.timeout(5):
        for informer in informers.values():
            await informer.wait_synced()
    yield World(
        api=api,
        clock=clock,
        informers=informers,
        engines=EngineRegistry(CATALOG),  # the real catalog: its messages for missing engines
        reporter=RecordingReporter(),
        recorder=EventRecorder(api, clock=clock),
    )
    for task in tasks:
        task.cancel()
    api.close()
    await asyncio.gather(*tasks, return_exceptions=True)


def _context(world: World) -> EngineContext:
    def no_informer(watch: Any) -> Informer:
        raise AssertionError("the fake engines watch nothing")

    return EngineContext(
        client=world.api, clock=world.clock, settings=EngineSettings(), informer=no_informer
    )


@pytest.fixture
def velero(world: World) -> FakeOperationEngine:
    """The fake Operation engine, registered as ``velero`` (the Backup/Restore templates')."""
    engine = FakeOperationEngine()
    descriptor = OperationEngineDescriptor(name=engine.name, build=lambda _: engine)
    world.engines.register(descriptor, _context(world))
    return engine


@pytest.fixture
def flux(world: World) -> FakeInstanceEngine:
    """The fake instance engine, registered as ``flux`` (claims every instance)."""
    engine = FakeInstanceEngine()
    descriptor = InstanceEngineDescriptor(
        name=engine.name, build=lambda _: engine, claims=engine.claims
    )
    world.engines.register(descriptor, _context(world))
    return engine


@pytest.fixture
def operations(world: World) -> OperationReconciler:
    return OperationReconciler(
        client=world.api,
        operations=world.informers["operations"],
        instances=world.informers["instances"],
        engines=world.engines,
        clock=world.clock,
        approval_secret=APPROVAL_SECRET,
        recorder=world.recorder,
        reporter=world.reporter,
        poll=POLL,
        missing_grace=MISSING_GRACE,
    )


@pytest.fixture
def instances(world: World) -> ApplicationInstanceReconciler:
    return ApplicationInstanceReconciler(
        client=world.api,
        informer=world.informers["instances"],
        engines=world.engines,
        clock=world.clock,
        recorder=world.recorder,
        reporter=world.reporter,
    )


@pytest.fixture
def initial_clusters(world: World) -> InitialReconciler:
    return InitialReconciler(
        client=world.api,
        informer=world.informers["clusters"],
        resource=CLUSTERS,
        finalizer=CLUSTER_FINALIZER,
        clock=world.clock,
        recorder=world.recorder,
    )


@pytest.fixture
def gateway() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
def clusters(world: World, gateway: FakeGateway) -> ClusterReconciler:
    return ClusterReconciler(
        client=world.api,
        informer=world.informers["clusters"],
        gateway=gateway,
        namespace="vworkspace-system",
        clock=world.clock,
        recorder=world.recorder,
        reporter=world.reporter,
        heartbeat_interval=60.0,
    )
