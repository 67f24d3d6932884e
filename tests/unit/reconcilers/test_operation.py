"""The Operation reconciler on the fake API: admission (each reason it blocks for), start,
follow, the verdict, the grace for a missing workload, terminal phases, deletion and a status
conflict. What is checked is what ends up in the API (status, conditions, finalizer, Events),
what the engine was asked, what the control plane heard, and the Result."""

from __future__ import annotations

from typing import Any

import pytest

from vworkspace.api.approvals import sign
from vworkspace.api.constants import OPERATION_FINALIZER
from vworkspace.api.meta import ObjectKey
from vworkspace.controllers.operation import OperationReconciler
from vworkspace.engines.base import EngineError, Observation, State, WorkloadMissingError
from vworkspace.kube.rest.resources import APPLICATION_INSTANCES, OPERATIONS
from vworkspace.kube.runtime.controller import Result
from vworkspace.testing.objects import managed_instance, operation

from .conftest import APPROVAL_SECRET, NS, POLL, FakeOperationEngine, World

CAPABLE = {"ops.vworkspace.io/backup": "velero", "ops.vworkspace.io/restore": "velero"}


async def target(world: World, name: str = "shop") -> None:
    await world.create(APPLICATION_INSTANCES, managed_instance(name, NS, annotations=CAPABLE))


async def reconcile(world: World, operations: OperationReconciler, name: str = "op") -> Result:
    result = await operations.reconcile(ObjectKey(NS, name))
    await world.sync()
    return result


def claim(world: World, op: str, *, secret: str = APPROVAL_SECRET) -> str:
    exp = int(world.clock.now().timestamp()) + 3600
    return sign({"v": 1, "op": op, "exp": exp}, secret)


async def running(world: World, operations: OperationReconciler, **spec: Any) -> None:
    await target(world)
    await world.create(OPERATIONS, operation("op", NS, **spec))
    assert await reconcile(world, operations) == Result.after(POLL)


# ---- admission: blocked for each reason ---------------------------------------------------


async def test_an_invalid_operation_is_blocked_until_its_spec_changes(
    world: World, operations: OperationReconciler, velero: FakeOperationEngine
) -> None:
    await target(world)
    await world.create(OPERATIONS, operation("op", NS, parameters={"unknown": 1}))
    assert await reconcile(world, operations) == Result.done()
    op = world.get(OPERATIONS, "op")
    assert op["status"]["phase"] == "Pending"
    assert world.conditions(op) == {
        "Blocked": ("True", "ValidationFailed"),
        "Accepted": ("False", "ValidationFailed"),
    }
    assert op["metadata"]["finalizers"] == [OPERATION_FINALIZER]
    assert ("op", "Warning", "ValidationFailed") in world.events()
    assert velero.materialized == []


async def test_a_missing_target_blocks_and_is_looked_at_again(
    world: World, operations: OperationReconciler, velero: FakeOperationEngine
) -> None:
    await world.create(OPERATIONS, operation("op", NS))
    assert await reconcile(world, operations) == Result.after(30.0)
    op = world.get(OPERATIONS, "op")
    assert world.conditions(op)["Blocked"] == ("True", "TargetNotReady")
    assert "ApplicationInstance shop not found" in op["status"]["conditions"][0]["message"]
    assert ("op", "Blocked", "True", "TargetNotReady") in world.reporter.reported


async def test_a_restore_waits_for_an_approval_claim(
    world: World, operations: OperationReconciler, velero: FakeOperationEngine
) -> None:
    await target(world)
    await world.create(
        OPERATIONS, operation("op", NS, type_="Restore", parameters={"backupName": "b"})
    )
    assert await reconcile(world, operations) == Result.after(30.0)
    op = world.get(OPERATIONS, "op")
    assert world.conditions(op)["Blocked"] == ("True", "AwaitingApproval")
    assert velero.materialized == []


async def test_a_claim_signed_with_another_secret_does_not_approve(
    world: World, operations: OperationReconciler, velero: FakeOperationEngine
) -> None:
    await target(world)
    bad = claim(world, "op", secret="not-the-secret")
    await world.create(OPERATIONS, operation("op", NS, approvals={"required": True, "claim": bad}))
    assert await reconcile(world, operations) == Result.after(30.0)
    blocked = [
        c for c in world.get(OPERATIONS, "op")["status"]["conditions"] if c["type"] == "Blocked"
    ]
    assert blocked[0]["reason"] == "AwaitingApproval"
    assert "signature does not verify" in blocked[0]["message"]


