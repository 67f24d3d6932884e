"""The registry learns the engines from their descriptors (engines/descriptor.py): which are
registered for the CRDs a cluster serves, which instance engine claims an instance and what an
instance says while its engine's CRDs are missing, the informers and watches an engine
declares, and adding an engine by one file plus its catalog line (tests/unit/engines/
noop_engine.py, carried out by the real Operation reconciler on an in-memory API)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from tests.unit.engines import noop_engine
from tests.unit.test_webhook_server import ScriptedLookup, post, review
from vworkspace.api import templates
from vworkspace.api.admission import World
from vworkspace.api.applicationinstance import ApplicationInstanceView
from vworkspace.api.meta import ObjectKey
from vworkspace.api.operation import OperationView
from vworkspace.app.engines import EngineFinder, Wake, required_kinds
from vworkspace.app.manager import Manager, ManagerSettings
from vworkspace.controllers.operation import OperationReconciler
from vworkspace.engines import flux, seaweed, velero
from vworkspace.engines.catalog import ENGINES
from vworkspace.engines.descriptor import EngineSettings
from vworkspace.engines.flux import HELM_RELEASES, HELM_REPOSITORIES
from vworkspace.engines.registry import NO_ENGINE, EngineRegistry
from vworkspace.engines.seaweed import S3_CREDENTIALS, SEAWEEDS
from vworkspace.kube.cache.informer import Informer
from vworkspace.kube.clock import FakeClock
from vworkspace.kube.metrics import Metrics
from vworkspace.kube.rest.resources import APPLICATION_INSTANCES, OPERATIONS
from vworkspace.kube.runtime.controller import Controller, Result
from vworkspace.kube.runtime.workqueue import WorkQueue
from vworkspace.kube.tls import CertificateReloader
from vworkspace.testing.fakeapi import FakeApi
from vworkspace.testing.objects import managed_instance, operation
from vworkspace.webhooks.certs import write_webhook_certs
from vworkspace.webhooks.server import OPERATION_PATH, WebhookMetrics, WebhookServer


def finder(
    catalog: tuple[Any, ...], served: frozenset[str]
) -> tuple[EngineRegistry, EngineFinder, Manager, Controller]:
    """A registry of ``catalog`` filled by the finder as the wiring fills it (app/engines.py)."""
    clock = FakeClock()
    metrics = Metrics(CollectorRegistry())
    manager = Manager(settings=ManagerSettings(), metrics=metrics, clock=clock)
    api = FakeApi(clock=clock)
    instances = Informer(api, APPLICATION_INSTANCES, clock=clock)
    controller = Controller(
        "applicationinstance", _Idle(), WorkQueue("applicationinstance", clock=clock)
    )
    registry = EngineRegistry(catalog)
    found = EngineFinder(
        manager,
        registry,
        client=api,
        clock=clock,
        metrics=metrics,
        settings=EngineSettings(),
        wake=Wake(instances=controller, instance_cache=instances),
    )
    found.start(served)
    return registry, found, manager, controller


class _Idle:
    async def reconcile(self, key: ObjectKey) -> Result:
        return Result.done()


def test_engines_are_registered_for_the_crds_served_and_the_rest_wait() -> None:
    served = frozenset(velero.DESCRIPTOR.requires)  # Velero only: no Flux, Argo or SeaweedFS
    registry, found, manager, _ = finder(ENGINES, served)
    assert registry.names() == ["helmHookJob", "job", "velero"]
    assert {d.name for d in found.pending} == {"flux", "helm", "workflow", "seaweed"}
    assert manager.informers == []  # none of those engines caches anything
    ai = ApplicationInstanceView(managed_instance("shop", "ns"))
    assert registry.instance_engine(ai) is None
    assert registry.instance_engine_missing(ai) == flux.MISSING
    store = ApplicationInstanceView(managed_instance("s3", "ns", catalog_id="seaweedfs"))
    assert "SeaweedFS CRDs" in registry.instance_engine_missing(store)


def test_each_instance_engine_claims_its_instances_and_watches_are_shared() -> None:
    registry, found, manager, controller = finder(ENGINES, frozenset(required_kinds(ENGINES)))
    assert not found.pending
    shop = ApplicationInstanceView(managed_instance("shop", "ns"))
    store = ApplicationInstanceView(managed_instance("s3", "ns", catalog_id="seaweedfs"))
    assert getattr(registry.instance_engine(shop), "name", None) == "flux"
    assert getattr(registry.instance_engine(store), "name", None) == "seaweed"
    # flux and helm both read HelmReleases: one informer. Flux's chart sources and seaweed's
    # kinds have their own; each informer feeds the instance controller once.
    kinds = sorted((i.resource.kind, i.label_selector or "") for i in manager.informers)
    assert kinds == sorted(
        [
            (HELM_RELEASES.kind, "app.vworkspace.io/application-instance"),
            (HELM_REPOSITORIES.kind, "app.vworkspace.io/managed-by"),
            ("OCIRepository", "app.vworkspace.io/managed-by"),
            (SEAWEEDS.kind, "app.vworkspace.io/application-instance"),
            (S3_CREDENTIALS.kind, ""),
        ]
    )
    assert len(controller._sources) == len(manager.informers)


def test_a_velero_restore_brings_its_own_policy() -> None:
    registry, _, _, _ = finder(ENGINES, frozenset(velero.DESCRIPTOR.requires))
    engine = registry.operation_engine("velero")
    assert engine is not None
    restore = OperationView(operation("r", "ns", type_="Restore"))
    backup = OperationView(operation("b", "ns", type_="Backup"))
    assert engine.approval_required(restore)
    assert engine.runs_without_target(restore)
    assert not engine.approval_required(backup)
    assert not engine.runs_without_target(backup)
    assert not seaweed.claims(ApplicationInstanceView(managed_instance("shop", "ns")))


async def test_an_engine_is_one_file_plus_its_catalog_line(monkeypatch: pytest.MonkeyPatch) -> None:
    # The catalog line: the same mechanism as engines/catalog.py, with one more descriptor.
    catalog = (*ENGINES, noop_engine.DESCRIPTOR)
    registry, _, _, _ = finder(catalog, frozenset())
    engine = registry.operation_engine("noop")
    assert isinstance(engine, noop_engine.NoopEngine)
    # The Operation's API surface is not the engine's: rule 5 of admission admits only the
    # (type, engine) pairs of api/templates.py (and the CRD's spec.engine enum would refuse
    # "noop" on a real API server). A real engine adds its template there; the test adds one
    # in memory so that the reconciler's admission passes.
    runcommand = templates.template_for("RunCommand", "job")
    assert runcommand is not None
    pair = ("RunCommand", "noop")
    monkeypatch.setitem(templates._BY_PAIR, pair, runcommand)

    clock = FakeClock()
    api = FakeApi(clock=clock)
    operations = Informer(api, OPERATIONS, clock=clock)
    instances = Informer(api, APPLICATION_INSTANCES, clock=clock)
    # The target grants its RunCommand capability to the engine "noop" (admission rule 7).
    target = managed_instance("shop", "ns", annotations={runcommand.capability_annotation: "noop"})
    instances.store.upsert(api.add(APPLICATION_INSTANCES, target))
    op = operation("nothing", "ns", type_="RunCommand", engine="noop", parameters={"image": "x"})
    operations.store.upsert(api.add(OPERATIONS, op))
    reconciler = OperationReconciler(
        client=api,
        operations=operations,
        instances=instances,
        engines=registry,
        clock=clock,
    )
    key = ObjectKey("ns", "nothing")

    started = await reconciler.reconcile(key)
    stored = operations.store.get(key)
    assert stored is not None
    assert stored["status"]["phase"] == "Running", stored["status"]
    assert stored["status"]["engineRef"] == {"kind": "noop", "name": "nothing", "namespace": "ns"}
    assert started.requeue_after is not None

    await reconciler.reconcile(key)
    done = operations.store.get(key)
    assert done is not None
    assert done["status"]["phase"] == "Succeeded"
    assert done["status"]["outputs"] == {"noop": "done"}
    # The engine got typed requests: the Operation and its target as views.
    assert [r.operation.name for r in engine.seen] == ["nothing", "nothing"]
    assert all(r.target is not None and r.target.name == "shop" for r in engine.seen)


def test_a_registry_of_ready_made_engines_for_tests() -> None:
    noop = noop_engine.NoopEngine()
    registry = EngineRegistry.of(operations=[noop])
    assert registry.operation_engine("noop") is noop
    assert registry.operation_engine("job") is None
    shop = ApplicationInstanceView(managed_instance("shop", "ns"))
    assert registry.instance_engine(shop) is None
    assert registry.instance_engine_missing(shop) == NO_ENGINE


@pytest.mark.parametrize(("registered", "allowed"), [(True, True), (False, False)])
async def test_the_webhook_asks_the_engine_whether_an_operation_runs_without_its_target(
    tmp_path: Path, registered: bool, allowed: bool
) -> None:
    # Rule 6: a Restore whose target is gone is admitted because the velero engine says so
    # (velero.py runs_without_target); without that engine nothing runs without its target.
    files = write_webhook_certs(tmp_path, hosts=("127.0.0.1",))
    served = frozenset(velero.DESCRIPTOR.requires) if registered else frozenset()
    registry, _, _, _ = finder(ENGINES, served)
    server = WebhookServer(
        host="127.0.0.1",
        port=0,
        certificates=CertificateReloader(cert=files.cert, key=files.key),
        lookup=ScriptedLookup(World(target=None)),
        approval_secret="",
        clock=FakeClock(),
        metrics=WebhookMetrics.create(CollectorRegistry()),
        engines=registry,
    )
    restore = operation("bring-back", "team-a", type_="Restore", parameters={"backupName": "b"})
    async with TestClient(TestServer(server.application())) as client:
        answer = await post(client, OPERATION_PATH, review(restore))
    assert answer["allowed"] is allowed, answer
    if not allowed:
        assert "not found in namespace 'team-a'" in answer["status"]["message"]
