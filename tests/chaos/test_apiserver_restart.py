"""Scenario d: kube-apiserver restarted over the same etcd, then etcd compacted, while the
operator runs (docs/operations.md, "What we test").

Every watch of the operator breaks; the new apiserver's watch cache starts empty, and the
compaction right after it makes the operator's last resourceVersions too old, so informers must
relist. Objects change spec (new generations) right after the restart and after a second
compaction. Afterwards zero objects may be left unreconciled: every ApplicationInstance's
status.observedGeneration equals its metadata.generation, and the operator never exited.
"""

from __future__ import annotations

import time
from typing import Any

from tests.chaos import report
from tests.chaos.harness import (
    APPS,
    ChaosControlPlane,
    Operators,
    check_secrets,
    plant_secret,
    wait_for,
)
from vworkspace.testing import ApiError, ControlPlane

INSTANCES, DOWN = 20, 3.0


def instance(name: str, namespace: str, catalog: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps.vworkspace.io/v1alpha1",
        "kind": "ApplicationInstance",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"appRef": {"catalogId": catalog}, "mode": "placeholder"},
    }


def test_apiserver_restart_and_compaction_leave_nothing_unreconciled(
    control_plane: ControlPlane,
    vworkspace_crds: list[str],
    kube_namespace: str,
    chaos: ChaosControlPlane,
    operators: Operators,
) -> None:
    rest = control_plane.rest()
    plant_secret(rest, kube_namespace, operators.secret_value)
    base = f"{APPS}/namespaces/{kube_namespace}/applicationinstances"
    names = [f"d-{i}" for i in range(INSTANCES)]
    operator = operators.start()
    for name in names:
        rest.post(base, instance(name, kube_namespace, "v1"))

    def unreconciled() -> list[str]:
        try:
            items = control_plane.rest(timeout=5).get(base)["items"]
        except (ApiError, OSError):
            return ["<apiserver unreachable>"]
        return [
            i["metadata"]["name"]
            for i in items
            if (i.get("status") or {}).get("observedGeneration") != i["metadata"]["generation"]
        ]

    wait_for("all instances reconciled before the restart", lambda: not unreconciled(), 60)

    def bump(catalog: str) -> None:
        for name in names:
            rest.request(
                "PATCH",
                f"{base}/{name}",
                content_type="application/merge-patch+json",
                body={"spec": {"appRef": {"catalogId": catalog}}},
            )

    started = time.monotonic()
    restart_seconds = control_plane.restart_apiserver(down_for=DOWN)
    compacted = [control_plane.compact_etcd()]
    bump("v2")
    compacted.append(control_plane.compact_etcd())
    bump("v3")
    try:
        converged = wait_for(
            "every observedGeneration == generation", lambda: not unreconciled(), 90
        )
    except AssertionError:
        converged = -1.0
    left = unreconciled()
    alive = operator.proc.poll() is None
    leaks = check_secrets(
        within="d. API server restart and compaction",
        rest=rest,
        namespaces=[kube_namespace],
        logs=operators.log_paths(),
        planted=[chaos.token, operators.secret_value],
    )
    passed = not left and alive
    report.record(
        scenario="d. API server restart and compaction",
        load=f"{INSTANCES} instances, 2 spec changes each after the restart",
        faults=f"kube-apiserver down {restart_seconds:.1f}s (restart over the same etcd), "
        f"2 etcd compactions (to revisions {compacted})",
        outcome="zero objects unreconciled, operator up"
        if passed
        else f"{len(left)} objects unreconciled, operator up: {alive}",
        figure=f"{INSTANCES} objects -> {len(left)} with observedGeneration != generation; "
        f"converged {converged:.1f}s after the compactions "
        f"({time.monotonic() - started:.0f}s in all)",
        passed=passed,
    )
    assert alive, f"the operator exited:\n{operator.output()[-3000:]}"
    assert not left, f"unreconciled after restart and compaction: {left}"
    assert not leaks, f"planted secrets found in: {leaks}"
