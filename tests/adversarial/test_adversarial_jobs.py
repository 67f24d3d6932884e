"""The adversarial tier: a job touches only the object it names (issue 24, deliverable 7).

The real operator process (as the chaos tier runs it, webhook off, its defaults otherwise) with
the namespace policy ``--agent-allowed-namespaces adv-target-*`` against the real API server
with kube-controller-manager (so the garbage collector and the namespace controller act on what
jobs write). Victims are planted outside the target (tests/adversarial/victims.py). The
hand-written corpus and at least 1,000 hypothesis-generated composites of the same building
blocks (tests/adversarial/corpus.py) go through the mock control plane in batches.

The assertion is on the cluster, not on job results: before and after every batch, a snapshot of
every object outside the target (tests/adversarial/snapshot.py) must be identical, and an object
a job applied must not be removed by the server afterwards (ownerReferences). Any difference is
printed with the jobs that name the object. The seed is printed; ``CHAOS_SEED=<n>`` replays.

Not covered on purpose: the Velero namespace (``--velero-namespace``, default ``velero``) does not
exist here. With Velero installed, a Backup or Restore Operation in the target writes its Velero
object there by design, which this tier would report; whether a Restore's ``namespaceMapping``
may name other namespaces is Velero's and the webhook's concern, not the agent's.
"""

from __future__ import annotations

import json
import os
import secrets
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed

from tests.adversarial import tier
from tests.adversarial.conftest import POLICY
from tests.adversarial.corpus import TARGET_GLOB, Victims, corpus, generated_job
from tests.adversarial.snapshot import CHURN, Snapshotter, operator_churn
from tests.adversarial.tier import Job, Tier
from tests.adversarial.victims import replant
from tests.chaos import report
from tests.chaos.harness import ChaosControlPlane, Operators, check_secrets
from vworkspace.testing import ControlPlane

WANTED, BATCH = 1000, 100
SHOWN = 40  # findings printed in full; the figure line counts them all


def generate(victims: Victims, seed: int) -> list[tuple[str, dict[str, object]]]:
    found: dict[str, tuple[str, dict[str, object]]] = {}

    @hypothesis_seed(seed)
    @settings(
        max_examples=WANTED * 2,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(generated_job(victims))
    def collect(example: tuple[str, dict[str, object]]) -> None:
        if len(found) < WANTED + 50:
            found.setdefault(json.dumps(example[1], sort_keys=True), example)

    collect()
    return list(found.values())


def test_jobs_touch_only_their_target(
    control_plane: ControlPlane,
    kube_namespace: str,
    adv_chaos: ChaosControlPlane,
    adv_operators: Operators,
    victims: Victims,
    victim_secret: str,
) -> None:
    started = time.monotonic()
    # CHAOS_SEED replays a run, as in the chaos tier; the seed is also in the figure line.
    seed = int(os.environ.get("CHAOS_SEED") or secrets.randbits(32))
    print(f"adversarial: seed {seed} (replay with CHAOS_SEED={seed})")
    hand = corpus(victims)
    generated = generate(victims, seed)
    assert len(generated) >= WANTED, f"hypothesis produced only {len(generated)} distinct jobs"
    jobs = [Job(f"c-{i}", f"corpus: {why}", job) for i, (why, job) in enumerate(hand)]
    jobs += [Job(f"g-{i}", f"generated: {why}", job) for i, (why, job) in enumerate(generated)]

    rest = control_plane.rest()
    operator = adv_operators.start(*POLICY)
    runner = Tier(
        rest=rest,
        chaos=adv_chaos,
        operators=adv_operators,
        operator=operator,
        snapshots=Snapshotter(rest, TARGET_GLOB, CHURN + operator_churn(kube_namespace)),
        extra_args=POLICY,
        replant=lambda: replant(rest, victims, victim_secret),
    )
    restless = runner.settle()
    assert not restless, "outside the target, with no job sent yet, these keep changing: " + (
        "; ".join(str(c) for c in restless)
    )
    for first in range(0, len(jobs), BATCH):
        runner.run(jobs[first : first + BATCH])

    targets = [
        ns["metadata"]["name"]
        for ns in rest.get("/api/v1/namespaces")["items"]
        if runner.snapshots.in_target(ns["metadata"]["name"])
    ]
    leaks = check_secrets(
        within="h. adversarial jobs",
        rest=rest,
        namespaces=targets,
        logs=adv_operators.log_paths(),
        planted=[victim_secret, adv_chaos.token, adv_operators.secret_value],
    )
    tally = runner.tally
    line = tier.figure_line(tally, corpus=len(hand), generated=len(generated))
    tier.FIGURES.append(
        line + f", in {time.monotonic() - started:.0f}s (replay with CHAOS_SEED={seed})"
    )
    passed = not (tally.findings or tally.removed or tally.unanswered or tally.exits or leaks)
    report.record(
        scenario="h. adversarial jobs",
        load=f"{tally.tried} crafted and generated jobs in batches of {BATCH}",
        faults="path tricks, odd kinds, metadata the server acts on, cross-namespace specs",
        outcome="nothing outside the target changed" if passed else "see the test's failure",
        figure=line,
        passed=passed,
    )
    problems = [f"objects changed outside the target ({len(tally.findings)}):"]
    problems += [f"  {f}" for f in tally.findings[:SHOWN]]
    problems += [f"  ... and {len(tally.findings) - SHOWN} more"] * (len(tally.findings) > SHOWN)
    problems += [f"applied objects removed by the server ({len(tally.removed)}):"]
    problems += [f"  {f}" for f in tally.removed[:SHOWN]]
    problems += [f"  ... and {len(tally.removed) - SHOWN} more"] * (len(tally.removed) > SHOWN)
    problems += [
        f"jobs without a result: {tally.unanswered[:20]}",
        f"operator exits: {tally.exits}",
    ]
    problems += [f"victim secret or tokens found in: {leaks}"]
    assert passed, line + "\n" + "\n".join(problems)
