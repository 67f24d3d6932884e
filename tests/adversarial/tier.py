"""Running batches of adversarial jobs through the real operator and judging them on the cluster
(a small extension of the chaos harness, tests/chaos/harness.py, which it reuses as is).

Per batch: enqueue every job at the mock control plane; wait until every job has a result (or
none came for ``QUIET`` seconds: a job without a result is a finding, not a reason to hang);
wait until the operator's work queues are drained (``workqueue_depth`` and
``controller_runtime_active_workers`` all 0 on its metrics endpoint); prove the garbage collector
has caught up (:func:`gc_probe`); then snapshot and diff (tests/adversarial/snapshot.py). A
change is reported with the jobs of the batch that name the changed object (after URL-decoding
them twice), their reason and outcome, so a failure says which object changed, by which job.
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from typing import Any

import attrs

from tests.adversarial.snapshot import Change, Fingerprint, ObjectId, Snapshotter, diff
from tests.chaos.harness import ChaosControlPlane, Operators
from tests.integration.operator_process import OperatorProcess, wait_until
from vworkspace.api.jsontypes import JsonObj
from vworkspace.testing import ApiError

QUIET = 10.0  # seconds without a new result before a batch's missing results count as findings
FIGURES: list[str] = []  # printed by the conftest's terminal summary (always in CI's log)


@attrs.frozen
class Job:
    id: str
    reason: str
    body: JsonObj

    def wire(self) -> JsonObj:
        return {"id": self.id, **self.body}

    def text(self) -> str:
        """The job as text, decoded twice, for finding which jobs name an object."""
        raw = json.dumps(self.body, ensure_ascii=False)
        return urllib.parse.unquote(urllib.parse.unquote(raw))


@attrs.frozen
class Finding:
    change: str
    blamed: tuple[str, ...]

    def __str__(self) -> str:
        who = "\n      ".join(self.blamed) or "(no job of the batch names it)"
        return f"{self.change}\n    by: {who}"


@attrs.define
class Tally:
    tried: int = 0
    outcomes: Counter[str] = attrs.field(factory=Counter)
    findings: list[Finding] = attrs.field(factory=list)
    removed: list[Finding] = attrs.field(factory=list)
    unanswered: list[str] = attrs.field(factory=list)
    exits: int = 0


def drained(operator: OperatorProcess) -> bool:
    """Every work queue empty and no reconcile running, per the operator's own metrics."""
    status, text = operator.get(operator.metrics, "/metrics")
    if status != 200:
        return False
    busy = [
        line
        for line in text.splitlines()
        if line.startswith(("workqueue_depth{", "controller_runtime_active_workers{"))
        and float(line.split()[-1]) != 0
    ]
    return not busy


def wait_drained(operator: OperatorProcess, timeout: float = 60) -> None:
    """Drained twice in a row (a reconcile may enqueue its object's owner right after)."""
    streak = [0]

    def check() -> bool:
        streak[0] = streak[0] + 1 if drained(operator) else 0
        return streak[0] >= 2

    wait_until("the operator's work queues to drain", check, timeout=timeout, interval=0.2)


def gc_probe(rest: Any, *, namespace_prefix: str, timeout: float = 60) -> float:
    """Create a Namespace whose only owner does not exist and wait until the garbage collector
    starts deleting it: proves the GC runs and has caught up with what happened before (it
    handles Namespaces in event order). Named inside the target, so snapshots ignore it."""
    name = f"{namespace_prefix}{secrets.token_hex(4)}"
    rest.post(
        "/api/v1/namespaces",
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "Namespace",
                        "name": "adv-gc-probe-no-such-owner",
                        "uid": "00000000-0000-4000-8000-" + secrets.token_hex(6),
                    }
                ],
            },
        },
    )

    def collected() -> bool:
        try:
            return bool(rest.get(f"/api/v1/namespaces/{name}")["metadata"].get("deletionTimestamp"))
        except ApiError as err:
            return err.status == 404

    return wait_until(f"the garbage collector to delete probe {name}", collected, timeout=timeout)


@attrs.define
class Tier:
    """One operator, one snapshotter, the victims; runs batches and keeps the tally."""

    rest: Any
    chaos: ChaosControlPlane
    operators: Operators
    operator: OperatorProcess
    snapshots: Snapshotter
    extra_args: tuple[str, ...]
    replant: Callable[[], None]
    tally: Tally = attrs.field(factory=Tally)
    baseline: dict[ObjectId, Fingerprint] = attrs.field(factory=dict)

    def settle(self, timeout: float = 60) -> list[Change]:
        """Wait until nothing outside the target changes any more: drained, then two snapshots
        in a row identical; the last one is the new baseline. Returns what was still changing
        at ``timeout`` (then the last snapshot is the baseline)."""
        deadline = time.monotonic() + timeout
        wait_drained(self.operator)
        previous = self.snapshots.take()
        while True:
            wait_drained(self.operator)
            current = self.snapshots.take()
            changes = diff(previous, current)
            if not changes or time.monotonic() > deadline:
                self.baseline = current
                return changes
            previous = current

    def run(self, jobs: list[Job]) -> list[Finding]:
        """Run one batch; returns what changed outside the target (also kept in the tally)."""
        self.tally.tried += len(jobs)
        self.chaos.enqueue_all([job.wire() for job in jobs])
        self._await_results(jobs)
        results = self.chaos.results()
        for job in jobs:
            if job.id in results:
                self.tally.outcomes[str(results[job.id].get("outcome"))] += 1
            else:
                self.tally.unanswered.append(f"{job.id} ({job.reason})")
        wait_drained(self.operator)
        gc_probe(self.rest, namespace_prefix="adv-target-gc-")
        after = self.snapshots.take()
        changes = diff(self.baseline, after)
        findings = attribute(changes, jobs, results)
        removed = removed_by_server(self.rest, self.snapshots, jobs, results)
        self.tally.findings += findings
        self.tally.removed += removed
        if changes:
            self.replant()  # so the next batches still have victims to protect
            restless = self.settle()
            self.tally.findings += [
                Finding(f"{f.change} (still changing a minute after the batch)", f.blamed)
                for f in attribute(restless, jobs, results)
            ]
        else:
            self.baseline = after
        return findings

    def _await_results(self, jobs: list[Job]) -> None:
        last_count, last_change = -1, time.monotonic()
        while True:
            if self.operator.proc.poll() is not None:
                self.tally.exits += 1
                self.operator = self.operators.start(*self.extra_args)
            results = self.chaos.results()
            count = sum(1 for j in jobs if j.id in results)
            if count == len(jobs):
                return
            if count != last_count:
                last_count, last_change = count, time.monotonic()
            elif time.monotonic() - last_change > QUIET:
                return
            time.sleep(0.2)