async def test_a_valid_claim_lets_a_restore_start(
    world: World, operations: OperationReconciler, velero: FakeOperationEngine
) -> None:
    await target(world)
    body = operation(
        "op",
        NS,
        type_="Restore",
        parameters={"backupName": "b"},
        approvals={"claim": claim(world, "op")},
    )
    await world.create(OPERATIONS, body)
    assert await reconcile(world, operations) == Result.after(POLL)
    assert world.get(OPERATIONS, "op")["status"]["phase"] == "Running"
    assert velero.materialized == ["op"]


async def test_an_operation_in_flight_on_the_same_target_holds_a_conflicting_one_back(
    world: World, operations: OperationReconciler, velero: FakeOperationEngine
) -> None:
    await target(world)
    restore = operation("restore", NS, type_="Restore", parameters={"backupName": "b"})
    await world.create(OPERATIONS, {**restore, "status": {"phase": "Running"}})
    await world.create(OPERATIONS, operation("op", NS))
    assert await reconcile(world, operations) == Result.after(30.0)
    op = world.get(OPERATIONS, "op")
    assert world.conditions(op)["Blocked"] == ("True", "ConflictingOperation")
    assert velero.materialized == []


async def test_an_engine_that_is_not_registered_blocks(
    world: World, operations: OperationReconciler
) -> None:
    await target(world)
    await world.create(OPERATIONS, operation("op", NS))
    assert await reconcile(world, operations) == Result.after(30.0)
    op = world.get(OPERATIONS, "op")
    assert world.conditions(op)["Blocked"] == ("True", "DependencyMissing")
    assert "engine velero is not available" in op["status"]["conditions"][0]["message"]


async def test_a_namespace_allow_list_without_the_type_blocks(
    world: World, operations: OperationReconciler, velero: FakeOperationEngine
) -> None:
    from vworkspace.api.constants import ANNOTATION_ALLOWED_TYPES
    from vworkspace.kube.rest.resources import NAMESPACES

    world.api.add(
        NAMESPACES, {"metadata": {"name": NS, "annotations": {ANNOTATION_ALLOWED_TYPES: "Upgrade"}}}
    )
    await target(world)
    await world.create(OPERATIONS, operation("op", NS))
    assert await reconcile(world, operations) == Result.after(30.0)
    assert world.conditions(world.get(OPERATIONS, "op"))["Blocked"] == ("True", "ValidationFailed")


# ---- start, follow, verdict -----------------------------------------------------------------


async def test_an_admitted_operation_starts_its_engine_and_runs(
    world: World, operations: OperationReconciler, velero: FakeOperationEngine
) -> None:
    await running(world, operations)
    op = world.get(OPERATIONS, "op")
    assert op["status"]["phase"] == "Running"
    assert op["status"]["startedAt"] == "2026-01-01T00:16:40Z"
    assert op["status"]["engineRef"] == {
        "kind": "velero",
        "name": f"{NS}--op",
        "namespace": "velero",
    }
    assert world.conditions(op) == {
        "Accepted": ("True", "AdmissionPassed"),
        "Running": ("True", "EngineStarted"),
        "Blocked": ("False", "Unblocked"),
    }
    assert ("op", "Normal", "EngineStarted") in world.events()
    assert velero.materialized == ["op"]


async def test_a_blocked_operation_starts_once_the_target_appears(
    world: World, operations: OperationReconciler, velero: FakeOperationEngine
) -> None:
    await world.create(OPERATIONS, operation("op", NS))
    assert await reconcile(world, operations) == Result.after(30.0)
    await target(world)
    assert await reconcile(world, operations) == Result.after(POLL)
    op = world.get(OPERATIONS, "op")
    assert world.conditions(op)["Blocked"] == ("False", "Unblocked")
    assert op["status"]["phase"] == "Running"


