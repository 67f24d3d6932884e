"""Backup and Restore Operations carried out by the real Velero server (v1.18.1, with
velero-plugin-for-aws v1.14.3) into SeaweedFS S3 (issue 26, deliverable 5, the Velero half).

No hand-written status: every phase is what ``velero server`` wrote. Each test records the
sequence of the Velero object's ``status.phase`` and of the Operation's phase and conditions
and prints them as ``velero-phases:`` lines (run with ``-s``): the observed truth that the
engine's roll-up (vworkspace/engines/velero.py) and the other tiers' fixtures are checked
against. The operator is the ``real_operator`` fixture (shipped ServiceAccount and RBAC; any
403 fails the test at teardown), with an approval-claim secret in its environment, since a
Restore through Velero always needs an approval.

Where the instance lives: an ApplicationInstance's release namespace must be its own namespace
(the admission rules), and a Backup Operation backs up exactly that namespace, so the backup
holds the ApplicationInstance itself (its tarball is read here), and restoring it brings the
instance back; the operator then renders it again through Flux.

Instances: the restore test uses the demo-app chart through the real Flux with two replicas on
kwok's simulated Nodes, as tests/real/test_flux.py (it must go Ready again, its Pods Running:
the operator's HelmRelease waits for the Deployment, which needs the workload controllers that
``kwok_nodes`` starts); the others use a placeholder instance (no Helm release): Velero backs
up a namespace, whatever the instance renders.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import tarfile
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.integration.operator_process import OperatorProcess
from tests.real.test_flux import (
    REPLICAS,
    ConditionLog,
    assert_running_on_kwok,
    condition,
    instance_ready,
    watch_until,
)
from vworkspace.api.approvals import sign
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.engines.flux import HELM_RELEASES
from vworkspace.engines.velero import BACKUPS, RESTORES
from vworkspace.kube.rest.client import KubeClient
from vworkspace.kube.rest.errors import NotFoundError
from vworkspace.kube.rest.resources import APPLICATION_INSTANCES, OPERATIONS, ResourceType
from vworkspace.testing import ControlPlane
from vworkspace.testing.chartrepo import ChartRepository
from vworkspace.testing.flux import Flux
from vworkspace.testing.kwok import KwokNodes
from vworkspace.testing.objects import managed_instance, operation
from vworkspace.testing.s3 import SeaweedS3
from vworkspace.testing.velero import Velero

CONFIG_MAPS = ResourceType("", "v1", "configmaps", "ConfigMap")
PODS = ResourceType("", "v1", "pods", "Pod")
APPROVAL_SECRET = "velero-ops-test-approval-secret"
CAPABILITIES = {"ops.vworkspace.io/backup": "velero", "ops.vworkspace.io/restore": "velero"}
# The phases after which Velero no longer changes the object (pkg/apis/velero/v1).
VELERO_DONE = ("Completed", "PartiallyFailed", "Failed", "FailedValidation")


@pytest.fixture(autouse=True)
def approval_secret(monkeypatch: pytest.MonkeyPatch) -> str:
    """The operator verifies approval claims with this secret: ``real_operator`` passes the
    test process's environment on, and autouse fixtures are set up before it."""
    monkeypatch.setenv("VWORKSPACE_APPROVAL_CLAIM_SECRET", APPROVAL_SECRET)
    return APPROVAL_SECRET


@pytest.fixture
async def kube(control_plane: ControlPlane) -> AsyncIterator[KubeClient]:
    client = await KubeClient.from_kubeconfig(str(control_plane.kubeconfig_path))
    yield client
    await client.close()


def report(what: str, log: ConditionLog, seconds: float) -> None:
    print(f"\nvelero-phases: {what} ({seconds:.1f}s): {' -> '.join(log.seen)}")


def phase(obj: JsonObj) -> str:
    return str((obj.get("status") or {}).get("phase") or "")


def operation_finished(obj: JsonObj) -> bool:
    return phase(obj) in ("Succeeded", "Failed", "Cancelled")


async def placeholder_instance(kube: KubeClient, namespace: str, name: str) -> ObjectKey:
    """An instance without a Helm release that allows Backup and Restore through Velero."""
    body = {
        "apiVersion": "apps.vworkspace.io/v1alpha1",
        "kind": "ApplicationInstance",
        "metadata": {"name": name, "namespace": namespace, "annotations": dict(CAPABILITIES)},
        "spec": {"appRef": {"catalogId": "demo-app"}, "mode": "placeholder"},
    }
    await kube.create(APPLICATION_INSTANCES, body, field_manager="test")
    return ObjectKey(namespace, name)


