"""The demo's ``--backup`` steps: the installed application backed up by the real Velero into S3.

After the install (:mod:`vworkspace.devtools.demo_install`), ``python -m vworkspace demo
--backup`` goes on:

1. SeaweedFS (``weed mini``) serves S3 on 127.0.0.1 with a bucket for Velero;
2. the Velero server (with velero-plugin-for-aws) runs against the demo's cluster, its
   BackupStorageLocation ``default`` pointing at that bucket and Available;
3. the control plane queues one ``apply`` job for a Backup Operation of ``demo/hello``
   (engine ``velero``, no volume snapshots): the same Pull path as the install, signed under
   ``--signed``; the agent acks it and server-side applies the Operation;
4. the operator makes a Velero Backup of the instance's namespace, and Velero runs it: the
   Backup's phases are shown as seen (e.g. ``Queued -> InProgress -> Completed``: a poll
   every 0.2 s misses the shortest ones);
5. the operator rolls that up: the Operation ``Succeeded``, and the agent sends
   ``Succeeded=True`` to the control plane;
6. the bucket is listed with an S3 client: the backup's objects (``velero-backup.json``, the
   ``.tar.gz`` of the resources, the logs, ...), their count and size.

The ApplicationInstance carries ``ops.vworkspace.io/backup: velero`` only under ``--backup``: an
Operation needs that capability on its target (docs/webhooks.md, rule 7, which the Operation
reconciler enforces without the webhook too).

A Backup Velero ends Failed, PartiallyFailed or FailedValidation, or an Operation the operator
ends Failed, fails the step at once with Velero's or the operator's own message rather than
after the timeout.
"""

from __future__ import annotations

import asyncio
import datetime
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.devtools.demo_core import CLUSTER_ID, BackupBinaries, Demo, wait_for
from vworkspace.devtools.demo_watch import Watch, condition, state_of
from vworkspace.engines.base import State
from vworkspace.engines.velero import BACKUPS, rollup
from vworkspace.kube.rest.resources import OPERATIONS
from vworkspace.testing.s3 import VERSION as WEED_VERSION
from vworkspace.testing.s3 import S3Error, SeaweedS3, find_weed
from vworkspace.testing.velero import AWS_PLUGIN, VELERO, VERSIONS, Velero, VeleroError
from vworkspace.testing.velero import find_binaries as find_velero

BACKUP_JOB_ID = "demo-backup-1"
OPERATION_NAME = "hello-backup"
# The phases Velero ends a failed Backup in (with allowPartialFailure unset, the engine fails
# the Operation on each of them too).


def find_backup_binaries(env: Mapping[str, str], *, beside: Path) -> BackupBinaries:
    """The binaries, looked for where the tests look (``beside`` the Kubernetes binaries, then
    the cache); a :class:`RuntimeError` naming everything missing and how to build it."""
    problems = []
    weed: Path | None = None
    velero: dict[str, Path] = {}
    try:
        weed = find_weed(env, beside=beside)
    except S3Error as err:
        problems.append(f"--backup cannot start S3: {err}")
    try:
        velero = find_velero(env, beside=beside)
    except VeleroError as err:
        problems.append(f"--backup cannot start Velero: {err}")
    if weed is None or problems:
        raise RuntimeError("; ".join(problems))
    return BackupBinaries(weed=weed, velero=velero)


def describe_binaries(binaries: BackupBinaries) -> str:
    return (
        f"for --backup: weed {WEED_VERSION}, velero {VERSIONS[VELERO]}, {AWS_PLUGIN} "
        f"{VERSIONS[AWS_PLUGIN]} ({binaries.velero[VELERO].parent})"
    )


async def start_storage(demo: Demo) -> None:
    """Steps ``s3`` and ``velero``: started from the main thread (PDEATHSIG, as every process
    of the demo), so the loop, and the mock with it, stand still while they start (weed about
    5 s, Velero about 3 s); the agent's requests wait in the socket's backlog meanwhile, well
    within their timeouts (5 min)."""
    assert demo.backup_binaries is not None
    assert demo.plane is not None
    with demo.out.step("s3"):
        demo.s3 = SeaweedS3(
            binary=demo.backup_binaries.weed,
            data_dir=demo.workdir / "s3",
            start_timeout=demo.timeout,
        )
        demo.s3.start()
        demo.out.detail(
            f"weed mini ready in {demo.s3.startup_seconds or 0:.1f}s: S3 at "
            f"{demo.s3.endpoint_url}, bucket {demo.s3.bucket}, region {demo.s3.region} "
            f"(keys generated, in {demo.s3.credentials_file})"
        )
    with demo.out.step("velero"):
        demo.velero = Velero(
            plane=demo.plane,
            binaries=demo.backup_binaries.velero,
            s3=demo.s3,
            data_dir=demo.workdir / "velero",
            start_timeout=demo.timeout,
            lock_timeout=demo.timeout,
        )
        demo.velero.start()
        waited = demo.velero.lock_wait_seconds
        if waited >= 1:
            demo.out.detail(f"waited {waited:.0f}s for another Velero server on this machine")
        demo.out.detail(
            f"velero server {VERSIONS[VELERO]} with {AWS_PLUGIN} {VERSIONS[AWS_PLUGIN]} ready "
            f"in {demo.velero.startup_seconds or 0:.1f}s: BackupStorageLocation "
            f"{demo.velero.namespace}/{demo.velero.location} Available (s3://{demo.s3.bucket} "
            f"at {demo.s3.endpoint_url}, path-style)"
        )
    await asyncio.sleep(0)  # a step boundary the loop can be interrupted at


