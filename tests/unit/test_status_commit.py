"""The one status commit (controllers/status.py): writes only a change, renders the decision
onto the fresh object after a 409 (never re-sends a status built from a stale read), drops a
decision the fresh object invalidates, reports and records transitions once."""

from __future__ import annotations

import asyncio
import copy
import datetime
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

from vworkspace.api.conditions import Condition
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.view import ObjectView
from vworkspace.controllers.conditions import FALSE, TRUE, UNKNOWN
from vworkspace.controllers.status import Outcome, StatusCommit, StatusDraft
from vworkspace.kube.rest.api import JSON, RestVerbs
from vworkspace.kube.rest.errors import error_for
from vworkspace.kube.rest.paths import ApiPath
from vworkspace.kube.rest.resources import OPERATIONS
from vworkspace.kube.runtime.controller import Result

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


class OneObjectApi(RestVerbs):
    """One stored object: GET it, PUT its status with optimistic concurrency (409 on a stale
    resourceVersion), and ``meanwhile``: a write by someone else before our next PUT."""

    def __init__(self, obj: JsonObj) -> None:
        self.stored = copy.deepcopy(obj)
        self.puts: list[JsonObj] = []
        self.meanwhile: JsonObj | None = None

    async def request(
        self,
        method: str,
        path: ApiPath,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = JSON,
        timeout_s: float | None = None,
    ) -> JsonObj:
        if method == "GET":
            return copy.deepcopy(self.stored)
        assert method == "PUT", method
        assert path.segments[-1] == "status", path
        self.puts.append(copy.deepcopy(body))
        if self.meanwhile is not None:
            self._write_status(self.meanwhile)
            self.meanwhile = None
        if body["metadata"]["resourceVersion"] != self.stored["metadata"]["resourceVersion"]:
            raise error_for(status=409, body={"reason": "Conflict"}, method=method, path=str(path))
        self._write_status(body["status"])
        return copy.deepcopy(self.stored)

    def _write_status(self, status: JsonObj) -> None:
        self.stored["status"] = copy.deepcopy(status)
        version = int(self.stored["metadata"]["resourceVersion"]) + 1
        self.stored["metadata"]["resourceVersion"] = str(version)

    def stream_lines(
        self,
        path: ApiPath,
        *,
        query: Mapping[str, str],
        connect_timeout: float,
        total_timeout: float,
    ) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        raise NotImplementedError("no watches here")


class Reports:
    def __init__(self) -> None:
        self.seen: list[list[str]] = []

    def report(self, obj: dict[str, Any], transitions: list[Condition]) -> None:
        self.seen.append([f"{c.type}={c.status}" for c in transitions])

    def deliver(self, event: dict[str, Any], on_delivered: Any) -> None:
        return None

    def pending(self, event_key: str) -> bool:
        return False


def operation(status: JsonObj | None = None) -> JsonObj:
    obj: JsonObj = {
        "apiVersion": "ops.vworkspace.io/v1alpha1",
        "kind": "Operation",
        "metadata": {"name": "op", "namespace": "ns", "resourceVersion": "1", "generation": 1},
        "spec": {"type": "Backup", "engine": "velero"},
    }
    if status is not None:
        obj["status"] = status
    return obj


def commit(
    api: OneObjectApi, obj: JsonObj, outcome: Outcome, reports: Reports | None = None
) -> Result:
    writer = StatusCommit(
        client=api, resource=OPERATIONS, field_manager="test", reporter=reporter(reports)
    )
    return asyncio.run(writer.commit(ObjectView(obj), outcome))


def reporter(reports: Reports | None) -> Reports:
    return reports if reports is not None else Reports()


