"""Metadata hygiene (agent/hygiene.py) and the default allow-list, through the Applier with a
fake API server that records what would have been sent (issue 24, F2 and F8)."""

from __future__ import annotations

from typing import Any

import pytest

from vworkspace.agent.applier import DEFAULT_ALLOWED, Applier
from vworkspace.agent.hygiene import MetadataError, check_metadata
from vworkspace.agent.wire import Job, JobResult, Outcome
from vworkspace.api.jsontypes import JsonObj
from vworkspace.kube.clock import FakeClock
from vworkspace.kube.rest.resources import NAMESPACES
from vworkspace.testing.fakeapi import FakeApi

DISCOVERY = {
    "/api/v1": [{"name": "namespaces", "kind": "Namespace", "namespaced": False}],
    "/apis/apps.vworkspace.io/v1alpha1": [
        {"name": "applicationinstances", "kind": "ApplicationInstance", "namespaced": True}
    ],
    "/apis/ops.vworkspace.io/v1alpha1": [
        {"name": "operations", "kind": "Operation", "namespaced": True},
        {"name": "clusters", "kind": "Cluster", "namespaced": False},
    ],
}


def fake_kube() -> FakeApi:
    """Discovery of the kinds above and the Namespace team-a; the applier's requests are
    recorded in ``writes``."""
    api = FakeApi()
    for path, resources in DISCOVERY.items():
        api.respond("GET", path, lambda _, resources=resources: {"resources": resources})
    api.add(NAMESPACES, {"metadata": {"name": "team-a"}})
    return api


def applied(api: FakeApi) -> list[JsonObj]:
    """The bodies of the server-side applies that reached the API."""
    return [w.body for w in api.writes if w.method == "PATCH"]


def namespace(**meta: Any) -> JsonObj:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a", **meta}}


def instance(**meta: Any) -> JsonObj:
    return {
        "apiVersion": "apps.vworkspace.io/v1alpha1",
        "kind": "ApplicationInstance",
        "metadata": {"name": "shop", "namespace": "team-a", **meta},
        "spec": {"appRef": {"catalogId": "odoo"}},
    }


async def run(
    payload: JsonObj, *, kind: str = "apply", **applier: Any
) -> tuple[JobResult, FakeApi]:
    kube = fake_kube()
    job = Job(id="j-1", kind=kind, payload=payload)
    result = await Applier(
        kube,
        cluster_id=lambda: "c-1",
        clock=FakeClock(),
        **applier,
    ).process(job)
    return result, kube


OWNER = [{"apiVersion": "v1", "kind": "Namespace", "name": "ghost", "uid": "0000"}]


# -- F2: fields the server acts on are refused, naming the field ---------------------------


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("ownerReferences", OWNER, "garbage collector"),
        ("finalizers", ["example.com/hold"], "from ever being deleted"),
        ("generateName", "team-", "every retry"),
        ("deletionTimestamp", "2026-01-01T00:00:00Z", "API server"),
        ("deletionGracePeriodSeconds", 0, "API server"),
        ("clusterName", "other", "not a field a job may set"),
        ("somethingNew", {"a": 1}, "not a field a job may set"),
    ],
)
async def test_metadata_the_server_acts_on_is_refused_naming_the_field(
    field: str, value: Any, why: str
) -> None:
    result, kube = await run(namespace(**{field: value}))
    assert result.outcome is Outcome.FAILED
    assert f"metadata.{field} is refused" in result.error
    assert why in result.error
    assert applied(kube) == []  # nothing reached the API server


async def test_the_f2_reproduction_namespace_with_a_missing_owner_is_refused() -> None:
    """Issue 24 F2: an apply of Namespace team-a with an ownerReference to a Namespace that does
    not exist went out as sent (and the garbage collector deleted team-a)."""
    result, kube = await run(namespace(ownerReferences=OWNER))
    assert (result.outcome, applied(kube)) == (Outcome.FAILED, [])
    assert result.error.startswith("metadata.ownerReferences is refused")


async def test_a_refusal_counts_as_a_policy_metadata_rejection() -> None:
    reasons: list[str] = []
    await run(instance(finalizers=["x/y"]), on_rejected=reasons.append)
    assert reasons == ["policy_metadata"]


