"""The ApplicationInstance reconciler on the fake API: finalizer, status from the engine's
observation, placeholder, engine missing, invalid spec, a blocked engine, deletion, and that a
steady state writes nothing."""

from __future__ import annotations

from vworkspace.api.constants import APPLICATION_INSTANCE_FINALIZER
from vworkspace.api.meta import ObjectKey
from vworkspace.controllers.applicationinstance import ApplicationInstanceReconciler
from vworkspace.engines.base import EngineBlockedError, Observation, State, StillPresentError
from vworkspace.kube.rest.resources import APPLICATION_INSTANCES
from vworkspace.kube.runtime.controller import Result
from vworkspace.testing.objects import managed_instance

from .conftest import NS, FakeInstanceEngine, World

KEY = ObjectKey(NS, "shop")


async def reconcile(world: World, instances: ApplicationInstanceReconciler) -> Result:
    result = await instances.reconcile(KEY)
    await world.sync()
    return result


def placeholder() -> dict[str, object]:
    body = managed_instance("shop", NS)
    body["spec"] = {"appRef": {"catalogId": "odoo"}, "mode": "placeholder"}
    return body


async def test_an_instance_gets_the_finalizer_and_its_status_from_the_engine(
    world: World, instances: ApplicationInstanceReconciler, flux: FakeInstanceEngine
) -> None:
    await world.create(APPLICATION_INSTANCES, managed_instance("shop", NS))
    assert await reconcile(world, instances) == Result.done()
    ai = world.get(APPLICATION_INSTANCES, "shop")
    assert ai["metadata"]["finalizers"] == [APPLICATION_INSTANCE_FINALIZER]
    assert ai["status"]["observedGeneration"] == 1
    assert ai["status"]["helmReleaseRef"] == {"name": "shop", "namespace": NS}
    assert world.conditions(ai)["Ready"] == ("True", "HelmReleaseReady")
    assert flux.materialized == ["shop"]
    assert ("shop", "Normal", "HelmReleaseReady") in world.events()
    assert ("shop", "Ready", "True", "HelmReleaseReady") in world.reporter.reported


async def test_a_failing_release_is_not_ready_and_looked_at_again(
    world: World, instances: ApplicationInstanceReconciler, flux: FakeInstanceEngine
) -> None:
    flux.observation = Observation(State.FAILED, message="install failed")
    await world.create(APPLICATION_INSTANCES, managed_instance("shop", NS))
    assert await reconcile(world, instances) == Result.after(30.0)
    ai = world.get(APPLICATION_INSTANCES, "shop")
    assert world.conditions(ai)["Ready"] == ("False", "HelmReleaseFailed")
    assert ("shop", "Warning", "HelmReleaseFailed") in world.events()


async def test_a_steady_state_writes_nothing(
    world: World, instances: ApplicationInstanceReconciler, flux: FakeInstanceEngine
) -> None:
    await world.create(APPLICATION_INSTANCES, managed_instance("shop", NS))
    await reconcile(world, instances)
    writes = len(world.api.writes)
    await world.clock.advance(120)  # only lastReconcileTime would change
    assert await reconcile(world, instances) == Result.done()
    assert len(world.api.writes) == writes


async def test_a_spec_change_is_observed(
    world: World, instances: ApplicationInstanceReconciler, flux: FakeInstanceEngine
) -> None:
    await world.create(APPLICATION_INSTANCES, managed_instance("shop", NS))
    await reconcile(world, instances)
    await world.api.merge_patch(
        APPLICATION_INSTANCES, KEY, {"spec": {"chart": {"version": "2.0.0"}}}, field_manager="t"
    )
    await world.sync()
    await reconcile(world, instances)
    ai = world.get(APPLICATION_INSTANCES, "shop")
    assert ai["metadata"]["generation"] == 2
    assert ai["status"]["observedGeneration"] == 2
    assert flux.materialized == ["shop", "shop"]