def stop_storage(demo: Demo) -> str:
    """Stop Velero, then S3 (what ``--backup`` started); the logs are kept, the bulk (weed's
    data, Velero's staging folder) removed. Returns what was stopped, for the last line."""
    stopped = ""
    if demo.velero is not None:
        demo.velero.stop(keep_data_dir=True)
        shutil.rmtree(demo.workdir / "velero" / "tmp", ignore_errors=True)
        stopped += "Velero, "
    if demo.s3 is not None:
        demo.s3.stop(keep_data_dir=True)
        shutil.rmtree(demo.workdir / "s3" / "data", ignore_errors=True)
        stopped += "S3, "
    return stopped


def operation(demo: Demo) -> JsonObj:
    """The Backup Operation the job carries: the instance's namespace into the BSL
    ``default``, without volume snapshots (there are no volumes, and no snapshotter)."""
    key = demo.instance_key()
    return {
        "apiVersion": "ops.vworkspace.io/v1alpha1",
        "kind": "Operation",
        "metadata": {"name": OPERATION_NAME, "namespace": key.namespace},
        "spec": {
            "targetRef": {
                "apiVersion": "apps.vworkspace.io/v1alpha1",
                "kind": "ApplicationInstance",
                "name": key.name,
            },
            "type": "Backup",
            "engine": "velero",
            "parameters": {"storageLocation": "default", "snapshotVolumes": False},
        },
    }


def operation_key(demo: Demo) -> ObjectKey:
    return ObjectKey(demo.instance_key().namespace, OPERATION_NAME)


def _job(demo: Demo) -> JsonObj:
    key = operation_key(demo)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "id": BACKUP_JOB_ID,
        "kind": "apply",
        "idempotencyKey": f"operation/{key.namespace}/{key.name}@1",
        "createdAt": now,
        "payload": operation(demo),
    }


async def follow_backup(demo: Demo) -> None:
    """Steps ``backup-job`` to ``bucket``: S3 and Velero run already (``demo_cmd``)."""
    await _backup_job(demo)
    await _backed_up(demo)
    await _succeeded(demo)
    await _bucket(demo)


async def _backup_job(demo: Demo) -> None:
    admin, mock, kube = demo.admin, demo.mock, demo.kube
    assert admin is not None
    assert mock is not None
    assert kube is not None
    key = operation_key(demo)

    async def applied() -> JsonObj | None:
        result = await admin.job_result(BACKUP_JOB_ID)
        if result is not None and result.get("outcome") != "succeeded":
            raise RuntimeError(
                f"job {BACKUP_JOB_ID} result is {result.get('outcome')}: {result.get('error', '')}"
            )
        return result if mock.was_acked(BACKUP_JOB_ID) else None

    with demo.out.step("backup-job"):
        await admin.enqueue(CLUSTER_ID, _job(demo))
        demo.backup_enqueued_at = time.monotonic()
        params = operation(demo)["spec"]["parameters"]
        signed = ", signed by the mock like the install's" if demo.args.signed else ""
        demo.out.detail(
            f"job {BACKUP_JOB_ID} (kind apply): Operation {key}, type Backup, engine velero, "
            f"target ApplicationInstance {demo.instance_key()}, parameters {params}{signed}"
        )
        result = await wait_for(
            demo, what=f"the ack and the result of job {BACKUP_JOB_ID}", probe=applied
        )
        ref = result.get("appliedRef") or {}
        demo.out.detail(
            f"job {BACKUP_JOB_ID} acked, result: succeeded (applied {ref.get('kind')} "
            f"{ref.get('namespace')}/{ref.get('name')})"
        )
        demo.operation = Watch(kube, OPERATIONS, key)


async def _operation_now(demo: Demo) -> JsonObj | None:
    """The Operation now (its phases and conditions recorded); raises once it has failed."""
    assert demo.operation is not None
    op = await demo.operation.fetch()
    phase = ((op or {}).get("status") or {}).get("phase")
    if op is not None and phase in ("Failed", "Cancelled"):
        cond = condition(op, phase)
        raise RuntimeError(
            f"Operation {demo.operation.key} {phase}: {state_of(cond)}: {cond.get('message', '')}"
            f"; {demo.operation.explain()}"
        )
    return op


