"""The Velero engine's roll-up (vworkspace/engines/velero.py, :func:`rollup`) for every phase the
Velero v1.18.1 server writes on a Backup or a Restore, with the status fields it writes with
them (issue 26; tests/real/test_velero_ops.py watches the real server write them), and the
Restore that runs without a live target (bringing a deleted instance back)."""

from __future__ import annotations

from typing import Any

import pytest

from vworkspace.api.admission import (
    World,
    review_operation,
    targetless_problem,
)
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.api.operation import OperationView
from vworkspace.engines.base import EngineError, OperationRequest, State
from vworkspace.engines.velero import RESTORES, VeleroEngine, restore_spec, rollup
from vworkspace.testing import objects
from vworkspace.testing.fakeapi import FakeApi

KEY = ObjectKey("velero", "team-a--nightly")
BACKUP_LOGS = "see velero backup logs team-a--nightly -n velero"

# (phase, the other status fields the real server writes with it, state)
IN_FLIGHT = [
    ("", {}, State.PENDING),
    ("New", {}, State.PENDING),
    ("Queued", {"queuePosition": 2}, State.PENDING),
    ("ReadyToStart", {}, State.PENDING),
    ("InProgress", {"progress": {"totalItems": 40, "itemsBackedUp": 3}}, State.RUNNING),
    ("WaitingForPluginOperations", {}, State.RUNNING),
    ("WaitingForPluginOperationsPartiallyFailed", {"errors": 1}, State.RUNNING),
    ("Finalizing", {}, State.RUNNING),
    ("FinalizingPartiallyFailed", {"errors": 2}, State.RUNNING),
    ("SomethingNewer", {}, State.RUNNING),
]


@pytest.mark.parametrize(
    ("phase", "fields", "state"), IN_FLIGHT, ids=[p[0] or "none" for p in IN_FLIGHT]
)
@pytest.mark.parametrize("kind", ["Backup", "Restore"])
def test_phases_in_flight_are_pending_or_running(
    kind: str, phase: str, fields: JsonObj, state: State
) -> None:
    seen, message = rollup(kind, {"phase": phase, **fields}, key=KEY)
    assert seen == state
    assert message == f"{kind} {phase or 'New'}"


def test_completed_succeeds_with_the_item_count() -> None:
    status = {"phase": "Completed", "progress": {"totalItems": 12, "itemsBackedUp": 12}}
    assert rollup("Backup", status, key=KEY) == (
        State.SUCCEEDED,
        "Backup Completed: 12 of 12 items backed up",
    )
    restored = {"phase": "Completed", "progress": {"totalItems": 9, "itemsRestored": 9}}
    assert rollup("Restore", restored, key=KEY) == (
        State.SUCCEEDED,
        "Restore Completed: 9 of 9 items restored",
    )
    assert rollup("Backup", {"phase": "Completed"}, key=KEY) == (
        State.SUCCEEDED,
        "Backup Completed",
    )


def test_partially_failed_names_the_counts_and_the_logs_command() -> None:
    # What the real server writes: no failureReason, the error and warning counts of the
    # backup's log, the hook counts (tests/real/test_velero_ops.py).
    status = {
        "phase": "PartiallyFailed",
        "errors": 2,
        "hookStatus": {"hooksAttempted": 1, "hooksFailed": 1},
    }
    assert rollup("Backup", status, key=KEY) == (
        State.FAILED,
        f"Backup PartiallyFailed: 2 errors, 0 warnings, 1 of 1 hooks failed; {BACKUP_LOGS}",
    )
    restore = {"phase": "PartiallyFailed", "errors": 1, "warnings": 3}
    assert rollup("Restore", restore, key=KEY) == (
        State.FAILED,
        "Restore PartiallyFailed: 1 error, 3 warnings; "
        "see velero restore logs team-a--nightly -n velero",
    )


def test_partially_failed_succeeds_when_the_operation_allows_it() -> None:
    state, message = rollup(
        "Backup", {"phase": "PartiallyFailed", "errors": 1}, key=KEY, allow_partial=True
    )
    assert state == State.SUCCEEDED
    assert message == (
        f"Backup PartiallyFailed (1 error, 0 warnings; {BACKUP_LOGS}), "
        "allowed by parameters.allowPartialFailure"
    )


@pytest.mark.parametrize("kind", ["Backup", "Restore"])
def test_failed_carries_velero_failure_reason(kind: str) -> None:
    status = {"phase": "Failed", "failureReason": "error getting backup store: no such bucket"}
    assert rollup(kind, status, key=KEY) == (
        State.FAILED,
        f"{kind} Failed: error getting backup store: no such bucket",
    )
    # Without a reason (not seen from the real server), the counts rather than nothing.
    assert rollup(kind, {"phase": "Failed", "errors": 1}, key=KEY) == (
        State.FAILED,
        f"{kind} Failed: 1 error, 0 warnings",
    )


def test_failed_validation_carries_the_validation_errors() -> None:
    status = {
        "phase": "FailedValidation",
        "validationErrors": [
            "an existing backup storage location was not specified at backup creation time "
            'and the default "default" was not found',
            "invalid included/excluded resource lists",
        ],
    }
    state, message = rollup("Backup", status, key=KEY)
    assert state == State.FAILED
    assert message.startswith("Backup FailedValidation: an existing backup storage location")
    assert message.endswith("; invalid included/excluded resource lists")


def test_a_backup_being_deleted_fails() -> None:
    assert rollup("Backup", {"phase": "Deleting"}, key=KEY) == (
        State.FAILED,
        "Backup Deleting: being deleted",
    )


