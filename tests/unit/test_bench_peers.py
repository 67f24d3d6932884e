"""The benchmark peers write what vworkspace writes (bench/peers/objects.py spells the shapes out
again so the peers need not import vworkspace): same Flux objects, same status fields and
conditions. Needs no kopf and no API server."""

from __future__ import annotations

import datetime

from bench.peers import objects
from vworkspace.api.applicationinstance import ApplicationInstanceView
from vworkspace.api.conditions import Condition, ConditionStatus
from vworkspace.api.converter import to_dict
from vworkspace.engines.flux import desired_objects, instance_conditions, rollup

NOW = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.UTC)


def _instance() -> dict[str, object]:
    ai = objects.instance(7, "bench")
    ai["metadata"].update(uid="0b6f6a4e-uid", generation=1)  # type: ignore[attr-defined]
    return ai


def test_the_flux_objects_are_vworkspaces() -> None:
    ai = _instance()
    (_, source), (_, release) = desired_objects(ApplicationInstanceView(ai))
    assert objects.helm_repository(ai) == source
    assert objects.helm_release(ai) == release


def test_the_status_has_vworkspaces_conditions_and_fields() -> None:
    ai = _instance()
    hr = {"metadata": {"generation": 1}}  # applied, not yet reconciled by Flux
    expected = [(c.type, c.status, c.reason, c.message) for c in instance_conditions(rollup(hr))]
    status = objects.status(ai, now=NOW)
    assert [
        (c["type"], c["status"], c["reason"], c["message"]) for c in status["conditions"]
    ] == expected
    vworkspace_condition = to_dict(
        Condition(
            type="Ready",
            status=ConditionStatus.UNKNOWN,
            reason="Reconciling",
            message="waiting for Flux",
            last_transition_time=NOW,
            observed_generation=1,
        )
    )
    assert status["conditions"][1] == vworkspace_condition
    assert set(status) == {
        "observedGeneration",
        "lastReconcileTime",
        "helmReleaseRef",
        "lastAppliedChart",
        "conditions",
    }
    assert status["helmReleaseRef"] == {"name": "app-00007", "namespace": "bench"}


def test_an_unchanged_status_is_not_rewritten_and_keeps_its_transition_times() -> None:
    ai = _instance()
    first = objects.status(ai, now=NOW)
    later = objects.status({**ai, "status": first}, now=NOW + datetime.timedelta(minutes=5))
    assert later["lastReconcileTime"] != first["lastReconcileTime"]
    assert later["conditions"] == first["conditions"]
    assert objects.same_status(first, later)
    assert not objects.same_status(None, later)


def test_reconciled_needs_finalizer_release_ref_and_ready() -> None:
    ai = _instance()
    assert not objects.reconciled(ai)
    ai["metadata"]["finalizers"] = [objects.FINALIZER]  # type: ignore[index]
    assert not objects.reconciled(ai)
    ai["status"] = objects.status(ai, now=NOW)
    assert objects.reconciled(ai)
