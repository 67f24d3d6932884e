"""The demo's ``--backup`` steps without a cluster: their numbering, what they make of the
Operation and Velero Backup they poll (a fake client answering with what the real controllers
write), and the message when a binary is missing. The whole run, with the real Velero, is
tests/integration/test_demo.py."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.devtools.demo_backup import (
    _backup_now,
    _operation_now,
    find_backup_binaries,
    operation,
)
from vworkspace.devtools.demo_core import Demo, steps_for
from vworkspace.devtools.demo_watch import PhaseLog, Watch
from vworkspace.engines.velero import BACKUPS
from vworkspace.kube.rest.resources import OPERATIONS
from vworkspace.testing.fakeapi import FakeApi

BACKUP = ObjectKey("velero", "demo--hello-backup")
OPERATION = ObjectKey("demo", "hello-backup")


def backup_is(kube: FakeApi, status: JsonObj) -> None:
    """Velero's Backup, created or updated, with ``status``."""
    if kube.stored(BACKUPS, BACKUP) is None:
        kube.add(BACKUPS, {"metadata": {"name": BACKUP.name, "namespace": BACKUP.namespace}})
    kube.set_status(BACKUPS, BACKUP, status)


def demo_with(kube: FakeApi, *, operation_status: JsonObj) -> Demo:
    demo = Demo(args=argparse.Namespace(timeout=1.0, signed=False, backup=True), workdir=Path())
    demo.instance = {"metadata": {"name": "hello", "namespace": "demo"}}
    kube.add(OPERATIONS, {**operation(demo), "status": operation_status})
    demo.kube = kube  # type: ignore[assignment]
    demo.operation = Watch(kube, OPERATIONS, OPERATION)
    return demo


RUNNING = {
    "phase": "Running",
    "engineRef": {"kind": "velero", "name": BACKUP.name, "namespace": BACKUP.namespace},
}


def test_backup_steps_come_after_the_install_and_after_signed() -> None:
    plain = list(steps_for(signed=False, backup=False))
    backup = list(steps_for(signed=True, backup=True))
    assert len(plain) == 20
    assert backup[:20] == plain
    assert backup[20:] == [
        "tampered",
        "s3",
        "velero",
        "backup-job",
        "backed-up",
        "backup-succeeded",
        "bucket",
    ]


def test_phase_log_keeps_each_new_phase_once_and_ignores_an_object_without_one() -> None:
    log = PhaseLog()
    for status in ({}, {"phase": "New"}, {"phase": "New"}, {"phase": "InProgress"}, {}):
        log.record({"status": status})
    log.record({"status": {"phase": "Completed"}})
    assert log.text() == "New -> InProgress -> Completed"
    assert PhaseLog().text() == "none yet"


def test_the_operation_carries_a_backup_of_the_instance_without_volume_snapshots() -> None:
    demo = Demo(args=argparse.Namespace(), workdir=Path())
    demo.instance = {"metadata": {"name": "hello", "namespace": "demo"}}
    op = operation(demo)
    assert op["metadata"] == {"name": "hello-backup", "namespace": "demo"}
    assert op["spec"]["targetRef"]["name"] == "hello"
    assert (op["spec"]["type"], op["spec"]["engine"]) == ("Backup", "velero")
    assert op["spec"]["parameters"] == {"storageLocation": "default", "snapshotVolumes": False}


async def test_the_backup_is_found_through_the_operations_engine_ref_and_its_phases_kept() -> None:
    kube = FakeApi()
    demo = demo_with(kube, operation_status={"phase": "Pending"})
    assert await _backup_now(demo) is None  # no engineRef yet: nothing to look at
    kube.set_status(OPERATIONS, OPERATION, RUNNING)
    assert await _backup_now(demo) is None  # named, not created yet
    for phase in ("Queued", "InProgress", "Completed"):
        backup_is(kube, {"phase": phase})
        backup = await _backup_now(demo)
        assert backup is not None
    assert demo.backup is not None
    assert demo.backup.key == BACKUP
    assert demo.backup.phases.text() == "Queued -> InProgress -> Completed"


async def test_a_backup_velero_ended_partially_failed_fails_the_step_with_velero_s_words() -> None:
    kube = FakeApi()
    demo = demo_with(kube, operation_status=RUNNING)
    backup_is(kube, {"phase": "PartiallyFailed", "errors": 2, "warnings": 1})
    with pytest.raises(RuntimeError) as caught:
        await _backup_now(demo)
    assert str(caught.value) == (
        "Velero ended the backup: Backup PartiallyFailed: 2 errors, 1 warning; "
        "see velero backup logs demo--hello-backup -n velero"
    )
    backup_is(kube, {"phase": "FailedValidation", "validationErrors": ["no location default"]})
    with pytest.raises(RuntimeError, match="FailedValidation: no location default"):
        await _backup_now(demo)


async def test_an_operation_the_operator_failed_fails_the_step_with_its_condition() -> None:
    kube = FakeApi()
    condition = {
        "type": "Failed",
        "status": "True",
        "reason": "EngineFailed",
        "message": "Backup Failed: object storage unreachable",
    }
    demo = demo_with(kube, operation_status={"phase": "Failed", "conditions": [condition]})
    with pytest.raises(RuntimeError) as caught:
        await _operation_now(demo)
    assert str(caught.value).startswith(
        "Operation demo/hello-backup Failed: Failed=True/EngineFailed: Backup Failed: object "
        "storage unreachable; Operation demo/hello-backup: phases seen Failed;"
    )


def test_missing_binaries_are_named_with_where_they_were_looked_for(tmp_path: Path) -> None:
    beside = tmp_path / "bin"
    beside.mkdir()
    weed = beside / "weed"
    weed.write_text("#!/bin/sh\n")
    weed.chmod(0o755)
    env = {"VWORKSPACE_TESTENV_CACHE": str(tmp_path / "cache")}
    with pytest.raises(RuntimeError) as caught:
        find_backup_binaries(env, beside=beside)
    message = str(caught.value)
    assert message.startswith(
        f"--backup cannot start Velero: velero and velero-plugin-for-aws are not in {beside} nor "
    )
    assert "run scripts/build-test-assets.sh" in message
    assert "cannot start S3" not in message  # weed is there