async def test_a_running_operation_polls_its_engine_without_writing(
    world: World, operations: OperationReconciler, velero: FakeOperationEngine
) -> None:
    await running(world, operations)
    writes = len(world.api.writes)
    await world.clock.advance(5)
    assert await reconcile(world, operations) == Result.after(POLL)
    assert velero.observed == ["op"]
    assert len(world.api.writes) == writes  # steady state: no write at all


async def test_the_engine_succeeding_makes_the_operation_succeed(
    world: World, operations: OperationReconciler, velero: FakeOperationEngine
) -> None:
    await running(world, operations)
    velero.observation = Observation(
        State.SUCCEEDED, message="backup done", outputs={"backup": "b-1"}
    )
    await world.clock.advance(30)
    assert await reconcile(world, operations) == Result.done()
    op = world.get(OPERATIONS, "op")
    assert op["status"]["phase"] == "Succeeded"
    assert op["status"]["outputs"] == {"backup": "b-1"}
    assert op["status"]["finishedAt"] == "2026-01-01T00:17:10Z"
    assert world.conditions(op)["Succeeded"] == ("True", "EngineCompleted")
    assert world.conditions(op)["Running"] == ("False", "EngineNotStarted")
    assert ("op", "Normal", "EngineCompleted") in world.events()
    assert velero.cancelled == []


async def test_the_engine_failing_fails_the_operation_then_cancels_the_workload(
    world: World, operations: OperationReconciler, velero: FakeOperationEngine
) -> None:
    await running(world, operations)
    velero.observation = Observation(State.FAILED, message="velero said no")
    assert await reconcile(world, operations) == Result.done()
    op = world.get(OPERATIONS, "op")
    assert op["status"]["phase"] == "Failed"
    assert world.conditions(op)["Failed"] == ("True", "EngineFailed")
    assert ("op", "Warning", "EngineFailed") in world.events()
    assert velero.cancelled == ["op"]


async def test_a_failed_workload_the_engine_keeps_is_not_cancelled(
    world: World, operations: OperationReconciler, velero: FakeOperationEngine
) -> None:
    await running(world, operations)
    velero.observation = Observation(State.FAILED, message="restore failed", keep=True)
    assert await reconcile(world, operations) == Result.done()
    assert world.get(OPERATIONS, "op")["status"]["phase"] == "Failed"
    assert velero.cancelled == []


async def test_an_engine_that_cannot_materialize_fails_the_operation_without_cancelling(
    world: World, operations: OperationReconciler, velero: FakeOperationEngine
) -> None:
    velero.fail_materialize = EngineError("bad storage location")
    await target(world)
    await world.create(OPERATIONS, operation("op", NS))
    assert await reconcile(world, operations) == Result.done()
    op = world.get(OPERATIONS, "op")
    assert op["status"]["phase"] == "Failed"
    failed = next(c for c in op["status"]["conditions"] if c["type"] == "Failed")
    assert failed["message"] == "bad storage location"
    assert velero.cancelled == []


# ---- a missing workload: the grace period --------------------------------------------------


async def test_a_missing_workload_is_tolerated_within_the_grace_period_then_fails(
    world: World, operations: OperationReconciler, velero: FakeOperationEngine
) -> None:
    await running(world, operations)
    velero.observation = WorkloadMissingError("no Backup")
    await world.clock.advance(59)
    assert await reconcile(world, operations) == Result.after(POLL)
    assert world.get(OPERATIONS, "op")["status"]["phase"] == "Running"
    await world.clock.advance(1)
    assert await reconcile(world, operations) == Result.done()
    op = world.get(OPERATIONS, "op")
    assert op["status"]["phase"] == "Failed"
    failed = next(c for c in op["status"]["conditions"] if c["type"] == "Failed")
    assert failed["message"] == "workload missing: no Backup"


# ---- terminal phases --------------------------------------------------------------------------


@pytest.mark.parametrize("phase", ["Succeeded", "Failed", "Cancelled"])
async def test_a_terminal_phase_is_never_derived_again(
    world: World, operations: OperationReconciler, velero: FakeOperationEngine, phase: str
) -> None:
    await world.create(OPERATIONS, {**operation("op", NS), "status": {"phase": phase}})
    velero.observation = Observation(State.FAILED, message="would change the verdict")
    assert await reconcile(world, operations) == Result.done()
    op = world.get(OPERATIONS, "op")
    assert op["status"] == {"phase": phase}
    assert velero.observed == []
    assert world.status_writes(OPERATIONS) == 0