@pytest.mark.parametrize(
    "status",
    [
        {"phase": "PartiallyFailed", "errors": "many", "warnings": True, "hookStatus": "x"},
        {"phase": "PartiallyFailed", "errors": -1, "hookStatus": {"hooksFailed": "one"}},
    ],
)
def test_counts_of_the_wrong_type_count_as_zero_and_never_crash(status: JsonObj) -> None:
    assert rollup("Backup", status, key=KEY) == (
        State.FAILED,
        f"Backup PartiallyFailed: 0 errors, 0 warnings; {BACKUP_LOGS}",
    )


def test_validation_errors_of_the_wrong_type_are_ignored() -> None:
    status = {"phase": "FailedValidation", "validationErrors": "not a list"}
    assert rollup("Backup", status, key=KEY) == (
        State.FAILED,
        "Backup FailedValidation: 0 errors, 0 warnings",
    )


# -- a Restore needs no live target --------------------------------------------------------------


def restore(**parameters: Any) -> JsonObj:
    op = objects.operation(
        "bring-back", "team-a", type_="Restore", parameters={"backupName": "b", **parameters}
    )
    op["metadata"]["uid"] = "7d1e-uid"
    return op


async def test_a_restore_materializes_without_its_target_confined_to_its_namespace() -> None:
    api = FakeApi()
    engine = VeleroEngine(api, namespace="velero")
    ref = await engine.materialize(OperationRequest(OperationView(restore())))
    assert (ref.name, ref.namespace) == ("team-a--bring-back", "velero")
    stored = api.stored(RESTORES, ObjectKey("velero", "team-a--bring-back"))
    assert stored is not None
    assert stored["spec"] == {
        "backupName": "b",
        "includedNamespaces": ["team-a"],
        "excludedResources": ["operations.ops.vworkspace.io"],
    }


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        (["secrets"], ["secrets", "operations.ops.vworkspace.io"]),
        (["operations.ops.vworkspace.io"], ["operations.ops.vworkspace.io"]),
        ("not a list", ["operations.ops.vworkspace.io"]),
    ],
)
def test_a_restore_never_brings_operations_back(given: Any, sent: list[str]) -> None:
    # A restored Operation has no status (Velero drops it) and would run again.
    spec = restore_spec(OperationView(restore(excludedResources=given)))
    assert spec["excludedResources"] == sent


async def test_a_backup_still_needs_its_target() -> None:
    api = FakeApi()
    engine = VeleroEngine(api, namespace="velero")
    backup = objects.operation("nightly", "team-a", type_="Backup")
    backup["metadata"]["uid"] = "1a2b-uid"
    with pytest.raises(EngineError, match="target ApplicationInstance does not exist"):
        await engine.materialize(OperationRequest(OperationView(backup)))
    assert api.writes == []


def test_only_a_velero_restore_runs_without_its_target_and_always_needs_approval() -> None:
    # The engine's policy hooks, which the Operation reconciler asks.
    engine = VeleroEngine(FakeApi(), namespace="velero")
    backup = OperationView(objects.operation("nightly", "team-a", type_="Backup"))
    assert engine.runs_without_target(OperationView(restore()))
    assert engine.approval_required(OperationView(restore()))
    assert not engine.runs_without_target(backup)
    assert not engine.approval_required(backup)


def test_a_restore_without_its_target_may_not_map_namespaces() -> None:
    assert targetless_problem(restore()) is None
    mapped = restore(namespaceMapping={"team-a": "kube-system"})
    message = (
        "spec.parameters.namespaceMapping: a Restore whose target ApplicationInstance 'shop' "
        "does not exist restores into namespace 'team-a' only; remove the mapping"
    )
    assert targetless_problem(mapped) == message
    # The webhook's rule 6 says the same when the engine lets the Operation run without its
    # target (the webhook server asks the engine, tests/unit/test_engine_catalog.py); it admits
    # the mapping-free Restore.
    world = World(target=None, runs_without_target=True)
    assert review_operation(mapped, world=world, approval_secret="s", now=0.0) == message
    assert review_operation(restore(), world=world, approval_secret="s", now=0.0) is None
    backup = objects.operation("nightly", "team-a", type_="Backup")
    world = World(target=None)
    assert review_operation(backup, world=world, approval_secret="s", now=0.0) == (
        "spec.targetRef.name: ApplicationInstance 'shop' not found in namespace 'team-a'"
    )


def _found(op: JsonObj, status: JsonObj) -> FakeApi:
    """A fake API holding the Operation's Velero Restore with ``status``."""
    api = FakeApi()
    labels = {"ops.vworkspace.io/operation": op["metadata"]["uid"]}
    restore = {"metadata": {"name": "team-a--bring-back", "namespace": "velero", "labels": labels}}
    api.add(RESTORES, {**restore, "status": status})
    return api


@pytest.mark.parametrize(
    ("status", "keep"),
    [
        ({"phase": "PartiallyFailed", "errors": 1}, True),
        ({"phase": "Failed", "failureReason": "x"}, True),
        ({"phase": "FailedValidation", "validationErrors": ["x"]}, True),
        ({"phase": "Deleting"}, False),
        ({"phase": "Completed"}, False),
        ({"phase": "InProgress"}, False),
    ],
)
async def test_a_failed_velero_object_is_kept_as_the_failures_record(
    status: JsonObj, keep: bool
) -> None:
    # Deleting a Restore makes Velero delete its logs from the bucket, the logs the message
    # names (seen in tests/real/test_velero_ops.py): the reconciler must not cancel it.
    op = restore()
    engine = VeleroEngine(_found(op, status), namespace="velero")
    seen = await engine.observe(OperationRequest(OperationView(op)))
    assert seen.keep is keep
    assert seen.outputs == {"restoreName": "team-a--bring-back"}