@pytest.mark.parametrize("intent", ["ensure-application-instance", "request-operation"])
async def test_intents_are_held_to_the_same_rules(intent: str) -> None:
    embedded = {"metadata": {"name": "x", "namespace": "team-a", "ownerReferences": OWNER}}
    key = "applicationInstance" if intent == "ensure-application-instance" else "operation"
    result, kube = await run({"intent": intent, key: embedded}, kind="intent")
    assert "metadata.ownerReferences is refused" in result.error
    assert applied(kube) == []


# -- what is kept, what is dropped -----------------------------------------------------------


async def test_a_round_tripped_object_applies_without_its_read_only_fields() -> None:
    exported = instance(
        uid="8b1d",
        resourceVersion="42",
        generation=3,
        creationTimestamp=None,
        selfLink="/apis/x",
        managedFields=[{"manager": "kubectl"}],
        finalizers=[],
        ownerReferences=None,
        labels={"tier": "gold"},
        annotations={"note": "kept"},
    )
    result, kube = await run(exported)
    assert result.outcome is Outcome.SUCCEEDED, result.error
    assert applied(kube)[0]["metadata"] == {
        "name": "shop",
        "namespace": "team-a",
        "labels": {
            "tier": "gold",
            "app.vworkspace.io/managed-by": "control-plane",
            "app.vworkspace.io/cluster-id": "c-1",
        },
        "annotations": {"note": "kept"},
    }


@pytest.mark.parametrize(
    ("labels", "annotations"),
    [
        # What a control plane sets: the forced labels (overwritten), capability annotations,
        # the migration image, informational and kubectl keys.
        ({"app.vworkspace.io/managed-by": "someone-else"}, {}),
        ({}, {"ops.vworkspace.io/backup": "velero", "ops.vworkspace.io/migration-image": "x:1"}),
        ({"app.kubernetes.io/name": "odoo"}, {"app.kubernetes.io/part-of": "shop"}),
        ({}, {"kubectl.kubernetes.io/last-applied-configuration": "{}"}),
        ({"empty": ""}, {"Example.COM/Mixed_Case": "annotation keys are checked lower-cased"}),
    ],
)
async def test_labels_and_annotations_a_control_plane_sets_are_kept(
    labels: dict[str, str], annotations: dict[str, str]
) -> None:
    result, kube = await run(instance(labels=labels, annotations=annotations))
    assert result.outcome is Outcome.SUCCEEDED, result.error
    assert applied(kube)[0]["metadata"]["annotations"] == annotations


async def test_the_namespace_name_label_is_accepted_when_it_is_the_name() -> None:
    ok, _ = await run(namespace(labels={"kubernetes.io/metadata.name": "team-a"}))
    assert ok.outcome is Outcome.SUCCEEDED, ok.error
    bad, kube = await run(namespace(labels={"kubernetes.io/metadata.name": "prod"}))
    assert 'metadata.labels["kubernetes.io/metadata.name"] must equal metadata.name' in bad.error
    assert applied(kube) == []


# -- labels and annotations ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({"labels": ["a"]}, "metadata.labels must be an object of strings, got list"),
        ({"annotations": "a=b"}, "metadata.annotations must be an object of strings, got str"),
        ({"labels": {"n": 1}}, 'metadata.labels["n"] must be a string, got int 1'),
        ({"labels": {"n": None}}, 'metadata.labels["n"] must be a string, got NoneType null'),
        ({"annotations": {"a": True}}, 'metadata.annotations["a"] must be a string, got bool'),
        ({"labels": {"bad key": "v"}}, 'metadata.labels: key "bad key" is not a valid'),
        ({"labels": {"-x": "v"}}, 'metadata.labels: key "-x" is not a valid'),
        ({"labels": {"Upper.Example/x": "v"}}, 'key "Upper.Example/x" is not a valid'),
        ({"labels": {"a/b/c": "v"}}, 'key "a/b/c" is not a valid'),
        ({"labels": {"/x": "v"}}, 'key "/x" is not a valid'),
        ({"labels": {"x" * 64: "v"}}, "is not a valid qualified name"),
        ({"annotations": {"a..b/x": "v"}}, 'metadata.annotations: key "a..b/x" is not a valid'),
        ({"labels": {"k": "has space"}}, 'metadata.labels["k"]: "has space" is not a valid label'),
        ({"labels": {"k": "v" * 64}}, 'metadata.labels["k"]: "vvvv'),
        ({"annotations": {"big": "x" * 300_000}}, "metadata.annotations: 300003 bytes exceed"),
    ],
)
def test_bad_labels_and_annotations_are_refused_naming_the_key(
    meta: JsonObj, expected: str
) -> None:
    with pytest.raises(MetadataError) as err:
        check_metadata({"name": "x", **meta})
    assert expected in str(err.value)


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({"labels": ["tier"]}, "metadata.labels must be an object of strings, got list"),
        ({"labels": {"tier": 1}}, 'metadata.labels["tier"] must be a string, got int 1'),
        ({"annotations": {"bad key": "v"}}, 'metadata.annotations: key "bad key" is not a valid'),
    ],
)
async def test_a_bad_label_or_annotation_fails_the_job_naming_it(
    meta: JsonObj, expected: str
) -> None:
    result, kube = await run(instance(**meta))
    assert result.outcome is Outcome.FAILED
    assert expected in result.error
    assert applied(kube) == []