async def test_a_placeholder_is_ready_without_an_engine(
    world: World, instances: ApplicationInstanceReconciler
) -> None:
    await world.create(APPLICATION_INSTANCES, placeholder())
    assert await reconcile(world, instances) == Result.done()
    ai = world.get(APPLICATION_INSTANCES, "shop")
    assert world.conditions(ai) == {
        "Reconciling": ("False", "Stable"),
        "Degraded": ("False", "Recovered"),
        "Ready": ("True", "Placeholder"),
        "Blocked": ("False", "Unblocked"),
    }


async def test_without_the_engine_the_instance_is_blocked(
    world: World, instances: ApplicationInstanceReconciler
) -> None:
    await world.create(APPLICATION_INSTANCES, managed_instance("shop", NS))
    assert await reconcile(world, instances) == Result.after(60)
    ai = world.get(APPLICATION_INSTANCES, "shop")
    assert world.conditions(ai)["Blocked"] == ("True", "MissingDependencies")
    assert world.conditions(ai)["Ready"] == ("False", "MissingDependencies")
    assert ("shop", "Warning", "MissingDependencies") in world.events()


async def test_an_invalid_spec_is_blocked_naming_the_field(
    world: World, instances: ApplicationInstanceReconciler, flux: FakeInstanceEngine
) -> None:
    body = managed_instance("shop", NS)
    del body["spec"]["chart"]
    await world.create(APPLICATION_INSTANCES, body)
    assert await reconcile(world, instances) == Result.done()
    ai = world.get(APPLICATION_INSTANCES, "shop")
    assert world.conditions(ai)["Blocked"] == ("True", "ValidationFailed")
    blocked = next(c for c in ai["status"]["conditions"] if c["type"] == "Blocked")
    assert blocked["message"] == "spec.chart is required in managed mode"
    assert flux.materialized == []


async def test_an_engine_that_is_blocked_blocks_the_instance(
    world: World, instances: ApplicationInstanceReconciler, flux: FakeInstanceEngine
) -> None:
    flux.fail_materialize = EngineBlockedError("ReleaseOwnedElsewhere", "a legacy HelmRelease")
    await world.create(APPLICATION_INSTANCES, managed_instance("shop", NS))
    assert await reconcile(world, instances) == Result.after(30)
    ai = world.get(APPLICATION_INSTANCES, "shop")
    assert world.conditions(ai)["Blocked"] == ("True", "ReleaseOwnedElsewhere")


async def test_deletion_removes_the_workload_then_the_finalizer(
    world: World, instances: ApplicationInstanceReconciler, flux: FakeInstanceEngine
) -> None:
    await world.create(APPLICATION_INSTANCES, managed_instance("shop", NS))
    await reconcile(world, instances)
    await world.api.delete(APPLICATION_INSTANCES, KEY)
    await world.sync()
    flux.still_present = StillPresentError("HelmRelease still there")
    assert await reconcile(world, instances) == Result.after(15)
    deleting = world.get(APPLICATION_INSTANCES, "shop")
    assert world.conditions(deleting)["Deleting"] == ("True", "Uninstalling")
    assert deleting["metadata"]["finalizers"] == [APPLICATION_INSTANCE_FINALIZER]
    flux.still_present = None
    assert await reconcile(world, instances) == Result.done()
    assert flux.cancelled == ["shop", "shop"]
    assert world.api.stored(APPLICATION_INSTANCES, KEY) is None


async def test_deleting_a_placeholder_does_not_ask_an_engine(
    world: World, instances: ApplicationInstanceReconciler, flux: FakeInstanceEngine
) -> None:
    await world.create(APPLICATION_INSTANCES, placeholder())
    await reconcile(world, instances)
    await world.api.delete(APPLICATION_INSTANCES, KEY)
    await world.sync()
    assert await reconcile(world, instances) == Result.done()
    assert flux.cancelled == []
    assert world.api.stored(APPLICATION_INSTANCES, KEY) is None
