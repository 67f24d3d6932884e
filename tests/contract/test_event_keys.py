"""The control plane's last word is the truth (issue 16): a condition that flaps
True -> False -> True within one second reaches the mock as three events, the last one True,
while true repeats of a transition (a repeated report, the snapshot) are deduplicated."""

from __future__ import annotations

import datetime
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import attrs
import pytest

from vworkspace.agent.client import ControlPlaneClient
from vworkspace.agent.events import EventBatcher, snapshot_events
from vworkspace.agent.wire import Credentials
from vworkspace.api.conditions import Condition, ConditionStatus
from vworkspace.api.converter import format_time
from vworkspace.kube.clock import RealClock
from vworkspace.mockcontrolplane import MockControlPlane

CLUSTER = "c-flap"
TOKEN = "tok-flap"


def instance(conditions: list[Condition], generation: int = 3) -> dict[str, Any]:
    return {
        "apiVersion": "apps.vworkspace.io/v1alpha1",
        "kind": "ApplicationInstance",
        "metadata": {"name": "odoo", "namespace": "t1", "uid": "u-1", "generation": generation},
        "status": {
            "conditions": [
                {
                    "type": c.type,
                    "status": c.status.value,
                    "reason": c.reason,
                    "message": c.message,
                    "lastTransitionTime": format_time(c.last_transition_time),
                }
                for c in conditions
            ]
        },
    }


def ready(status: ConditionStatus, reason: str, at: datetime.datetime) -> Condition:
    return Condition(
        type="Ready", status=status, reason=reason, message="", last_transition_time=at
    )


@pytest.fixture
async def rig() -> AsyncIterator[tuple[MockControlPlane, EventBatcher]]:
    async with MockControlPlane() as mock, aiohttp.ClientSession() as session:
        mock.set_bootstrap_token(CLUSTER, TOKEN)

        async def reload() -> Credentials:
            return Credentials(mock.url, CLUSTER, TOKEN)

        client = ControlPlaneClient(
            session,
            credentials=lambda: Credentials(mock.url, CLUSTER, TOKEN),
            reload=reload,
            clock=RealClock(),
            rng=random.Random(1),
        )
        batcher = EventBatcher(post=client.post_events, ready=lambda: True, clock=RealClock())
        yield mock, batcher


async def test_a_flap_within_one_second_reaches_the_control_plane_as_three_events(
    rig: tuple[MockControlPlane, EventBatcher],
) -> None:
    mock, batcher = rig
    # Conditions carry whole seconds: all three transitions share one lastTransitionTime.
    second = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    up = ready(ConditionStatus.TRUE, "Reconciled", second)
    down = ready(ConditionStatus.FALSE, "HelmReleaseFailed", second)
    again = ready(ConditionStatus.TRUE, "Reconciled", second)
    batcher.report(instance([up]), [up])
    batcher.report(instance([down]), [down])
    batcher.report(instance([again]), [again])
    assert await batcher.flush()

    events = mock.events(CLUSTER, kind="ApplicationInstance")
    statuses = [e["conditions"][0]["status"] for e in events]
    assert statuses == ["True", "False", "True"]
    keys = [e["eventKey"] for e in events]
    assert len(set(keys)) == 3
    # The wire format is kept: the first key is exactly the documented one.
    stamp = int(second.timestamp())
    prefix = "condition/apps.vworkspace.io/v1alpha1/ApplicationInstance/t1/odoo/u-1/Ready"
    assert keys[0] == f"{prefix}/True@3#{stamp}"
    assert keys[1] == f"{prefix}/False@3#{stamp}"
    assert keys[2] == f"{prefix}/True@3#{stamp}.1"

    # True repeats are deduplicated: the same transition reported again, and the snapshot.
    batcher.report(instance([again]), [again])
    for event in snapshot_events(
        [instance([again])], now=datetime.datetime.now(datetime.UTC), keys=batcher.keys
    ):
        batcher.enqueue(event)
    assert await batcher.flush()
    events = mock.events(CLUSTER, kind="ApplicationInstance")
    assert [e["conditions"][0]["status"] for e in events] == ["True", "False", "True"]
    assert events[-1]["conditions"][0]["reason"] == "Reconciled"


async def test_transitions_in_different_seconds_keep_the_plain_key(
    rig: tuple[MockControlPlane, EventBatcher],
) -> None:
    mock, batcher = rig
    first = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
    for offset, status in enumerate([ConditionStatus.TRUE, ConditionStatus.FALSE] * 2):
        cond = ready(status, "Flux", first + datetime.timedelta(seconds=offset))
        batcher.report(instance([cond]), [cond])
    assert await batcher.flush()
    keys = [e["eventKey"] for e in mock.events(CLUSTER, kind="ApplicationInstance")]
    assert len(keys) == 4
    assert all("." not in key.rsplit("#", 1)[1] for key in keys)


async def test_a_new_reason_at_the_same_status_reaches_the_control_plane(
    rig: tuple[MockControlPlane, EventBatcher],
) -> None:
    # Issue 19: the control plane's audit view keys on reasons. A reason (or message) change
    # keeps status and lastTransitionTime, so it needs a key of its own; repeats still dedupe.
    mock, batcher = rig
    since = datetime.datetime.now(datetime.UTC).replace(microsecond=0) - datetime.timedelta(
        minutes=5
    )
    installing = ready(ConditionStatus.UNKNOWN, "HelmReleaseInstalling", since)
    degraded = ready(ConditionStatus.UNKNOWN, "HelmReleaseDegraded", since)
    batcher.report(instance([installing]), [installing])
    batcher.report(instance([degraded]), [degraded])
    batcher.report(instance([degraded]), [degraded])  # a true repeat
    assert await batcher.flush()
    events = mock.events(CLUSTER, kind="ApplicationInstance")
    assert [e["conditions"][0]["reason"] for e in events] == [
        "HelmReleaseInstalling",
        "HelmReleaseDegraded",
    ]
    stamp = int(since.timestamp())
    prefix = "condition/apps.vworkspace.io/v1alpha1/ApplicationInstance/t1/odoo/u-1/Ready"
    assert [e["eventKey"] for e in events] == [
        f"{prefix}/Unknown@3#{stamp}",
        f"{prefix}/Unknown@3#{stamp}.1",
    ]
    # A new message alone counts too.
    worded = attrs.evolve(degraded, message="release degraded: 1 pod pending")
    batcher.report(instance([worded]), [worded])
    assert await batcher.flush()
    events = mock.events(CLUSTER, kind="ApplicationInstance")
    assert events[-1]["conditions"][0]["message"] == "release degraded: 1 pod pending"
    assert events[-1]["eventKey"] == f"{prefix}/Unknown@3#{stamp}.2"