def blame(change: Change, jobs: list[Job], results: dict[str, JsonObj]) -> tuple[str, ...]:
    """The jobs of the batch that name the changed object (its name, and its namespace when it
    has one), best matches first: succeeded ones, those naming its resource, deletes for a
    deletion."""
    oid = change.oid
    plural = oid.kind.split(".", 1)[0].lower()
    scored = []
    for index, job in enumerate(jobs):
        text = job.text()
        if oid.name not in text or (oid.namespace and oid.namespace not in text):
            continue
        result = results.get(job.id, {})
        outcome = result.get("outcome", "no result")
        score = 4 if outcome == "succeeded" else 0
        score += 2 if plural in text.lower() else 0
        score += 1 if "delet" in change.what and _is_delete(job) else 0
        error = str(result.get("error") or "")[:160]
        line = f"job {job.id} [{job.reason}] -> {outcome}{': ' + error if error else ''}"
        scored.append((-score, index, line))
    return tuple(line for _, _, line in sorted(scored)[:3])


def attribute(changes: list[Change], jobs: list[Job], results: dict[str, JsonObj]) -> list[Finding]:
    """A Finding per change; objects that went with their deleted Namespace point there."""
    dying = {c.oid.name for c in changes if c.oid.kind == "Namespace" and "delet" in c.what}
    findings = []
    for change in changes:
        why: tuple[str, ...]
        if change.oid.namespace in dying and "delet" in change.what:
            why = (f"deleted with its Namespace {change.oid.namespace} (see that entry)",)
        else:
            why = blame(change, jobs, results)
        findings.append(Finding(str(change), why))
    return findings


def _is_delete(job: Job) -> bool:
    payload = job.body.get("payload")
    intent = payload.get("intent") if isinstance(payload, dict) else None
    return job.body.get("kind") == "delete" or intent == "delete-application-instance"


def _deletes_text(jobs: list[Job]) -> str:
    """The decoded text of every delete job of the batch: an object it names (even through a
    trick) may have been removed by that job rather than by the server."""
    return "\n".join(job.text() for job in jobs if _is_delete(job))


def removed_by_server(
    rest: Any, snapshots: Snapshotter, jobs: list[Job], results: dict[str, JsonObj]
) -> list[Finding]:
    """Objects a job of the batch applied (``succeeded`` with an appliedRef) that are gone or
    being deleted although no job deleted them: the server acted on metadata the job carried
    (the garbage collector on ownerReferences, issue F2)."""
    plurals = {(r.group_version, r.kind): r for r in snapshots.resources}
    deletes = _deletes_text(jobs)
    found: list[Finding] = []
    for job in jobs:
        result = results.get(job.id) or {}
        ref = result.get("appliedRef") or {}
        if result.get("outcome") != "succeeded" or job.body.get("kind") == "delete" or not ref:
            continue
        resource = plurals.get((str(ref.get("apiVersion")), str(ref.get("kind"))))
        name, namespace = ref.get("name", ""), ref.get("namespace", "")
        if resource is None or not ref.get("uid"):
            continue
        if name in deletes or (namespace and namespace in deletes):
            continue
        prefix = resource.list_path.rsplit("/", 1)[0]
        path = (
            f"{prefix}/namespaces/{namespace}/{resource.plural}/{name}"
            if resource.namespaced
            else f"{prefix}/{resource.plural}/{name}"
        )
        gone = _gone(rest, path, ref["uid"])
        if gone:
            what = f"{ref['kind']} {namespace + '/' if namespace else ''}{name}: {gone}"
            found.append(Finding(what, (f"job {job.id} [{job.reason}] -> succeeded",)))
    return found


def _gone(rest: Any, path: str, uid: str) -> str:
    try:
        meta = rest.get(path)["metadata"]
    except ApiError as err:
        if err.status == 404:
            return f"applied (uid {uid}) and then removed by the server"
        raise
    if meta.get("uid") != uid:
        return f"applied (uid {uid}), removed by the server and re-created"
    if meta.get("deletionTimestamp"):
        return f"applied (uid {uid}) and then put into deletion by the server"
    return ""


def figure_line(tally: Tally, *, corpus: int, generated: int) -> str:
    out = tally.outcomes
    return (
        f"adversarial: jobs tried {tally.tried:,} (corpus {corpus:,}, generated {generated:,}), "
        f"objects changed outside target {len(tally.findings)}, "
        f"applied objects removed by the server {len(tally.removed)}, "
        f"results succeeded {out['succeeded']} failed {out['failed']} noop {out['noop']} "
        f"conflict {out['conflict']} none {len(tally.unanswered)}, operator exits {tally.exits}"
    )