async def _backup_now(demo: Demo) -> JsonObj | None:
    """The operator's Velero Backup (named in the Operation's ``status.engineRef``) now, its
    phases recorded; raises when Velero ended it failed."""
    kube = demo.kube
    assert kube is not None
    op = await _operation_now(demo)
    if demo.backup is None:
        ref = ((op or {}).get("status") or {}).get("engineRef") or {}
        if not ref.get("name"):
            return None
        demo.backup = Watch(kube, BACKUPS, ObjectKey(ref.get("namespace"), ref["name"]))
    backup = await demo.backup.fetch()
    status = (backup or {}).get("status") or {}
    # The operator's own roll-up words it, so the demo says what the Operation will say.
    state, message = rollup("Backup", status, key=demo.backup.key)
    if state is State.FAILED:
        raise RuntimeError(f"Velero ended the backup: {message}")
    return backup


def _explain(demo: Demo) -> str:
    assert demo.operation is not None
    parts = [demo.operation.explain()]
    if demo.backup is not None:
        parts.append(f"{demo.backup.name}: phases seen {demo.backup.phases.text()}")
    return "; ".join(parts)


async def _backed_up(demo: Demo) -> None:
    async def completed() -> JsonObj | None:
        backup = await _backup_now(demo)
        phase = ((backup or {}).get("status") or {}).get("phase")
        return backup if phase == "Completed" else None

    with demo.out.step("backed-up"):
        backup = await wait_for(
            demo,
            what=f"a Velero Backup of Operation {operation_key(demo)} Completed",
            probe=completed,
            explain=lambda: _explain(demo),
        )
        assert demo.backup is not None
        spec, status = backup.get("spec") or {}, backup.get("status") or {}
        progress = status.get("progress") or {}
        demo.out.detail(
            f"{demo.backup.name}: namespaces {spec.get('includedNamespaces')}, storage location "
            f"{spec.get('storageLocation')}: {progress.get('itemsBackedUp', '?')}/"
            f"{progress.get('totalItems', '?')} items backed up, {status.get('warnings', 0)} "
            f"warnings, {status.get('errors', 0)} errors"
        )
        demo.out.detail(f"Velero Backup phases seen: {demo.backup.phases.text()}")


def _succeeded_true(events: list[JsonObj]) -> bool:
    return any(
        c.get("type") == "Succeeded" and c.get("status") == "True"
        for event in events
        for c in event.get("conditions") or []
    )


async def _succeeded(demo: Demo) -> None:
    admin = demo.admin
    assert admin is not None
    assert demo.operation is not None
    key = demo.operation.key

    async def reported() -> JsonObj | None:
        op = await _operation_now(demo)
        if ((op or {}).get("status") or {}).get("phase") != "Succeeded":
            return None
        found = await admin.events(
            CLUSTER_ID, kind="Operation", namespace=key.namespace or "", name=key.name
        )
        return op if _succeeded_true(found) else None

    with demo.out.step("backup-succeeded"):
        op = await wait_for(
            demo,
            what=f"Operation {key} Succeeded, and Succeeded=True at the control plane",
            probe=reported,
            explain=lambda: _explain(demo),
        )
        status = op.get("status") or {}
        cond = condition(op, "Succeeded")
        demo.out.detail(
            f"{state_of(cond)}: {cond.get('message', '')} (outputs {status.get('outputs')}); "
            f"Succeeded=True at the control plane "
            f"{time.monotonic() - demo.backup_enqueued_at:.1f}s after the job was queued"
        )
        demo.out.detail(
            f"Operation phases seen: {demo.operation.phases.text()}; conditions seen: "
            f"{demo.operation.log.text()}"
        )


def _list_bucket(s3: SeaweedS3, prefix: str) -> list[tuple[str, int]]:
    """(key, size) of every object under ``prefix``: boto3, as the tests list it."""
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=s3.bucket, Prefix=prefix)
    return sorted(
        (str(item["Key"]), int(item["Size"])) for page in pages for item in page.get("Contents", [])
    )


async def _bucket(demo: Demo) -> None:
    assert demo.backup is not None
    s3 = demo.s3
    assert s3 is not None
    name = demo.backup.key.name
    with demo.out.step("bucket"):
        everything = await asyncio.to_thread(_list_bucket, s3, "")
        mine = [(key, size) for key, size in everything if f"/{name}/" in f"/{key}"]
        if not mine:
            listed = ", ".join(key for key, _ in everything) or "none"
            raise RuntimeError(
                f"no object of backup {name} in bucket {s3.bucket} ({len(everything)} objects: "
                f"{listed})"
            )
        folder = mine[0][0].rsplit("/", 1)[0]
        demo.out.detail(
            f"s3://{s3.bucket}/{folder}/ at {s3.endpoint_url}: {len(mine)} objects, "
            f"{sum(size for _, size in mine)} bytes ({len(everything)} in the bucket)"
        )
        for key, size in mine:
            demo.out.detail(f"{key.rsplit('/', 1)[-1]} ({size} bytes)")
        demo.bucket_objects = [key for key, _ in mine]
