"""vworkspace_operator_credential_age_seconds restarts at 0 when the credentials are rewritten
(registration, rotation), instead of counting from the Secret's creation as the Go operator's
does in steady state (docs/pull-mode.md)."""

from __future__ import annotations

import datetime

from prometheus_client import CollectorRegistry

from vworkspace.agent.credentials import written_at
from vworkspace.agent.metrics import AgentMetrics

CREATED = "2026-01-01T00:00:00Z"


def secret(*entries: tuple[str, dict[str, object]]) -> dict[str, object]:
    return {
        "metadata": {
            "name": "vworkspace-agent-credentials",
            "creationTimestamp": CREATED,
            "managedFields": [
                {"manager": manager, "operation": "Apply", "time": time, "fieldsV1": fields}
                for manager, (time, fields) in ((f"m{i}", entry) for i, entry in enumerate(entries))
            ],
        }
    }


def age(obj: dict[str, object] | None) -> float:
    registry = CollectorRegistry()
    AgentMetrics(registry).watch_credential_age(registry, lambda: written_at(obj))
    value = registry.get_sample_value("vworkspace_operator_credential_age_seconds")
    assert value is not None
    return value


def test_a_rotation_restarts_the_age() -> None:
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    rotated = secret(("2026-01-01T00:00:00Z", {"f:data": {}}), (now.isoformat(), {"f:data": {}}))
    assert written_at(rotated) == now
    assert age(rotated) < 60  # not months since creation
    # Registration only: the age counts from then.
    registered = secret((CREATED, {"f:data": {}, "f:metadata": {}}))
    assert age(registered) > 24 * 3600


def test_edits_that_do_not_touch_the_credentials_do_not_count() -> None:
    now = datetime.datetime.now(datetime.UTC).isoformat()
    labelled = secret((CREATED, {"f:data": {}}), (now, {"f:metadata": {"f:labels": {}}}))
    assert written_at(labelled) == datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def test_no_secret_is_zero() -> None:
    assert written_at(None) is None
    assert age(None) == 0.0