@pytest.mark.parametrize(
    ("where", "key"),
    [
        # What the operator acts on.
        ("labels", "app.vworkspace.io/application-instance"),
        ("labels", "ops.vworkspace.io/operation"),
        ("labels", "ops.vworkspace.io/hook-name"),
        ("annotations", "ops.vworkspace.io/allowed-types"),
        ("annotations", "vworkspace.io/reported-managed-storage-key"),
        ("annotations", "vworkspace.io/reported-seaweed-endpoints"),
        ("annotations", "vworkspace.io/reported-anything-later"),
        ("annotations", "apps.vworkspace.io/applied-digest"),
    ],
)
async def test_keys_the_operator_acts_on_are_refused(where: str, key: str) -> None:
    result, kube = await run(instance(**{where: {key: "x"}}))
    assert result.outcome is Outcome.FAILED
    assert f'metadata.{where}["{key}"] is refused: the operator acts on it' in result.error
    assert applied(kube) == []


@pytest.mark.parametrize(
    ("where", "key"),
    [
        ("labels", "pod-security.kubernetes.io/enforce"),
        ("labels", "kubernetes.io/metadata.other"),
        ("annotations", "scheduler.alpha.kubernetes.io/node-selector"),
        ("annotations", "kubernetes.io/service-account.name"),
        ("annotations", "nginx.ingress.kubernetes.io/configuration-snippet"),
        ("annotations", "example.k8s.io/anything"),
        ("annotations", "K8S.IO/upper"),
    ],
)
async def test_kubernetes_reserved_keys_are_refused(where: str, key: str) -> None:
    result, kube = await run(namespace(**{where: {key: "privileged"}}))
    assert result.outcome is Outcome.FAILED
    assert f'metadata.{where}["{key}"] is refused: keys of the Kubernetes-reserved' in result.error
    assert applied(kube) == []


# -- F8: Cluster is not on the default allow-list --------------------------------------------


def cluster(endpoint: str = "https://cp.example.com") -> JsonObj:
    return {
        "apiVersion": "ops.vworkspace.io/v1alpha1",
        "kind": "Cluster",
        "metadata": {"name": "elsewhere"},
        "spec": {"controlPlaneEndpoint": endpoint},
    }


def test_cluster_is_not_on_the_default_allow_list() -> None:
    assert ("ops.vworkspace.io", "Cluster") not in DEFAULT_ALLOWED
    assert ("", "Namespace") in DEFAULT_ALLOWED


async def test_a_cluster_job_is_refused_by_default() -> None:
    """Issue 24 F8: a job could create a Cluster that re-registers the agent anywhere."""
    result, kube = await run(cluster("http://evil.example.com"))
    assert result.outcome is Outcome.FAILED
    assert "kind Cluster of API group ops.vworkspace.io is not on the agent allow-list" in (
        result.error
    )
    assert applied(kube) == []
    deleted, kube = await run(
        {"apiVersion": "ops.vworkspace.io/v1alpha1", "kind": "Cluster", "name": "c"},
        kind="delete",
    )
    assert "not on the agent allow-list" in deleted.error
    assert kube.writes == []


async def test_a_cluster_job_applies_when_the_kind_is_allowed() -> None:
    allowed = DEFAULT_ALLOWED | {("ops.vworkspace.io", "Cluster")}
    result, kube = await run(
        {
            **cluster(),
            "metadata": {
                "name": "c",
                "annotations": {"ops.vworkspace.io/rotate-credentials": "true"},
            },
        },
        allowed=allowed,
    )
    assert result.outcome is Outcome.SUCCEEDED, result.error
    assert applied(kube)[0]["kind"] == "Cluster"
