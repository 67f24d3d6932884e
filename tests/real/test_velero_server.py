"""The real Velero server backs a namespace up into the SeaweedFS bucket (no operator here).

A smoke test of the ``velero`` and ``seaweed_s3`` fixtures, and the observed truth for the other
tiers: a Backup created by the test for a namespace with a few objects goes through Velero's own
phases to ``Completed`` (printed as one ``velero-phases:`` line; run with ``-s``), and the
bucket, listed with an S3 client, holds what Velero wrote for it, the tarball holding the
namespace's objects. The operator-level Backup/Restore Operations build on the same fixtures.
"""

from __future__ import annotations

import io
import json
import secrets
import tarfile
import time

from vworkspace.api.jsontypes import JsonObj
from vworkspace.testing import ControlPlane
from vworkspace.testing.velero import API, Velero

# Velero's phases after which nothing changes (pkg/apis/velero/v1/backup_types.go).
TERMINAL = {"Completed", "PartiallyFailed", "Failed", "FailedValidation"}
CONFIG_MAPS = ("alpha", "beta", "gamma")


def _phases_until_done(plane: ControlPlane, path: str, velero: Velero, timeout: float) -> JsonObj:
    """Poll the Backup every 50 ms until a terminal phase; print the distinct phases seen."""
    rest = plane.rest()
    seen: list[str] = []
    started = time.monotonic()
    deadline = started + timeout
    backup: JsonObj = {}
    while time.monotonic() < deadline:
        backup = rest.get(path)
        phase = str((backup.get("status") or {}).get("phase") or "(none)")
        if not seen or seen[-1] != phase:
            seen.append(phase)
        if phase in TERMINAL:
            print(
                f"\nvelero-phases: Backup of a namespace with {len(CONFIG_MAPS)} ConfigMaps "
                f"({time.monotonic() - started:.1f}s): {' -> '.join(seen)}"
            )
            return backup
        time.sleep(0.05)
    raise AssertionError(
        f"Backup not done after {timeout}s; phases seen {seen}; status {backup.get('status')}\n"
        f"--- velero server log:\n{velero.log_tail()}"
    )


def test_a_backup_of_a_namespace_completes_and_its_objects_are_in_the_bucket(
    velero: Velero, control_plane: ControlPlane, kube_namespace: str
) -> None:
    rest = control_plane.rest()
    for name in CONFIG_MAPS:
        rest.post(
            f"/api/v1/namespaces/{kube_namespace}/configmaps",
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {}},
        )
    name = f"smoke-{secrets.token_hex(3)}"
    rest.post(
        f"{API}/namespaces/{velero.namespace}/backups",
        {
            "apiVersion": "velero.io/v1",
            "kind": "Backup",
            "metadata": {"name": name, "namespace": velero.namespace},
            "spec": {
                "includedNamespaces": [kube_namespace],
                "storageLocation": velero.location,
                "snapshotVolumes": False,
                "ttl": "1h0m0s",
            },
        },
    )
    backup = _phases_until_done(
        control_plane, f"{API}/namespaces/{velero.namespace}/backups/{name}", velero, 60
    )
    status = backup["status"]
    assert status["phase"] == "Completed", f"{status}\n{velero.log_tail()}"
    assert not status.get("errors"), status
    # The namespace itself and our three ConfigMaps at least (kube-root-ca.crt, when the
    # controller-manager has published it by then).
    assert status["progress"]["itemsBackedUp"] >= len(CONFIG_MAPS) + 1, status

    keys = velero.s3.list_objects(prefix=f"backups/{name}/")
    for suffix in ("velero-backup.json", f"{name}.tar.gz", f"{name}-logs.gz"):
        assert f"backups/{name}/{suffix}" in keys, keys
    stored = velero.s3.client().get_object(
        Bucket=velero.s3.bucket, Key=f"backups/{name}/velero-backup.json"
    )
    assert json.loads(stored["Body"].read())["metadata"]["name"] == name
    tarball = velero.s3.client().get_object(
        Bucket=velero.s3.bucket, Key=f"backups/{name}/{name}.tar.gz"
    )
    with tarfile.open(fileobj=io.BytesIO(tarball["Body"].read()), mode="r:gz") as tar:
        members = tar.getnames()
    for cm in CONFIG_MAPS:
        assert f"resources/configmaps/namespaces/{kube_namespace}/{cm}.json" in members, members

    # The generated secret reaches neither process's log.
    for log in (velero.log_path, velero.s3.log_path):
        assert velero.s3.secret_key not in log.read_text(errors="replace"), log