def test_a_decision_is_written_once_and_its_transitions_reported() -> None:
    obj = operation()
    api, reports = OneObjectApi(obj), Reports()
    draft = StatusDraft(ObjectView(obj), now=NOW)
    draft.set("phase", "Running")
    draft.set_condition("Running", TRUE, "EngineStarted")

    result = commit(api, obj, Outcome(Result.after(5), draft), reports)

    assert result == Result.after(5)
    assert len(api.puts) == 1
    assert api.stored["status"]["phase"] == "Running"
    assert reports.seen == [["Running=True"]]


def test_an_unchanged_status_is_not_written_nor_reported() -> None:
    obj = operation()
    api = OneObjectApi(obj)
    draft = StatusDraft(ObjectView(obj), now=NOW)
    draft.set("phase", "Running")
    draft.set_condition("Running", TRUE, "EngineStarted")
    commit(api, obj, Outcome(status=draft))
    stored = copy.deepcopy(api.stored)
    reports = Reports()

    again = StatusDraft(ObjectView(stored), now=NOW + datetime.timedelta(seconds=5))
    again.set("phase", "Running")
    again.set_condition("Running", TRUE, "EngineStarted")
    commit(api, stored, Outcome(status=again), reports)

    assert len(api.puts) == 1
    assert reports.seen == []


def test_after_a_409_the_decision_is_rendered_onto_the_fresh_object() -> None:
    obj = operation({"phase": "Running"})
    api, reports = OneObjectApi(obj), Reports()
    # Someone else stores a field and a condition between our read and our write.
    api.meanwhile = {
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
    }
    draft = StatusDraft(ObjectView(obj), now=NOW)
    draft.set("engineRef", {"kind": "Backup", "name": "b"})
    draft.set_condition("Running", TRUE, "EngineStarted")

    commit(api, obj, Outcome(status=draft), reports)

    assert len(api.puts) == 2  # the stale write, then one rendered from the fresh read
    stored = api.stored["status"]
    assert stored["logsRef"] == {"name": "kept"}  # the other writer's field survives
    assert stored["engineRef"] == {"kind": "Backup", "name": "b"}
    assert {c["type"] for c in stored["conditions"]} == {"Accepted", "Running"}
    assert reports.seen == [["Running=True"]]  # measured against the fresh object, once


def test_a_fresh_object_that_invalidates_the_decision_is_not_overwritten() -> None:
    obj = operation({"phase": "Running"})
    api, reports = OneObjectApi(obj), Reports()
    api.meanwhile = {"phase": "Succeeded"}
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

    assert api.stored["status"]["phase"] == "Succeeded"
    assert result == Result.after(0.0)  # looked at again, with the fresh object
    assert ran == []  # nothing follows a decision that was not stored
    assert reports.seen == []


def test_a_default_condition_never_overwrites_a_stored_one() -> None:
    obj = operation()
    api = OneObjectApi(obj)
    api.meanwhile = {
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "Broken",
                "message": "",
                "lastTransitionTime": "2025-12-31T00:00:00Z",
            }
        ]
    }
    draft = StatusDraft(ObjectView(obj), now=NOW)
    draft.default_condition("Ready", UNKNOWN, "Reconciling")
    assert draft.condition("Ready") is not None

    commit(api, obj, Outcome(status=draft))

    ready = api.stored["status"]["conditions"]
    assert [(c["type"], c["status"], c["reason"]) for c in ready] == [("Ready", "False", "Broken")]
    assert len(api.puts) == 1  # the fresh object already has a Ready: nothing more to write


def test_the_then_step_runs_after_the_write_and_may_replace_the_requeue() -> None:
    obj = operation()
    api = OneObjectApi(obj)
    draft = StatusDraft(ObjectView(obj), now=NOW)
    draft.set_condition("Deleting", TRUE, "Uninstalling")
    draft.set_condition("Ready", FALSE, "Uninstalling")
    order: list[str] = []

    async def then() -> Result:
        order.append(f"then after {len(api.puts)} write(s)")
        return Result.after(15)

    result = commit(api, obj, Outcome(Result.done(), draft, report=False, then=then))

    assert order == ["then after 1 write(s)"]
    assert result == Result.after(15)
