"""Scenario a: hostile answers on every agent endpoint (docs/operations.md, "What we test").

Every fault of :class:`~vworkspace.testing.faultproxy.Fault` (HTML 200 echoing the request,
truncated JSON, a body cut short, JSON of the wrong shape, an 8 MiB body, a reset, a stall,
500/502/503/429 with and without Retry-After) is served once on the jobs fetch, on acks, on
results and on events, in a seeded random order, while real jobs flow. The operator must stay
up (an exit is counted, attributed to the fault just served, and the operator restarted so the
scenario can go on and count them all), apply nothing from a hostile answer (the fetch faults
carry a marker job; no marker may exist afterwards), and serve every real job and the next one.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from pathlib import Path

from tests.chaos import report
from tests.chaos.harness import (
    APPS,
    ChaosControlPlane,
    Operators,
    check_secrets,
    exists,
    seeded,
    wait_for,
)
from vworkspace.testing import ControlPlane
from vworkspace.testing.faultproxy import ALL_FAULTS, Fault

ENDPOINTS = {
    "jobs": "/api/agent/jobs",
    "ack": "/api/agent/jobs/*/ack",
    "result": "/api/agent/jobs/*/result",
    "events": "/api/agent/events",
}
DEADLINE = 150.0


def job(i: int, namespace: str) -> dict[str, object]:
    name = f"real-{i}"
    return {
        "id": f"a-{i}",
        "kind": "apply",
        "idempotencyKey": f"applicationinstance/{namespace}/{name}@1",
        "payload": {
            "apiVersion": "apps.vworkspace.io/v1alpha1",
            "kind": "ApplicationInstance",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"appRef": {"catalogId": "real"}, "mode": "placeholder"},
        },
    }


def test_hostile_answers_on_every_agent_endpoint(
    control_plane: ControlPlane,
    vworkspace_crds: list[str],
    kube_namespace: str,
    chaos: ChaosControlPlane,
    operators: Operators,
    tmp_path: Path,
) -> None:
    rng = seeded("hostile answers")
    rest = control_plane.rest()
    started = time.monotonic()
    operator = operators.start()
    chaos.enqueue(job(0, kube_namespace))
    wait_for("the first real job", lambda: "a-0" in chaos.results(), timeout=30)

    for pattern in ENDPOINTS.values():
        order = list(ALL_FAULTS)
        rng.shuffle(order)
        chaos.loop.call(lambda p=pattern, o=order: chaos.faults.inject(p, o))  # type: ignore[misc]
    injected = chaos.loop.call(chaos.faults.pending)

    exits: Counter[str] = Counter()
    enqueued = 1
    last_served: Counter[tuple[str, Fault]] = Counter()
    while chaos.loop.call(chaos.faults.pending) and time.monotonic() - started < DEADLINE:
        served = chaos.loop.call(lambda: Counter(chaos.faults.served))
        if operator.proc.poll() is not None:
            fresh = served - last_served
            blame = ", ".join(f"{f.value} on {p}" for p, f in fresh) or "no fault in flight"
            exits[blame] += 1
            operator = operators.start()
            served = chaos.loop.call(lambda: Counter(chaos.faults.served))
        last_served = served
        results = chaos.results()
        if sum(1 for i in range(enqueued) if f"a-{i}" in results) >= enqueued - 2:
            for _ in range(3):  # keep acks, results and events flowing
                chaos.enqueue(job(enqueued, kube_namespace))
                enqueued += 1
        time.sleep(0.1)
    served_total = sum(chaos.loop.call(lambda: Counter(chaos.faults.served)).values())

    final = f"a-{enqueued}"
    chaos.enqueue(job(enqueued, kube_namespace))
    enqueued += 1
    try:
        wait_for("the next real job after the faults", lambda: final in chaos.results(), 60)
        served_next = True
    except AssertionError:
        served_next = False
    if operator.proc.poll() is not None:
        exits["after the faults"] += 1
    with contextlib.suppress(AssertionError):  # counted below
        wait_for(
            "a result for every real job",
            lambda: all(f"a-{i}" in chaos.results() for i in range(enqueued)),
            timeout=30,
        )
    results = chaos.results()
    unanswered = [f"a-{i}" for i in range(enqueued) if f"a-{i}" not in results]
    markers = chaos.loop.call(lambda: list(chaos.faults.markers))
    applied_markers = [
        m
        for m in markers
        if exists(rest, f"{APPS}/namespaces/{kube_namespace}/applicationinstances/{m}")
    ]
    leaks = check_secrets(
        within="a. hostile answers",
        rest=rest,
        namespaces=[kube_namespace],
        logs=operators.log_paths(),
        planted=[chaos.token, operators.secret_value],
    )
    n_exits = sum(exits.values())
    passed = (
        n_exits == 0
        and not applied_markers
        and served_next
        and not unanswered
        and served_total == injected
    )
    report.record(
        scenario="a. hostile answers",
        load=f"{enqueued} real jobs",
        faults=f"{served_total} of {injected} hostile answers ({len(ALL_FAULTS)} kinds x "
        f"{len(ENDPOINTS)} endpoints: {', '.join(ENDPOINTS)})",
        outcome=(
            "operator stayed up, applied nothing hostile, served every job"
            if passed
            else f"{n_exits} operator exits, {len(applied_markers)} hostile objects applied, "
            f"{len(unanswered)} real jobs unanswered, next job served: {served_next}"
        ),
        figure=f"{served_total} hostile answers -> {n_exits} exits, "
        f"{len(applied_markers)} applied, {enqueued - len(unanswered)}/{enqueued} real jobs "
        f"answered in {time.monotonic() - started:.0f}s",
        passed=passed,
    )
    assert served_total == injected, "not every scripted fault was served before the deadline"
    assert not exits, f"the operator exited: {dict(exits)}"
    assert not applied_markers, f"applied from hostile answers: {applied_markers}"
    assert served_next, "the next real job after the faults was not served"
    assert not unanswered, f"real jobs without a result: {unanswered}"
    assert not leaks, f"planted secrets found in: {leaks}"
