"""The agent's wire types and small parsers."""

from __future__ import annotations

import datetime

import pytest

from vworkspace.agent.applier import parse_allowed
from vworkspace.agent.poller import parse_interval, target_of
from vworkspace.agent.wire import AppliedRef, Credentials, Job, JobDecodeError, JobResult, Outcome

T = datetime.datetime(2026, 11, 22, 10, 0, 0, 250000, tzinfo=datetime.UTC)


def test_go_zero_times_and_empty_keys_mean_unset() -> None:
    job = Job.from_wire(
        {
            "id": "j",
            "kind": "apply",
            "payload": {},
            "idempotencyKey": "  ",
            "createdAt": "0001-01-01T00:00:00Z",
            "expiresAt": "0001-01-01T00:00:00Z",
        }
    )
    assert (job.idempotency_key, job.created_at, job.expires_at) == ("", None, None)


def test_timestamps_are_parsed_to_utc() -> None:
    job = Job.from_wire(
        {"id": "j", "kind": "apply", "payload": {}, "expiresAt": "2026-11-22T11:00:00+01:00"}
    )
    assert job.expires_at == datetime.datetime(2026, 11, 22, 10, 0, tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("not an object", "job must be an object"),
        ({"kind": "apply", "payload": {}}, "job has no id"),
        ({"id": "j", "payload": {}}, "has no kind"),
        ({"id": "j", "kind": "apply"}, "has no payload"),
        (
            {"id": "j", "kind": "apply", "payload": {}, "expiresAt": "yesterday"},
            "invalid timestamp",
        ),
    ],
)
def test_malformed_jobs_are_refused_with_a_reason(raw: object, message: str) -> None:
    with pytest.raises(JobDecodeError, match=message):
        Job.from_wire(raw)


def test_applied_ref_always_carries_namespace_and_omits_zero_values() -> None:
    assert AppliedRef("v1", "Namespace", "", "shop").to_wire() == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "namespace": "",
        "name": "shop",
    }
    assert AppliedRef("a/v1", "K", "ns", "n", uid="u", generation=3).to_wire()["generation"] == 3


def test_job_result_wire_shape() -> None:
    assert JobResult(Outcome.NOOP, T, error="expired").to_wire() == {
        "outcome": "noop",
        "error": "expired",
        "timestamp": "2026-11-22T10:00:00.250000Z",
    }


def test_credentials_never_show_the_token() -> None:
    creds = Credentials("https://cp", "c1", "s3cr3t-token-value")
    assert "s3cr3t" not in repr(creds)
    assert "s3cr3t" not in str(creds)


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("1m", 60), ("45", 45), ("2m", 120), ("1.5m", 90)]
)
def test_poll_interval(text: str, seconds: int) -> None:
    assert parse_interval(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "abc", "500ms", "-5"])
def test_bad_poll_intervals(text: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_interval(text)


def test_allow_list_entries() -> None:
    assert parse_allowed(["apps/Deployment", "/ConfigMap", "Secret"]) == {
        ("apps", "Deployment"),
        ("", "ConfigMap"),
        ("", "Secret"),
    }
    with pytest.raises(ValueError, match="GROUP/Kind"):
        parse_allowed(["apps/deployments"])


def test_jobs_on_the_same_object_share_an_ordering_key() -> None:
    manifest = {"apiVersion": "v1", "metadata": {"name": "a", "namespace": "n"}}
    apply = Job("1", "apply", manifest)
    intent = Job(
        "2", "intent", {"intent": "ensure-application-instance", "applicationInstance": manifest}
    )
    delete = Job("3", "delete", {"apiVersion": "v1", "kind": "X", "name": "a", "namespace": "n"})
    assert target_of(apply) == target_of(intent) == target_of(delete) == "n/a"
    assert target_of(Job("4", "apply", "garbage")) == "job:4"
