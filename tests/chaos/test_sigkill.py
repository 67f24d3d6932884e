"""Scenario c: SIGKILL at random points while 300 jobs flow (docs/operations.md, "What we test").

100 ApplicationInstances get three versions each (300 apply jobs, per-object order kept in the
queue). The operator is SIGKILLed at seeded random moments and restarted each time; the mock
redelivers whatever had no result after its 5 s visibility timeout. Afterwards every job has
exactly one terminal result at the mock, every object holds its last version at generation 3
(an older version applied again after a newer one would raise it: no object was applied twice
with different content), and the idempotency list holds every key exactly once.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter

from tests.chaos import report
from tests.chaos.harness import APPS, ChaosControlPlane, Operators, check_secrets, seeded, wait_for
from vworkspace.testing import ControlPlane

OBJECTS, VERSIONS, KILLS = 100, 3, 4


def job(obj: int, version: int, namespace: str) -> dict[str, object]:
    name = f"obj-{obj}"
    return {
        "id": f"c-{obj}-{version}",
        "kind": "apply",
        "idempotencyKey": f"applicationinstance/{namespace}/{name}@{version}",
        "payload": {
            "apiVersion": "apps.vworkspace.io/v1alpha1",
            "kind": "ApplicationInstance",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"appRef": {"catalogId": f"v{version}"}, "mode": "placeholder"},
        },
    }


def test_sigkill_at_random_points_while_jobs_flow(
    control_plane: ControlPlane,
    vworkspace_crds: list[str],
    kube_namespace: str,
    chaos: ChaosControlPlane,
    operators: Operators,
) -> None:
    rng = seeded("sigkill")
    rest = control_plane.rest()
    started = time.monotonic()
    # Interleave objects at random but keep each object's versions in order.
    cursors = dict.fromkeys(range(OBJECTS), 1)
    jobs = []
    while cursors:
        obj = rng.choice(sorted(cursors))
        jobs.append(job(obj, cursors[obj], kube_namespace))
        cursors[obj] += 1
        if cursors[obj] > VERSIONS:
            del cursors[obj]
    total = len(jobs)
    operator = operators.start()
    chaos.enqueue_all(jobs)
    kill_points = []
    for _ in range(KILLS):
        # Kill once a random share of the remaining jobs is done (or after 20 s at most).
        done_before = len(chaos.results())
        target = done_before + rng.randint(1, max(1, (total - done_before) // 3))
        with contextlib.suppress(AssertionError):  # a slow stretch: kill anyway
            wait_for("progress before a kill", lambda t=target: len(chaos.results()) >= t, 20)  # type: ignore[misc]
        time.sleep(rng.uniform(0, 0.5))  # land anywhere inside a job, not just after a result
        operator.proc.kill()
        operator.proc.wait()
        kill_points.append(len(chaos.results()))
        operator = operators.start()
    wait_for("a result for every job", lambda: len(chaos.results()) >= total, timeout=120)
    results = chaos.results()
    posts = chaos.loop.call(lambda: dict(chaos.state.result_posts))
    outcomes = Counter(r["outcome"] for r in results.values())
    objs = rest.get(f"{APPS}/namespaces/{kube_namespace}/applicationinstances")["items"]
    wrong = [
        (o["metadata"]["name"], o["spec"]["appRef"]["catalogId"], o["metadata"]["generation"])
        for o in objs
        if o["spec"]["appRef"]["catalogId"] != f"v{VERSIONS}"
        or o["metadata"]["generation"] != VERSIONS
    ]
    cm = rest.get(f"/api/v1/namespaces/{kube_namespace}/configmaps/vworkspace-applied-jobs")
    keys = json.loads(cm["data"]["applied-keys.json"])
    duplicate_keys = [k for k, n in Counter(keys).items() if n > 1]
    missing_keys = {str(j["idempotencyKey"]) for j in jobs} - set(keys)
    bad_outcomes = {k: v for k, v in outcomes.items() if k not in ("succeeded", "noop")}
    reposted = sum(1 for n in posts.values() if n > 1)
    leaks = check_secrets(
        within="c. SIGKILL under load",
        rest=rest,
        namespaces=[kube_namespace],
        logs=operators.log_paths(),
        planted=[chaos.token, operators.secret_value],
    )
    passed = (
        len(results) == total
        and not bad_outcomes
        and len(objs) == OBJECTS
        and not wrong
        and not duplicate_keys
        and not missing_keys
    )
    report.record(
        scenario="c. SIGKILL under load",
        load=f"{total} jobs ({OBJECTS} objects x {VERSIONS} versions)",
        faults=f"{KILLS} SIGKILLs at {kill_points} results, restart after each",
        outcome="one terminal result per job, last version everywhere, no duplicate keys"
        if passed
        else f"{total - len(results)} jobs without result, {len(wrong)} objects wrong, "
        f"{len(duplicate_keys)} duplicate and {len(missing_keys)} missing keys, outcomes {dict(outcomes)}",
        figure=f"{total} jobs -> {len(results)} results ({dict(outcomes)}), "
        f"{reposted} results re-posted (409), {len(wrong)} objects applied twice, "
        f"{len(duplicate_keys)} duplicate keys, in {time.monotonic() - started:.0f}s",
        passed=passed,
    )
    assert len(results) == total
    assert not bad_outcomes, f"unexpected outcomes: {bad_outcomes}"
    assert len(objs) == OBJECTS
    assert not wrong, f"objects not at their last version / generation {VERSIONS}: {wrong[:10]}"
    assert not duplicate_keys, f"duplicate idempotency keys: {duplicate_keys[:10]}"
    assert not missing_keys, f"idempotency keys never recorded: {sorted(missing_keys)[:10]}"
    assert not leaks, f"planted secrets found in: {leaks}"
