"""Scenario e: fuzzed jobs (docs/operations.md, "What we test").

``hypothesis`` strategies derived from the job schema (docs/pull-mode.md, "Wire format" and
"Payload kinds") take a valid job and break it in one way: a wrong type anywhere in the job or
its payload, a huge string, deep nesting, an unknown job kind or intent, an unknown resource
kind, a kind outside the agent's allow-list, a name or namespace that is not a DNS label. At
least 1,000 distinct such jobs flow through the real operator in batches (a batch stays far below
any body cap). Every one must end with a ``failed`` result whose error says something, the
operator must never exit, and no object outside the allow-list may exist afterwards.

Among them, two jobs whose instance value the mock encrypted to the cluster's key (one to the
right key, which must install with the value in its values Secret only, one to another key,
which must fail naming it and apply nothing); the secrets check (scenario f) then looks for
that value in the logs, Events and instance specs.

The seed is printed; ``CHAOS_SEED=<n>`` replays a run.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from tests.chaos import report
from tests.chaos.harness import (
    APPS,
    ChaosControlPlane,
    Operators,
    check_secrets,
    exists,
    plant_encryption_key,
    sealed_job,
    seeded,
    wait_for,
)
from vworkspace.agent.sealed import ClusterKey
from vworkspace.api.constants import LABEL_MANAGED_BY, MANAGED_BY_CONTROL_PLANE
from vworkspace.testing import ApiError, ControlPlane

WANTED, BATCH, MAX_PAYLOAD, QUIET = 1000, 100, 64 * 1024, 8.0
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
OUTSIDE = [
    ("v1", "ConfigMap", "configmaps"),
    ("v1", "Secret", "secrets"),
    ("v1", "Pod", "pods"),
    ("v1", "ServiceAccount", "serviceaccounts"),
    ("apps/v1", "Deployment", "deployments"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "clusterrolebindings"),
    ("rbac.authorization.k8s.io/v1", "Role", "roles"),
]

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False))
wrong_types = st.one_of(
    scalars,
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
not_dns = st.one_of(
    st.text(min_size=1, max_size=80).filter(lambda s: DNS_LABEL.fullmatch(s) is None),
    st.text(alphabet="abc", min_size=254, max_size=300),
    st.sampled_from(["Upper", "under_score", "-lead", "trail-", "dot..dot", "sp ace"]),
)
# Object names are DNS subdomains (dots allowed, up to 253 characters), not labels: "a.b" is a
# valid name, and a first version of this strategy counted its success as a failure to fail.
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
not_a_name = not_dns.filter(lambda s: len(s) > 253 or DNS_SUBDOMAIN.fullmatch(s) is None)
huge = st.integers(MAX_PAYLOAD + 1, MAX_PAYLOAD * 2).map(lambda n: "h" * n)
deep = st.integers(40, 400).map(lambda depth: json.loads("[" * depth + "]" * depth))


def base(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps.vworkspace.io/v1alpha1",
        "kind": "ApplicationInstance",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"appRef": {"catalogId": "fuzz"}, "mode": "placeholder"},
    }


@st.composite
def broken_job(draw: st.DrawFn, namespace: str) -> tuple[str, dict[str, Any]]:
    """(what is broken, the job without its id)."""
    payload = base(
        "fuzz-" + draw(st.text(alphabet="abcdefghij", min_size=6, max_size=6)), namespace
    )
    job: dict[str, Any] = {"kind": "apply", "payload": payload}
    how = draw(
        st.sampled_from(
            [
                "job kind unknown",
                "job kind wrong type",
                "payload wrong type",
                "apiVersion wrong type",
                "kind wrong type",
                "resource kind unknown",
                "kind outside allow-list",
                "name not a DNS label",
                "name wrong type",
                "namespace not a DNS label",
                "spec wrong type",
                "field wrong type",
                "huge string",
                "deep nesting",
                "intent unknown",
                "intent wrong shape",
                "delete incomplete",
            ]
        )
    )
    meta, spec = payload["metadata"], payload["spec"]
    if how == "job kind unknown":
        job["kind"] = draw(
            st.text(max_size=20).filter(lambda s: s not in ("apply", "delete", "intent"))
        )
    elif how == "job kind wrong type":
        job["kind"] = draw(wrong_types)
    elif how == "payload wrong type":
        job["payload"] = draw(
            st.one_of(scalars, st.lists(st.integers(), max_size=3), st.text(max_size=30))
        )
    elif how == "apiVersion wrong type":
        payload["apiVersion"] = draw(st.one_of(wrong_types, st.just("")))
    elif how == "kind wrong type":
        payload["kind"] = draw(st.one_of(wrong_types, st.just("")))
    elif how == "resource kind unknown":
        payload["kind"] = "Zz" + draw(
            st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=12)
        )
    elif how == "kind outside allow-list":
        api_version, kind, _ = draw(st.sampled_from(OUTSIDE))
        payload.update(apiVersion=api_version, kind=kind)
        payload.pop("spec")
        payload["data"] = {"k": "v"}
    elif how == "name not a DNS label":
        meta["name"] = draw(not_a_name)
    elif how == "name wrong type":
        meta["name"] = draw(
            st.one_of(
                st.integers(min_value=1),
                st.lists(st.integers(), min_size=1, max_size=3),
                st.just(True),
            )
        )
    elif how == "namespace not a DNS label":
        meta["namespace"] = draw(not_dns)
    elif how == "spec wrong type":
        payload["spec"] = draw(
            st.one_of(
                st.integers(),
                st.text(max_size=10),
                st.lists(st.integers(), min_size=1, max_size=3),
                st.booleans(),
            )
        )
    elif how == "field wrong type":
        field = draw(st.sampled_from(["mode", "appRef"]))
        spec[field] = draw(
            st.one_of(st.integers(), st.booleans(), st.lists(st.integers(), min_size=1, max_size=3))
        )
    elif how == "huge string":
        where = draw(st.sampled_from(["catalogId", "name", "label"]))
        text = draw(huge)
        if where == "catalogId":
            spec["appRef"]["catalogId"] = text
        elif where == "name":
            meta["name"] = text
        else:
            meta["labels"] = {"x": text}
    elif how == "deep nesting":
        spec["mode"] = draw(deep)
    elif how == "intent unknown":
        job["kind"] = "intent"
        job["payload"] = {
            "intent": draw(
                st.text(max_size=20).filter(
                    lambda s: (
                        s
                        not in (
                            "ensure-application-instance",
                            "request-operation",
                            "delete-application-instance",
                        )
                    )
                )
            ),
            "applicationInstance": payload,
        }
    elif how == "intent wrong shape":
        intent = draw(
            st.sampled_from(
                ["ensure-application-instance", "request-operation", "delete-application-instance"]
            )
        )
        job["kind"] = "intent"
        job["payload"] = {
            "intent": intent,
            "applicationInstance": draw(wrong_types),
            "operation": draw(wrong_types),
            "name": draw(st.one_of(st.just(""), st.integers())),
        }
    else:  # delete incomplete
        job["kind"] = "delete"
        ref = {
            "apiVersion": "apps.vworkspace.io/v1alpha1",
            "kind": "ApplicationInstance",
            "name": "x",
            "namespace": namespace,
        }
        ref[draw(st.sampled_from(["apiVersion", "kind", "name"]))] = draw(
            st.one_of(st.just(""), st.integers(), st.none())
        )
        job["payload"] = ref
    return how, job


def generate(namespace: str, seed: int) -> list[tuple[str, dict[str, Any]]]:
    found: dict[str, tuple[str, dict[str, Any]]] = {}

    @hypothesis_seed(seed)
    @settings(
        max_examples=WANTED + 300,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(broken_job(namespace))
    def collect(example: tuple[str, dict[str, Any]]) -> None:
        found.setdefault(json.dumps(example[1], sort_keys=True), example)

    collect()
    return list(found.values())


def test_fuzzed_jobs_each_end_failed_and_nothing_outside_the_allow_list(
    control_plane: ControlPlane,
    vworkspace_crds: list[str],
    kube_namespace: str,
    chaos: ChaosControlPlane,
    operators: Operators,
) -> None:
    rng = seeded("fuzzed jobs")
    started = time.monotonic()
    examples = generate(kube_namespace, rng.randrange(2**32))
    assert len(examples) >= WANTED, f"hypothesis produced only {len(examples)} distinct jobs"
    jobs = [{"id": f"e-{i}", **job} for i, (_, job) in enumerate(examples)]
    broken = {f"e-{i}": how for i, (how, _) in enumerate(examples)}
    rest = control_plane.rest()
    recipient = plant_encryption_key(rest, kube_namespace)
    operator = operators.start("--agent-max-payload-bytes", str(MAX_PAYLOAD))
    sealed = sealed_job("e-sealed", kube_namespace, operators.sealed_value)
    chaos.enqueue(sealed, encrypt="values", recipient=recipient)
    wrong = sealed_job("e-sealed-wrong", kube_namespace, operators.sealed_value)
    chaos.enqueue(wrong, encrypt="values", recipient=ClusterKey.generate().recipient)
    exits = 0
    for first in range(0, len(jobs), BATCH):
        batch = jobs[first : first + BATCH]
        chaos.enqueue_all(batch)
        # Until the batch is answered, or no new result came for QUIET seconds (a job that never
        # gets a result is a finding, counted below, not a reason to stop the scenario).
        last_count, last_change = -1, time.monotonic()
        while True:
            if operator.proc.poll() is not None:
                exits += 1
                operator = operators.start("--agent-max-payload-bytes", str(MAX_PAYLOAD))
            results = chaos.results()
            count = sum(1 for j in batch if j["id"] in results)
            if count == len(batch):
                break
            if count != last_count:
                last_count, last_change = count, time.monotonic()
            elif time.monotonic() - last_change > QUIET:
                break
            time.sleep(0.2)
    wait_for(
        "the encrypted jobs answered",
        lambda: {"e-sealed", "e-sealed-wrong"} <= set(chaos.results()),
        timeout=30,
    )
    results = chaos.results()
    sealed_ok = results["e-sealed"].get("outcome") == "succeeded" and operators.sealed_value in (
        _values_document(rest, kube_namespace, "e-sealed-vws-values")
    )
    wrong_refused = str(results["e-sealed-wrong"].get("error") or "").startswith(
        "encryption: spec.values.inline.db.password is encrypted to another key"
    ) and not exists(
        rest, f"{APPS}/namespaces/{kube_namespace}/applicationinstances/e-sealed-wrong"
    )
    unanswered = Counter(broken[j["id"]] for j in jobs if j["id"] not in results)
    not_failed = {
        i: (broken[i], r.get("outcome"))
        for i, r in results.items()
        if i in broken and (r.get("outcome") != "failed" or not str(r.get("error") or "").strip())
    }
    selector = f"labelSelector={LABEL_MANAGED_BY}%3D{MANAGED_BY_CONTROL_PLANE}"
    outside = []
    for api_version, kind, plural in OUTSIDE:
        prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        items = rest.get(f"{prefix}/{plural}?{selector}")["items"]
        outside += [
            f"{kind} {o['metadata'].get('namespace', '')}/{o['metadata']['name']}" for o in items
        ]
    if operator.proc.poll() is not None:
        exits += 1
    leaks = check_secrets(
        within="e. fuzzed jobs",
        rest=rest,
        namespaces=[kube_namespace],
        logs=operators.log_paths(),
        planted=[chaos.token, operators.secret_value, operators.sealed_value],
    )
    kinds = Counter(broken.values())
    passed = (
        not not_failed
        and not outside
        and exits == 0
        and not unanswered
        and sealed_ok
        and wrong_refused
    )
    report.record(
        scenario="e. fuzzed jobs",
        load=f"{len(jobs)} distinct hypothesis jobs in batches of {BATCH}, and 2 jobs with a "
        "value encrypted to the cluster's key and to another key",
        faults=f"{len(kinds)} kinds of breakage (wrong types, huge strings, deep nesting, "
        "unknown kinds, kinds outside the allow-list, non-DNS names and namespaces)",
        outcome="every fuzzed job failed with a reason, operator never exited; the encrypted "
        "value installed, the one for another key refused with nothing applied"
        if passed
        else f"{sum(unanswered.values())} jobs without any result ({dict(unanswered)}), "
        f"{len(not_failed)} answered but not failed with a reason, {exits} exits, "
        f"{len(outside)} objects outside the allow-list, encrypted job installed: {sealed_ok}, "
        f"wrong key refused: {wrong_refused}",
        figure=f"{len(jobs)} fuzzed jobs -> "
        f"{sum(1 for i, r in results.items() if i in broken and r.get('outcome') == 'failed')}"
        " failed results, "
        f"{exits} crashes, {len(outside)} objects outside the allow-list, "
        f"in {time.monotonic() - started:.0f}s",
        passed=passed,
    )
    assert exits == 0, "the operator exited"
    assert not unanswered, f"jobs that never got a result, by breakage: {dict(unanswered)}"
    assert not not_failed, f"jobs that did not fail with a reason: {list(not_failed.items())[:10]}"
    assert not outside, f"objects outside the allow-list: {outside}"
    assert sealed_ok, f"the encrypted job: {results['e-sealed']}"
    assert wrong_refused, f"the job encrypted to another key: {results['e-sealed-wrong']}"
    assert not leaks, f"planted secrets found in: {leaks}"


def _values_document(rest: Any, namespace: str, name: str) -> str:
    """The decoded values.yaml of an instance's values Secret ("" when there is none)."""
    try:
        secret = rest.get(f"/api/v1/namespaces/{namespace}/secrets/{name}")
    except ApiError:  # absent: the check reports the value as missing
        return ""
    return base64.b64decode(secret["data"]["values.yaml"]).decode()
