"""The Seaweed engine's pure parts, credential discovery and the supplemental-event protocol
(docs/api.md, "Native SeaweedFS"). Narrow fakes stand in for the API server; the integration
tests (tests/integration/test_seaweed.py) run the whole path against a real one."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any

import pytest

from vworkspace.api.admission import review_application_instance
from vworkspace.api.applicationinstance import ApplicationInstanceView
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.api.validation import validate_application_instance
from vworkspace.controllers.supplements import Supplements
from vworkspace.engines import flux, seaweed
from vworkspace.engines import s3credentials as s3
from vworkspace.engines.base import EngineError, Observation, State, Supplement
from vworkspace.engines.seaweed import credentials_users, has_s3, seaweed_conditions, snapshot
from vworkspace.engines.seaweedvalues import normalize
from vworkspace.kube.rest.resources import APPLICATION_INSTANCES, SECRETS
from vworkspace.testing.fakeapi import FakeApi


def seaweedfs(**spec: Any) -> JsonObj:
    return {
        "metadata": {"name": "sw", "namespace": "ns"},
        "spec": {
            "appRef": {"catalogId": "seaweedfs"},
            "release": {"name": "sw", "namespace": "ns"},
            "values": {"source": "inline", "inline": {"s3": {"replicas": 1}}},
            **spec,
        },
    }


# -- validation and admission -----------------------------------------------------------------


def test_a_chartless_seaweedfs_instance_is_valid_and_admitted() -> None:
    assert validate_application_instance(seaweedfs()) is None
    assert review_application_instance(seaweedfs()) is None
    # The seaweed engine claims it, and flux does not (exactly one engine renders it).
    assert seaweed.claims(ApplicationInstanceView(seaweedfs()))
    assert not flux.claims(ApplicationInstanceView(seaweedfs()))


def test_an_s3_credentials_change_wakes_the_seaweedfs_instances_of_its_release() -> None:
    other_release = seaweedfs(release={"name": "other", "namespace": "ns"})
    other_release["metadata"]["name"] = "other"
    elsewhere = seaweedfs(release={"name": "sw", "namespace": "elsewhere"})
    elsewhere["metadata"]["name"] = "elsewhere"
    not_seaweed = seaweedfs(appRef={"catalogId": "shop"})
    not_seaweed["metadata"]["name"] = "shop"
    stored = [seaweedfs(), other_release, elsewhere, not_seaweed]
    cred = {"metadata": {"name": "c", "namespace": "ns"}, "spec": {"seaweedRef": {"name": "sw"}}}

    def instances(namespace: str) -> list[ApplicationInstanceView]:
        assert namespace == "ns"
        return [ApplicationInstanceView(o) for o in stored]

    assert credentials_users(cred, instances) == [ObjectKey("ns", "sw")]


def test_a_seaweedfs_instance_with_a_chart_is_rejected() -> None:
    chart = {"sourceType": "helm", "url": "https://x", "name": "seaweedfs", "version": "1"}
    expected = "spec.chart must not be set for native SeaweedFS workloads"
    assert validate_application_instance(seaweedfs(chart=chart)) == expected
    assert review_application_instance(seaweedfs(chart=chart)) == expected


def test_a_seaweedfs_instance_still_needs_release_and_values() -> None:
    bad = seaweedfs()
    del bad["spec"]["values"]
    assert validate_application_instance(bad) == "spec.values is required in managed mode"


# -- values normalisation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "spec"),
    [
        ({"master": {"replicas": 1}, "extra": 1}, {"master": {"replicas": 1}}),
        ({"seaweedfs": {"s3": {}}, "seaweed": {"master": {}}}, {"s3": {}}),
        ({"seaweed": {"filer": {"x": 1}}}, {"filer": {"x": 1}}),
        ({"custom": {"volume": {"replicas": 2}}, "other": 3}, {"volume": {"replicas": 2}}),
    ],
)
def test_spec_sections_are_taken_from_the_top_or_a_wrapper(values: JsonObj, spec: JsonObj) -> None:
    assert normalize(values) == spec


def test_two_wrappers_with_spec_keys_are_ambiguous() -> None:
    with pytest.raises(EngineError, match="ambiguous Seaweed values"):
        normalize({"a": {"s3": {}}, "b": {"master": {}}})


def test_values_without_spec_keys_are_refused() -> None:
    with pytest.raises(EngineError, match="at least one native Seaweed spec section"):
        normalize({"global": {}})


# -- status roll-up -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("s3", "expected"),
    [
        ({"replicas": 1}, True),
        ({"port": 8333}, True),
        ({}, False),
        ({"replicas": 0}, False),
        ({"replicas": True}, False),
        ({"enabled": False, "replicas": 1}, False),
        (None, False),
    ],
)
def test_has_s3(s3: Any, expected: bool) -> None:
    assert has_s3({"spec": {"s3": s3}}) is expected


def cr(*conditions: tuple[str, str, str]) -> JsonObj:
    return {
        "status": {"conditions": [{"type": t, "status": s, "reason": r} for t, s, r in conditions]}
    }


def test_condition_mapping() -> None:
    assert snapshot({}).state == State.RUNNING
    assert snapshot(cr(("Ready", "True", "Ready"))).state == State.SUCCEEDED
    failed = snapshot(cr(("Ready", "False", "NotReady")))
    assert (failed.state, failed.reason) == (State.FAILED, "SeaweedFailed")
    # Degraded with an empty reason still gets one (Go defect 6).
    degraded = snapshot(cr(("Degraded", "True", "")))
    assert degraded.reason == "SeaweedFailed"
    assert degraded.stalled


def test_ready_without_the_s3_endpoint_waits_for_it() -> None:
    seen = Observation(State.SUCCEEDED, "SeaweedReady", "ok", ref=None)
    ready = {c.type: c for c in seaweed_conditions(seen, waiting_for_s3=False)}
    assert ready["Ready"].status == "Unknown"  # no CR observed yet
    from vworkspace.engines.base import EngineRef

    seen = Observation(State.SUCCEEDED, "SeaweedReady", "ok", ref=EngineRef("Seaweed", "sw", "ns"))
    waiting = {c.type: c for c in seaweed_conditions(seen, waiting_for_s3=True)}
    assert (waiting["Ready"].status, waiting["Ready"].reason) == ("Unknown", "WaitingForS3Endpoint")
    done = {c.type: c for c in seaweed_conditions(seen, waiting_for_s3=False)}
    assert (done["Ready"].status, done["Ready"].reason) == ("True", "SeaweedReady")


# -- credential discovery -------------------------------------------------------------------------


def secrets_api(secrets: dict[str, dict[str, str]]) -> FakeApi:
    """A fake API holding the Secrets (name -> data) in namespace ns."""
    api = FakeApi()
    for name, data in secrets.items():
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        api.add(SECRETS, {"metadata": {"name": name, "namespace": "ns"}, "data": encoded})
    return api


def cred(name: str, phase: str, *, release: str = "sw", secret: str = "") -> JsonObj:
    return {
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": "1"},
        "spec": {"seaweedRef": {"name": release}, "secretRef": {"name": secret or f"{name}-s"}},
        "status": {"phase": phase},
    }


def resolve(creds: list[JsonObj], secrets: dict[str, dict[str, str]]) -> s3.Credentials:
    return asyncio.run(
        s3.resolve(secrets_api(secrets), lambda ns: creds, namespace="ns", release="sw")
    )


KEYS = {"accessKey": "A", "secretKey": "S"}


@pytest.mark.parametrize(
    ("creds", "secrets", "outcome"),
    [
        ([], {}, s3.Outcome.ABSENT),
        ([cred("a", "Ready", release="other")], {"a-s": KEYS}, s3.Outcome.ABSENT),
        ([cred("a", "Failed")], {}, s3.Outcome.FAILED),
        ([cred("a", "Pending")], {}, s3.Outcome.PENDING),
        ([cred("a", "Ready")], {}, s3.Outcome.PENDING),  # Secret missing
        ([cred("a", "Ready"), cred("b", "Pending")], {}, s3.Outcome.PENDING),
        ([cred("a", "Ready")], {"a-s": {}}, s3.Outcome.FAILED),  # Secret without keys
        ([cred("a", "Pending"), cred("b", "Ready")], {"b-s": KEYS}, s3.Outcome.READY),
    ],
)
def test_credential_outcomes(
    creds: list[JsonObj], secrets: dict[str, dict[str, str]], outcome: s3.Outcome
) -> None:
    assert resolve(creds, secrets).outcome == outcome


def test_the_smallest_ready_name_wins_and_the_bucket_is_the_release() -> None:
    found = resolve(
        [cred("b", "Ready"), cred("a", "Ready")],
        {"a-s": {"accessKey": "A1", "secretKey": "S1"}, "b-s": KEYS},
    )
    assert (found.access_key, found.secret_key, found.bucket) == ("A1", "S1", "sw")
    assert "S1" not in repr(found)


def test_report_key_is_go_s_hash() -> None:
    import hashlib

    assert s3.report_key(s3.Credentials(s3.Outcome.READY, "A", "S")) == (
        hashlib.sha256(b"A\x00S").digest()[:8].hex()
    )


# -- supplements --------------------------------------------------------------------------------


class Reporter:
    def __init__(self) -> None:
        self.waiting: dict[str, Callable[[], None]] = {}
        self.sent: list[str] = []

    def report(self, obj: JsonObj, transitions: list[Any]) -> None:
        return None

    def deliver(self, event: JsonObj, on_delivered: Callable[[], None]) -> None:
        self.sent.append(event["eventKey"])
        self.waiting[event["eventKey"]] = on_delivered

    def pending(self, event_key: str) -> bool:
        return event_key in self.waiting

    def flush(self) -> None:
        for callback in self.waiting.values():
            callback()
        self.waiting.clear()


class Patches(FakeApi):
    """A fake API holding the instance sw; ``patches`` are the merge patches it received."""

    def __init__(self) -> None:
        super().__init__()
        self.add(APPLICATION_INSTANCES, {"metadata": {"name": "sw", "namespace": "ns"}})

    @property
    def patches(self) -> list[JsonObj]:
        return [w.body for w in self.writes_to(APPLICATION_INSTANCES)]


def settle(sup: Supplements, annotations: dict[str, str], item: Supplement) -> None:
    obj = {"metadata": {"name": "sw", "namespace": "ns", "annotations": annotations}}
    asyncio.run(sup.settle(obj, (item,)))


def test_one_event_and_the_annotation_only_after_delivery() -> None:
    reporter, client = Reporter(), Patches()
    sup = Supplements(
        client=client,
        resource=APPLICATION_INSTANCES,
        reporter=reporter,
        field_manager="test",
    )
    woken: list[ObjectKey] = []
    sup.wake = woken.append
    item = Supplement("report", "k1", {"eventKey": "managedStorage/ns/sw/Ready/True/k1"})
    settle(sup, {}, item)
    settle(sup, {}, item)  # buffered: not again, not annotated
    assert reporter.sent == [item.event["eventKey"]]  # type: ignore[index]
    assert client.patches == []
    reporter.flush()
    assert woken == [ObjectKey("ns", "sw")]
    settle(sup, {}, item)
    assert client.patches == [{"metadata": {"annotations": {"report": "k1"}}}]
    settle(sup, {"report": "k1"}, item)  # e.g. after a restart: nothing to do
    assert len(reporter.sent) == 1
    rotated = Supplement("report", "k2", {"eventKey": "managedStorage/ns/sw/Ready/True/k2"})
    settle(sup, {"report": "k1"}, rotated)
    assert reporter.sent[-1].endswith("/k2")


def test_a_dropped_event_is_handed_over_again_and_a_cleared_report_is_rearmed() -> None:
    reporter, client = Reporter(), Patches()
    sup = Supplements(
        client=client,
        resource=APPLICATION_INSTANCES,
        reporter=reporter,
        field_manager="test",
    )
    item = Supplement("failed", "e1", {"eventKey": "ManagedStorageFailed/u/Ready#e1"})
    settle(sup, {}, item)
    reporter.waiting.clear()  # the batcher dropped it (overflow)
    settle(sup, {}, item)
    assert len(reporter.sent) == 2
    settle(sup, {"failed": "e1"}, Supplement("failed", ""))
    assert client.patches[-1] == {"metadata": {"annotations": {"failed": None}}}
