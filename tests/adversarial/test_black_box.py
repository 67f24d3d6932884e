"""Black-box regressions of issue 24 on the real API server: the operator process with the
namespace policy, jobs through the mock control plane, the verdict read from the cluster.

* F1: delete jobs whose name or namespace climbs out of the request path to
  ``/apis/velero.io/v1/namespaces/<victim>/backups/keep-me`` (for an ApplicationInstance, for the
  cluster-scoped Cluster and through the ``delete-application-instance`` intent) must leave each
  victim Backup in place.
* F2: an apply of Namespace ``adv-target-x-…`` with an ownerReference to a Namespace that does
  not exist must not end in Terminating. The garbage collector is proven live first: a control
  Namespace created directly with the same dangling ownerReference is put into deletion, and the
  job's Namespace is judged only after that (the GC handles Namespaces in event order).
"""

from __future__ import annotations

import secrets
from typing import Any

from tests.adversarial.conftest import POLICY
from tests.adversarial.corpus import APPS, KEEP, OPS, TARGET_A, apply, delete, delete_intent
from tests.adversarial.tier import gc_probe, wait_drained
from tests.chaos.harness import ChaosControlPlane, Operators
from tests.integration.operator_process import wait_until
from vworkspace.api.jsontypes import JsonObj
from vworkspace.testing import ApiError, ControlPlane


def _backup(rest: Any, namespace: str) -> str:
    """A user's Velero Backup ``keep-me`` in a fresh namespace; returns its uid."""
    rest.post(
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
    )
    created = rest.post(
        f"/apis/velero.io/v1/namespaces/{namespace}/backups",
        {
            "apiVersion": "velero.io/v1",
            "kind": "Backup",
            "metadata": {"name": KEEP, "namespace": namespace},
            "spec": {"includedNamespaces": [namespace]},
        },
    )
    return str(created["metadata"]["uid"])


def _run(chaos: ChaosControlPlane, jobs: dict[str, JsonObj]) -> dict[str, JsonObj]:
    chaos.enqueue_all([{"id": job_id, **job} for job_id, job in jobs.items()])
    wait_until("a result for every job", lambda: set(jobs) <= set(chaos.results()), timeout=60)
    results = chaos.results()
    return {job_id: results[job_id] for job_id in jobs}


def test_f1_forged_paths_in_delete_jobs_leave_the_victim_backup(
    control_plane: ControlPlane, adv_chaos: ChaosControlPlane, adv_operators: Operators
) -> None:
    rest = control_plane.rest()
    suffix = secrets.token_hex(3)
    victims = {how: f"adv-f1-{how}-{suffix}" for how in ("instance", "cluster", "intent")}
    uids = {how: _backup(rest, ns) for how, ns in victims.items()}
    climb = "/../../../../../apis/velero.io/v1/namespaces/{ns}/backups/" + KEEP + "#"
    jobs = {
        f"f1-instance-{suffix}": delete(
            APPS, "ApplicationInstance", "x", TARGET_A + climb.format(ns=victims["instance"])
        ),
        f"f1-cluster-{suffix}": delete(
            OPS,
            "Cluster",
            f"../../../velero.io/v1/namespaces/{victims['cluster']}/backups/{KEEP}",
        ),
        f"f1-intent-{suffix}": delete_intent("x", TARGET_A + climb.format(ns=victims["intent"])),
    }
    operator = adv_operators.start(*POLICY)
    results = _run(adv_chaos, jobs)
    wait_drained(operator)

    lost = []
    for (job_id, job), (how, ns) in zip(jobs.items(), victims.items(), strict=True):
        path = f"/apis/velero.io/v1/namespaces/{ns}/backups/{KEEP}"
        try:
            meta = rest.get(path)["metadata"]
            state = (
                "" if meta["uid"] == uids[how] and not meta.get("deletionTimestamp") else "touched"
            )
        except ApiError as err:
            if err.status != 404:
                raise
            state = "deleted"
        if state:
            lost.append(
                f"Backup {ns}/{KEEP} {state} by job {job_id} ({how}: {job['payload']}) "
                f"-> {results[job_id].get('outcome')}"
            )
    assert not lost, "F1: a delete job reached a Velero Backup outside its target:\n" + "\n".join(
        lost
    )
    for job_id in jobs:  # refused, naming the field, once the paths are confined
        assert results[job_id].get("outcome") != "succeeded", (job_id, results[job_id])


def test_f2_namespace_with_a_missing_owner_is_not_garbage_collected(
    control_plane: ControlPlane, adv_chaos: ChaosControlPlane, adv_operators: Operators
) -> None:
    rest = control_plane.rest()
    name = f"adv-target-x-{secrets.token_hex(3)}"
    missing_owner = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "name": "adv-no-such-owner",
        "uid": "00000000-0000-4000-8000-" + secrets.token_hex(6),
    }
    job = apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "ownerReferences": [missing_owner]},
        }
    )
    adv_operators.start(*POLICY)
    job_id = f"f2-{name}"
    result = _run(adv_chaos, {job_id: job})[job_id]
    # The GC is live and has handled Namespaces up to now: the control is being deleted.
    gc_probe(rest, namespace_prefix="adv-target-gc-")
    try:
        meta = rest.get(f"/api/v1/namespaces/{name}")["metadata"]
    except ApiError as err:
        if err.status != 404:
            raise
        meta = {}
    if result.get("outcome") != "succeeded":  # refused, naming the field: nothing was created
        assert "ownerReferences" in str(result.get("error")), result
        assert not meta.get("ownerReferences"), meta
        return
    applied = (result.get("appliedRef") or {}).get("uid")
    what = (
        f"F2: job {job_id} applied Namespace {name} (uid {applied}) with an ownerReference to a "
        "missing owner and answered succeeded; then the garbage collector "
    )
    assert meta, what + "removed it"
    assert not meta.get("deletionTimestamp"), what + f"deleted it at {meta['deletionTimestamp']}"
    assert meta.get("uid") == applied, what + f"replaced it (uid {meta.get('uid')})"