async def run_operation(
    kube: KubeClient,
    velero: Velero,
    body: JsonObj,
    *,
    what: str,
    timeout: float = 90,
) -> tuple[JsonObj, JsonObj]:
    """Create the Backup or Restore Operation ``body`` and follow it and its Velero object to
    their ends; print both sequences. Returns (Operation, Velero object as last seen)."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    resource = BACKUPS if body["spec"]["type"] == "Backup" else RESTORES
    workload = ObjectKey(velero.namespace, f"{namespace}--{name}")
    op_log, velero_log = ConditionLog(phase=True), ConditionLog(phase=True)
    started = time.monotonic()
    await kube.create(OPERATIONS, body, field_manager="test")

    def velero_done(obj: JsonObj) -> bool:
        return phase(obj) in VELERO_DONE

    async with asyncio.TaskGroup() as group:
        op_task = group.create_task(
            watch_until(
                kube,
                OPERATIONS,
                ObjectKey(namespace, name),
                operation_finished,
                log=op_log,
                timeout=timeout,
            )
        )
        velero_task = group.create_task(
            watch_until(kube, resource, workload, velero_done, log=velero_log, timeout=timeout)
        )
    seconds = time.monotonic() - started
    report(f"{what}, the Velero {resource.kind}", velero_log, seconds)
    report(f"{what}, the {body['spec']['type']} Operation", op_log, seconds)
    return op_task.result(), velero_task.result()


def backup_operation(namespace: str, name: str, target: str) -> JsonObj:
    return operation(name, namespace, type_="Backup", target=target, parameters={})


def restore_operation(namespace: str, name: str, target: str, backup: str) -> JsonObj:
    body = operation(
        name, namespace, type_="Restore", target=target, parameters={"backupName": backup}
    )
    claim = {"v": 1, "op": name, "by": "test@example.com", "exp": int(time.time()) + 600}
    body["spec"]["approvals"] = {"claim": sign(claim, APPROVAL_SECRET)}
    return body


def tarball_members(s3: SeaweedS3, key: str) -> list[str]:
    """The file names in the backup tarball ``key`` of the bucket (Velero's layout:
    ``resources/<resource>.<group>/namespaces/<namespace>/<name>.json``)."""
    body = s3.client().get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as archive:
        return archive.getnames()


def read_gzip(s3: SeaweedS3, key: str) -> str:
    body = s3.client().get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    return gzip.decompress(body).decode(errors="replace")


async def absent(kube: KubeClient, resource: ResourceType, key: ObjectKey) -> bool:
    try:
        await kube.get(resource, key)
    except NotFoundError:
        return True
    return False


async def until(what: str, check: Callable[[], Any], *, timeout: float = 60) -> None:
    """Poll the coroutine function ``check`` until it returns true (deadline ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def test_a_backup_operation_completes_through_the_real_velero_into_the_bucket(
    velero: Velero,
    seaweed_s3: SeaweedS3,
    real_operator: OperatorProcess,
    kube: KubeClient,
    kube_namespace: str,
) -> None:
    instance = await placeholder_instance(kube, kube_namespace, "shop")
    op, backup = await run_operation(
        kube,
        velero,
        backup_operation(kube_namespace, "nightly", instance.name),
        what="Backup Operation of a namespace",
    )
    name = f"{kube_namespace}--nightly"
    assert phase(backup) == "Completed", backup.get("status")
    assert backup["spec"]["includedNamespaces"] == [kube_namespace]
    assert phase(op) == "Succeeded", op["status"]
    assert op["status"]["outputs"] == {"backupName": name}
    progress = backup["status"]["progress"]
    assert condition(op, "Succeeded")["message"] == (
        f"Backup Completed: {progress['itemsBackedUp']} of {progress['totalItems']} items backed up"
    )
    keys = await asyncio.to_thread(seaweed_s3.list_objects, prefix=f"backups/{name}/")
    files = [key.removeprefix(f"backups/{name}/").replace(name, "<name>") for key in keys]
    print(f"\nvelero-phases: bucket objects of the Backup: {len(keys)}: {files}")
    for part in (f"{name}.tar.gz", f"{name}-logs.gz", "velero-backup.json"):
        assert f"backups/{name}/{part}" in keys, keys
    members = await asyncio.to_thread(tarball_members, seaweed_s3, f"backups/{name}/{name}.tar.gz")
    kinds = sorted({m.split("/")[1] for m in members if m.startswith("resources/")})
    print(f"\nvelero-phases: resources in the Backup's tarball: {kinds}")
    # The instance itself is in the backup: it lives in the namespace the Backup includes.
    # (Velero's layout: resources/<resource>.<group>/[<version>-preferredversion/]namespaces/...)
    instance_files = [
        m
        for m in members
        if m.startswith("resources/applicationinstances.apps.vworkspace.io/")
        and m.endswith(f"/namespaces/{kube_namespace}/shop.json")
    ]
    assert instance_files, members
    # So are the namespace's Operations (which a Restore leaves out: docs/api.md, deviation 33).
    assert any(m.startswith("resources/operations.ops.vworkspace.io/") for m in members), members


async def test_a_restore_operation_brings_a_deleted_instance_back_and_it_goes_ready_again(
    velero: Velero,
    seaweed_s3: SeaweedS3,
    flux: Flux,
    chart_repo: ChartRepository,
    real_operator: OperatorProcess,
    kwok_nodes: KwokNodes,
    kube: KubeClient,
    kube_namespace: str,
) -> None:
    body = managed_instance(
        "shop",
        kube_namespace,
        values={"source": "inline", "inline": {"replicas": REPLICAS, "message": "backed up"}},
        annotations=CAPABILITIES,
    )
    body["spec"]["chart"] = chart_repo.chart("0.1.0")
    await kube.create(APPLICATION_INSTANCES, body, field_manager="test")
    key = ObjectKey(kube_namespace, "shop")
    config = ObjectKey(kube_namespace, "shop-demo-app")
    await instance_ready(
        kube,
        flux,
        key,
        what="install before the backup",
        hr_reason="InstallSucceeded",
        version="0.1.0",
    )
    op, _ = await run_operation(
        kube,
        velero,
        backup_operation(kube_namespace, "before", "shop"),
        what="Backup of demo-app",
    )
    assert phase(op) == "Succeeded", op["status"]
    backup_name = op["status"]["outputs"]["backupName"]

    deleted = time.monotonic()
    await kube.delete(APPLICATION_INSTANCES, key)
    # The operator's finalizer removes the HelmRelease; helm-controller uninstalls the release.
    await until("the instance gone", lambda: absent(kube, APPLICATION_INSTANCES, key))
    await until("the HelmRelease gone", lambda: absent(kube, HELM_RELEASES, key))
    await until("the release uninstalled", lambda: absent(kube, CONFIG_MAPS, config))
    print(f"\nvelero-phases: instance deleted and uninstalled in {time.monotonic() - deleted:.1f}s")

    # The Restore, and meanwhile the instance and its HelmRelease from their absence to Ready.
    ai_log, hr_log = ConditionLog(), ConditionLog()
    started = time.monotonic()
    async with asyncio.TaskGroup() as group:
        restoring = group.create_task(
            run_operation(
                kube,
                velero,
                restore_operation(kube_namespace, "bring-back", "shop", backup_name),
                what="Restore of the deleted instance",
            )
        )
        ai_task = group.create_task(
            watch_until(
                kube, APPLICATION_INSTANCES, key, instance_is_ready, log=ai_log, timeout=120
            )
        )
        hr_task = group.create_task(
            watch_until(
                kube, HELM_RELEASES, key, release_is_ready, log=hr_log, timeout=120, flux=flux
            )
        )
    seconds = time.monotonic() - started
    report("the ApplicationInstance, from the Restore to Ready", ai_log, seconds)
    report("its HelmRelease, from the Restore to Ready", hr_log, seconds)
    (op, restore), ai, hr = restoring.result(), ai_task.result(), hr_task.result()
    name = f"{kube_namespace}--bring-back"
    results = await asyncio.to_thread(restore_results, seaweed_s3, name)
    print(f"\nvelero-phases: the Restore's results: {results}")
    assert phase(restore) == "Completed", (restore.get("status"), results)
    assert restore["spec"]["includedNamespaces"] == [kube_namespace]
    # The backup holds the Backup Operation "before"; Velero was told to leave Operations out
    # (one restored without status would run again), so it did not even try.
    # (Velero adds its own defaults to the list it was given: nodes, events, its own kinds.)
    assert "operations.ops.vworkspace.io" in restore["spec"]["excludedResources"], restore["spec"]
    assert "Operation:" not in results, results
    assert phase(op) == "Succeeded", op["status"]
    assert op["status"]["outputs"] == {"restoreName": name}
    assert condition(op, "Succeeded")["message"].startswith("Restore Completed: "), op["status"]
    assert ai["metadata"]["labels"]["velero.io/restore-name"] == name
    assert condition(ai, "Ready")["reason"] == "HelmReleaseReady"
    assert [ref["uid"] for ref in hr["metadata"]["ownerReferences"]] == [ai["metadata"]["uid"]]
    restored = await kube.get(CONFIG_MAPS, config)
    assert restored["data"] == {"message": "backed up", "chartVersion": "0.1.0"}
    await assert_running_on_kwok(kube, key, kwok_nodes)


def instance_is_ready(obj: JsonObj) -> bool:
    status = obj.get("status") or {}
    current = status.get("observedGeneration") == obj["metadata"]["generation"]
    return current and condition(obj, "Ready").get("status") == "True"


def release_is_ready(obj: JsonObj) -> bool:
    ready = condition(obj, "Ready")
    current = ready.get("observedGeneration") == obj["metadata"]["generation"]
    return current and ready.get("status") == "True"


def restore_results(s3: SeaweedS3, name: str) -> str:
    """Velero's results file of Restore ``name`` (errors and warnings by namespace), or what
    the bucket holds under its prefix when there is none."""
    keys = s3.list_objects(prefix=f"restores/{name}/")
    found = [key for key in keys if key.endswith("-results.gz")]
    return read_gzip(s3, found[0]) if found else f"no results file; objects: {keys}"


def hooked_pod(namespace: str) -> JsonObj:
    """A Pod whose pre-backup exec hook names a container it does not have: Velero logs the
    hook's error (an item error, not a fatal one) and ends the backup PartiallyFailed. A
    mistake a user really makes; it needs no running Pod (Velero checks the container name
    before it would exec), so no node either."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "db",
            "namespace": namespace,
            "annotations": {
                "pre.hook.backup.velero.io/container": "no-such-container",
                "pre.hook.backup.velero.io/command": '["/bin/sync"]',
            },
        },
        "spec": {"containers": [{"name": "db", "image": "registry.example/db:1"}]},
    }


async def test_a_backup_velero_ends_partially_failed_fails_the_operation_with_velero_counts(
    velero: Velero,
    seaweed_s3: SeaweedS3,
    real_operator: OperatorProcess,
    kube: KubeClient,
    kube_namespace: str,
) -> None:
    instance = await placeholder_instance(kube, kube_namespace, "shop")
    await kube.create(PODS, hooked_pod(kube_namespace), field_manager="test")
    op, backup = await run_operation(
        kube,
        velero,
        backup_operation(kube_namespace, "hooked", instance.name),
        what="Backup with a failing pre-backup hook",
    )
    name = f"{kube_namespace}--hooked"
    status = backup["status"]
    print(f"\nvelero-phases: the PartiallyFailed Backup's status: {status}")
    assert status["phase"] == "PartiallyFailed", status
    # What the real server writes: error and warning counts, the hook counts; no failureReason.
    assert "failureReason" not in status, status
    assert status["errors"] >= 1, status
    assert status["hookStatus"] == {"hooksAttempted": 1, "hooksFailed": 1}, status
    assert phase(op) == "Failed", op["status"]
    assert op["status"]["outputs"] == {"backupName": name}
    errors = status["errors"]
    warnings = status.get("warnings", 0)
    assert condition(op, "Failed")["message"] == (
        f"Backup PartiallyFailed: {errors} error{'s' if errors != 1 else ''}, "
        f"{warnings} warning{'s' if warnings != 1 else ''}, 1 of 1 hooks failed; "
        f"see velero backup logs {name} -n {velero.namespace}"
    )
    # The failed Backup is kept (not cancelled): the command the message names reads its log,
    # which in the bucket holds the hook's error.
    await kube.get(BACKUPS, ObjectKey(velero.namespace, name))
    log = await asyncio.to_thread(read_gzip, seaweed_s3, f"backups/{name}/{name}-logs.gz")
    assert 'no such container: \\"no-such-container\\"' in log, log[-2000:]
