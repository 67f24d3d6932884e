"""Condition helpers follow Kubernetes semantics: the transition time moves with the status only."""

from __future__ import annotations

import datetime

import pytest

from vworkspace.api.conditions import Condition, ConditionStatus, find, is_true, set_condition
from vworkspace.controllers.conditions import Conditions

T0 = datetime.datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=datetime.UTC)
S0 = T0.replace(microsecond=0)
T1 = S0 + datetime.timedelta(minutes=5)
T2 = S0 + datetime.timedelta(minutes=10)
TRUE, FALSE, UNKNOWN = ConditionStatus.TRUE, ConditionStatus.FALSE, ConditionStatus.UNKNOWN


def put(
    conds: tuple[Condition, ...],
    status: ConditionStatus,
    reason: str,
    now: datetime.datetime,
    *,
    type_: str = "Ready",
    message: str = "",
    generation: int | None = 1,
) -> tuple[Condition, ...]:
    return set_condition(
        conds,
        type_=type_,
        status=status,
        reason=reason,
        message=message,
        observed_generation=generation,
        now=now,
    )


def test_new_condition_gets_now_truncated_to_seconds_and_the_generation() -> None:
    (ready,) = put((), TRUE, "HelmReleaseReady", T0, generation=3)
    assert ready.last_transition_time == T0.replace(microsecond=0)
    assert ready.observed_generation == 3


def test_same_status_with_new_reason_and_message_keeps_the_transition_time() -> None:
    conds = put((), TRUE, "HelmReleaseReady", T0)
    conds = put(conds, TRUE, "Placeholder", T1, message="changed", generation=2)
    (ready,) = conds
    assert ready.last_transition_time == T0.replace(microsecond=0)
    assert (ready.reason, ready.message, ready.observed_generation) == ("Placeholder", "changed", 2)


def test_flapping_status_moves_the_transition_time_each_time() -> None:
    conds = put((), TRUE, "HelmReleaseReady", T0)
    conds = put(conds, FALSE, "HelmReleaseFailed", T1)
    assert find(conds, "Ready").last_transition_time == T1  # type: ignore[union-attr]
    conds = put(conds, TRUE, "HelmReleaseReady", T2)
    assert find(conds, "Ready").last_transition_time == T2  # type: ignore[union-attr]
    assert is_true(conds, "Ready")


def test_other_conditions_and_order_are_kept() -> None:
    conds = put((), TRUE, "A", T0, type_="Ready")
    conds = put(conds, FALSE, "B", T0, type_="Blocked")
    conds = put(conds, FALSE, "C", T1, type_="Ready")
    assert [c.type for c in conds] == ["Ready", "Blocked"]
    assert find(conds, "Blocked").last_transition_time == T0.replace(microsecond=0)  # type: ignore[union-attr]


@pytest.mark.parametrize("reason", ["", "has space", "1Starts", "Trailing,", "x" * 1025, "Ends-"])
def test_reasons_the_crd_would_reject_are_refused_before_the_write(reason: str) -> None:
    with pytest.raises(ValueError, match="reason"):
        put((), TRUE, reason, T0)


@pytest.mark.parametrize("reason", ["Ready", "HelmReleaseReady", "A", "Reason_with:colons,ok"])
def test_valid_reasons(reason: str) -> None:
    assert put((), TRUE, reason, T0)[0].reason == reason


def test_overlong_messages_are_truncated_to_the_crd_limit() -> None:
    (ready,) = put((), TRUE, "R", T0, message="m" * 40000)
    assert len(ready.message) == 32768
    assert ready.message.endswith("...")


def test_a_reason_or_message_change_is_reported_but_is_no_transition() -> None:
    # The control plane hears about a new reason at the same status (its audit view keys on
    # reasons); Kubernetes Events stay with status transitions.
    obj = {
        "metadata": {"generation": 1},
        "status": {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "Unknown",
                    "reason": "HelmReleaseInstalling",
                    "message": "",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ]
        },
    }
    conds = Conditions(obj, now=T1)
    conds.set("Ready", UNKNOWN, "HelmReleaseDegraded")
    assert conds.transitions() == []
    assert [c.reason for c in conds.changes()] == ["HelmReleaseDegraded"]
    same = Conditions(obj, now=T1)
    same.set("Ready", UNKNOWN, "HelmReleaseInstalling")
    assert same.changes() == []
    worded = Conditions(obj, now=T1)
    worded.set("Ready", UNKNOWN, "HelmReleaseInstalling", "waiting for the chart")
    assert [c.message for c in worded.changes()] == ["waiting for the chart"]
