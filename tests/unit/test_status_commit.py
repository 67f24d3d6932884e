"""The one status commit (controllers/status.py): writes only a change, renders the decision
onto the fresh object after a 409 (never re-sends a status built from a stale read), drops a
decision the fresh object invalidates, reports and records transitions once. On the fake API
(vworkspace/testing/fakeapi): the 409s are its optimistic-concurrency answers to a stale
resourceVersion, not injected."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

from vworkspace.api.conditions import Condition
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.api.view import ObjectView
from vworkspace.controllers.conditions import FALSE, TRUE, UNKNOWN
from vworkspace.controllers.status import Outcome, StatusCommit, StatusDraft
from vworkspace.kube.rest.resources import OPERATIONS
from vworkspace.kube.runtime.controller import Result
from vworkspace.testing.fakeapi import FakeApi

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
KEY = ObjectKey("ns", "op")


class Reports:
    def __init__(self) -> None:
        self.seen: list[list[str]] = []

    def report(self, obj: dict[str, Any], transitions: list[Condition]) -> None:
        self.seen.append([f"{c.type}={c.status}" for c in transitions])

    def deliver(self, event: dict[str, Any], on_delivered: Any) -> None:
        return None

    def pending(self, event_key: str) -> bool:
        return False


def operation(status: JsonObj | None = None) -> tuple[FakeApi, JsonObj]:
    """A fake API holding one Operation, and the Operation as a reconcile read it."""
    obj: JsonObj = {
        "apiVersion": "ops.vworkspace.io/v1alpha1",
        "kind": "Operation",
        "metadata": {"name": KEY.name, "namespace": KEY.namespace},
        "spec": {"type": "Backup", "engine": "velero"},
    }
    if status is not None:
        obj["status"] = status
    api = FakeApi()
    return api, api.add(OPERATIONS, obj)


def meanwhile(api: FakeApi, status: JsonObj) -> None:
    """Another writer stores ``status`` after our read: our resourceVersion is now stale."""
    api.set_status(OPERATIONS, KEY, status)


def stored_status(api: FakeApi) -> JsonObj:
    stored = api.stored(OPERATIONS, KEY)
    assert stored is not None
    return dict(stored.get("status") or {})


def status_codes(api: FakeApi) -> list[int]:
    return [w.code for w in api.writes if w.subresource == "status"]


def commit(api: FakeApi, obj: JsonObj, outcome: Outcome, reports: Reports | None = None) -> Result:
    writer = StatusCommit(
        client=api,
        resource=OPERATIONS,
        field_manager="test",
        reporter=reports if reports is not None else Reports(),
    )
    return asyncio.run(writer.commit(ObjectView(obj), outcome))


def test_a_decision_is_written_once_and_its_transitions_reported() -> None:
    api, obj = operation()
    reports = Reports()
    draft = StatusDraft(ObjectView(obj), now=NOW)
    draft.set("phase", "Running")
    draft.set_condition("Running", TRUE, "EngineStarted")

    result = commit(api, obj, Outcome(Result.after(5), draft), reports)

    assert result == Result.after(5)
    assert status_codes(api) == [200]
    assert stored_status(api)["phase"] == "Running"
    assert reports.seen == [["Running=True"]]


def test_an_unchanged_status_is_not_written_nor_reported() -> None:
    api, obj = operation()
    draft = StatusDraft(ObjectView(obj), now=NOW)
    draft.set("phase", "Running")
    draft.set_condition("Running", TRUE, "EngineStarted")
    commit(api, obj, Outcome(status=draft))
    stored = api.stored(OPERATIONS, KEY)
    assert stored is not None
    reports = Reports()

    again = StatusDraft(ObjectView(stored), now=NOW + datetime.timedelta(seconds=5))
    again.set("phase", "Running")
    again.set_condition("Running", TRUE, "EngineStarted")
    commit(api, stored, Outcome(status=again), reports)

    assert status_codes(api) == [200]
    assert reports.seen == []


def test_after_a_409_the_decision_is_rendered_onto_the_fresh_object() -> None:
    api, obj = operation({"phase": "Running"})
    reports = Reports()
    # Someone else stores a field and a condition between our read and our write.
    meanwhile(
        api,
        {
            "phase": "Running",
            "logsRef": {"name": "kept"},
            "conditions": [
                {
                    "type": "Accepted",
                    "status": "True",
                    "reason": "AdmissionPassed",
                    "message": "",
                    "lastTransitionTime": "2025-12-31T00:00:00Z",
                }
            ],
        },
    )
    draft = StatusDraft(ObjectView(obj), now=NOW)
    draft.set("engineRef", {"kind": "Backup", "name": "b"})
    draft.set_condition("Running", TRUE, "EngineStarted")

    commit(api, obj, Outcome(status=draft), reports)

    assert status_codes(api) == [409, 200]  # the stale write, then one from the fresh read
    stored = stored_status(api)
    assert stored["logsRef"] == {"name": "kept"}  # the other writer's field survives
    assert stored["engineRef"] == {"kind": "Backup", "name": "b"}
    assert {c["type"] for c in stored["conditions"]} == {"Accepted", "Running"}
    assert reports.seen == [["Running=True"]]  # measured against the fresh object, once


def test_a_fresh_object_that_invalidates_the_decision_is_not_overwritten() -> None:
    api, obj = operation({"phase": "Running"})
    reports = Reports()
    meanwhile(api, {"phase": "Succeeded"})
    draft = StatusDraft(
        ObjectView(obj),
        now=NOW,
        still_valid=lambda live: ObjectView(live).status.get("phase") == "Running",
    )
    draft.set("phase", "Failed")
    ran: list[str] = []

    async def then() -> None:
        ran.append("then")

    result = commit(api, obj, Outcome(Result.done(), draft, then=then), reports)

    assert stored_status(api)["phase"] == "Succeeded"
    assert status_codes(api) == [409]
    assert result == Result.after(0.0)  # looked at again, with the fresh object
    assert ran == []  # nothing follows a decision that was not stored
    assert reports.seen == []


def test_a_default_condition_never_overwrites_a_stored_one() -> None:
    api, obj = operation()
    broken = {
        "type": "Ready",
        "status": "False",
        "reason": "Broken",
        "message": "",
        "lastTransitionTime": "2025-12-31T00:00:00Z",
    }
    meanwhile(api, {"conditions": [broken]})
    draft = StatusDraft(ObjectView(obj), now=NOW)
    draft.default_condition("Ready", UNKNOWN, "Reconciling")
    assert draft.condition("Ready") is not None

    commit(api, obj, Outcome(status=draft))

    assert stored_status(api)["conditions"] == [broken]
    assert status_codes(api) == [409]  # the fresh object has a Ready: nothing more to write


def test_the_then_step_runs_after_the_write_and_may_replace_the_requeue() -> None:
    api, obj = operation()
    draft = StatusDraft(ObjectView(obj), now=NOW)
    draft.set_condition("Deleting", TRUE, "Uninstalling")
    draft.set_condition("Ready", FALSE, "Uninstalling")
    order: list[str] = []

    async def then() -> Result:
        order.append(f"then after {len(status_codes(api))} status write(s)")
        return Result.after(15)

    result = commit(api, obj, Outcome(Result.done(), draft, report=False, then=then))

    assert order == ["then after 1 status write(s)"]
    assert result == Result.after(15)