# ---- deletion ---------------------------------------------------------------------------------


async def test_deleting_a_running_operation_cancels_its_engine_and_releases_the_finalizer(
    world: World, operations: OperationReconciler, velero: FakeOperationEngine
) -> None:
    await running(world, operations)
    await world.api.delete(OPERATIONS, ObjectKey(NS, "op"))
    await world.sync()
    assert world.get(OPERATIONS, "op")["metadata"]["deletionTimestamp"]
    assert await reconcile(world, operations) == Result.done()
    assert velero.cancelled == ["op"]
    assert world.api.stored(OPERATIONS, ObjectKey(NS, "op")) is None


async def test_deleting_a_pending_operation_does_not_touch_the_engine(
    world: World, operations: OperationReconciler, velero: FakeOperationEngine
) -> None:
    await world.create(OPERATIONS, operation("op", NS))
    await reconcile(world, operations)  # Blocked: no target; finalizer added
    await world.api.delete(OPERATIONS, ObjectKey(NS, "op"))
    await world.sync()
    assert await reconcile(world, operations) == Result.done()
    assert velero.cancelled == []
    assert world.api.stored(OPERATIONS, ObjectKey(NS, "op")) is None


# ---- conflicts on the status write -----------------------------------------------------------


async def test_a_status_write_that_conflicts_is_retried_on_the_fresh_object(
    world: World, operations: OperationReconciler, velero: FakeOperationEngine
) -> None:
    await target(world)
    await world.create(OPERATIONS, operation("op", NS))
    # The finalizer is added, then someone else writes the Operation before the status goes:
    # the informer's copy is stale, the first status write is a 409.
    world.api.fail_next("PUT", OPERATIONS.path(ObjectKey(NS, "op"), "status"), 409)
    assert await reconcile(world, operations) == Result.after(POLL)
    codes = [w.code for w in world.api.writes if w.subresource == "status"]
    assert codes == [409, 200]
    op = world.get(OPERATIONS, "op")
    assert op["status"]["phase"] == "Running"
    assert velero.materialized == ["op"]


async def test_a_concurrent_writer_is_not_overwritten_by_the_status_commit(
    world: World, operations: OperationReconciler, velero: FakeOperationEngine
) -> None:
    await target(world)
    await world.create(OPERATIONS, operation("op", NS))
    await reconcile(world, operations)  # no engine work yet: Running
    # Another writer labels the Operation; the reconciler's cache has not seen it yet.
    await world.api.merge_patch(
        OPERATIONS,
        ObjectKey(NS, "op"),
        {"metadata": {"labels": {"team": "a"}}},
        field_manager="someone",
    )
    velero.observation = Observation(State.SUCCEEDED, message="done")
    assert await operations.reconcile(ObjectKey(NS, "op")) == Result.done()
    op = world.get(OPERATIONS, "op")
    assert op["metadata"]["labels"] == {"team": "a"}
    assert op["status"]["phase"] == "Succeeded"
    assert [w.code for w in world.api.writes if w.subresource == "status"][-2:] == [409, 200]


async def test_after_a_conflict_the_status_is_decided_again_on_the_fresh_object(
    world: World, operations: OperationReconciler, velero: FakeOperationEngine
) -> None:
    await target(world)
    await world.create(OPERATIONS, operation("op", NS))
    await reconcile(world, operations)  # Running
    # Someone else ends the Operation (phase Cancelled) while our reconcile is deciding.
    await world.api.merge_patch(
        OPERATIONS,
        ObjectKey(NS, "op"),
        {"status": {"phase": "Cancelled"}},
        field_manager="someone",
        subresource="status",
    )
    velero.observation = Observation(State.SUCCEEDED, message="done")
    # The status commit's 409 makes it look at the fresh object: a terminal phase is final.
    await operations.reconcile(ObjectKey(NS, "op"))
    assert world.get(OPERATIONS, "op")["status"]["phase"] == "Cancelled"
    assert velero.cancelled == []
