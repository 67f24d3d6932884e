"""Scenario b: the control plane is down while condition transitions happen (docs/operations.md,
"What we test").

20 ApplicationInstances with Flux HelmReleases (values from a Secret that holds the planted
secret). With the agent's event buffer empty, the path to the control plane is refused
(TcpProxy) and the test flips every HelmRelease's Ready condition in rounds, waiting after each
round until every instance reflects it, so each transition is seen and counted exactly (from the
instances' conditions before and after each round). ROUNDS is sized so the transitions exceed
the buffer's bound of 1,000 (CI-sized: the outage lasts as long as the rounds take, about a
minute on 2 cores). After the control plane returns: its last Ready event of every instance is
the instance's current Ready, and the drop counter equals exactly the transitions beyond the
bound.
"""

from __future__ import annotations

import time
from typing import Any

from tests.chaos import report
from tests.chaos.harness import (
    APPS,
    HELM_RELEASES,
    ChaosControlPlane,
    Operators,
    check_secrets,
    plant_secret,
    wait_for,
)
from tests.integration.test_reconcilers import flux_failed, flux_succeeded, stamped
from vworkspace.testing import ControlPlane
from vworkspace.testing.objects import managed_instance
from vworkspace.testing.proxy import Mode

INSTANCES, ROUNDS, BOUND = 20, 55, 1000
DROPPED = "vworkspace_operator_event_buffer_dropped_total"
OCCUPANCY = "vworkspace_operator_event_buffer_occupancy"


def conditions(rest: Any, base: str) -> dict[str, dict[str, str]]:
    return {
        i["metadata"]["name"]: {
            c["type"]: c["status"] for c in (i.get("status") or {}).get("conditions") or []
        }
        for i in rest.get(base)["items"]
    }


def test_control_plane_down_while_conditions_change(
    control_plane: ControlPlane,
    vworkspace_crds: list[str],
    third_party_crds: list[str],
    kube_namespace: str,
    chaos: ChaosControlPlane,
    operators: Operators,
) -> None:
    rest = control_plane.rest()
    values = plant_secret(rest, kube_namespace, operators.secret_value)
    base = f"{APPS}/namespaces/{kube_namespace}/applicationinstances"
    hrs = f"{HELM_RELEASES}/namespaces/{kube_namespace}/helmreleases"
    names = [f"b-{i}" for i in range(INSTANCES)]
    operator = operators.start()
    for name in names:
        rest.post(base, managed_instance(name, kube_namespace, values=values))
    wait_for("every HelmRelease", lambda: len(rest.get(hrs)["items"]) == INSTANCES, 60)

    def flip(status: str, round_no: int) -> None:
        for name in names:
            gen = rest.get(f"{hrs}/{name}")["metadata"]["generation"]
            rest.request(
                "PATCH",
                f"{hrs}/{name}/status",
                content_type="application/merge-patch+json",
                body={
                    "status": {
                        "observedGeneration": gen,
                        "conditions": stamped(
                            flux_succeeded("install", message=f"round {round_no}")
                            if status == "True"
                            else flux_failed("upgrade", f"round {round_no}"),
                            gen,
                            at=f"2026-11-22T10:{round_no // 60:02d}:{round_no % 60:02d}Z",
                        ),
                    }
                },
            )

    def settled(status: str) -> bool:
        return all(c.get("Ready") == status for c in conditions(rest, base).values())

    flip("True", 0)
    wait_for("every instance Ready", lambda: settled("True"), 60)
    wait_for("the event buffer empty", lambda: operator.metric(OCCUPANCY) == 0, 30)
    dropped_before = operator.metric(DROPPED) or 0.0

    chaos.set_mode(Mode.REFUSE)  # the control plane goes away
    down_at = time.monotonic()
    transitions = 0
    before = conditions(rest, base)
    status = "True"
    for round_no in range(1, ROUNDS + 1):
        status = "False" if status == "True" else "True"
        flip(status, round_no)
        wait_for(f"round {round_no} reflected", lambda s=status: settled(s), 30)  # type: ignore[misc]
        after = conditions(rest, base)
        transitions += sum(
            1
            for name, conds in after.items()
            for t, s in conds.items()
            if before.get(name, {}).get(t) != s
        )
        before = after
    wait_for("the transitions' events queued", lambda: operator.metric(OCCUPANCY) == BOUND, 10)
    outage = time.monotonic() - down_at
    chaos.set_mode(Mode.FORWARD)  # back
    received_before = chaos.loop.call(lambda: chaos.state.events_received)

    def final_state_known() -> bool:
        events = chaos.loop.call(
            lambda: chaos.state.events(chaos.cluster, kind="ApplicationInstance")
        )
        last: dict[str, str] = {}
        for e in events:
            cond = e["conditions"][0]
            if cond["type"] == "Ready":
                last[e["resourceRef"]["name"]] = cond["status"]
        return all(last.get(n) == status for n in names)

    try:
        caught_up = wait_for("the final state at the control plane", final_state_known, 30)
    except AssertionError:
        caught_up = float("inf")
    wait_for("the buffer flushed", lambda: operator.metric(OCCUPANCY) == 0, 30)
    dropped = (operator.metric(DROPPED) or 0.0) - dropped_before
    expected = max(0, transitions - BOUND)
    delivered = chaos.loop.call(lambda: chaos.state.events_received) - received_before
    alive = operator.proc.poll() is None
    leaks = check_secrets(
        within="b. control plane down",
        rest=rest,
        namespaces=[kube_namespace],
        logs=operators.log_paths(),
        planted=[chaos.token, operators.secret_value],
    )
    passed = caught_up != float("inf") and dropped == expected and alive
    report.record(
        scenario="b. control plane down",
        load=f"{transitions} condition transitions on {INSTANCES} instances "
        f"({ROUNDS} rounds of HelmRelease Ready flips)",
        faults=f"control plane refused for {outage:.0f}s; event buffer bound {BOUND}",
        outcome=f"final state known {caught_up:.1f}s after the return; drops exactly beyond the bound"
        if passed
        else f"final state known: {caught_up != float('inf')}, dropped {dropped:.0f} "
        f"(expected {expected}), operator up: {alive}",
        figure=f"{transitions} transitions -> {dropped:.0f} dropped (expected {expected}), "
        f"{delivered} events delivered after the return, final Ready of all {INSTANCES} "
        f"instances at the control plane in {caught_up:.1f}s",
        passed=passed,
    )
    assert alive, "the operator exited"
    if caught_up == float("inf"):
        events = chaos.loop.call(
            lambda: chaos.state.events(chaos.cluster, kind="ApplicationInstance", name=names[0])
        )
        tail = [
            (e["conditions"][0]["type"], e["conditions"][0]["status"], e["eventKey"][-40:])
            for e in events
            if e["conditions"][0]["type"] == "Ready"
        ][-4:]
        raise AssertionError(
            f"the control plane did not learn the final state (Ready={status}); last Ready "
            f"events of {names[0]} in arrival order: {tail}"
        )
    assert dropped == expected, f"dropped {dropped}, expected exactly {expected}"
    assert not leaks, f"planted secrets found in: {leaks}"
