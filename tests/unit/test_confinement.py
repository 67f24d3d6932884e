"""A job touches only the object it names (issue 24, F1, Deliver 1 and 2): each reproduction of
the issue run through the real :class:`Applier` and :class:`KubeClient` against a local server
that records the raw path of every request. The assertion is on what reached the server."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import example, given, settings

from tests.unit.forgery import HELMRELEASE_NS, SEAWEED_NAME, texts, valid_namespace
from tests.unit.recording_api import RecordingApi, recording_api
from vworkspace.agent.applier import DEFAULT_ALLOWED, Applier
from vworkspace.agent.policy import Policy
from vworkspace.agent.wire import Job, JobResult, Outcome
from vworkspace.api import constants
from vworkspace.kube.clock import FakeClock

TEAMS = Policy(namespaces=("team-*",))
AI = f"{constants.APPS_GROUP}/{constants.VERSION}"
OPS = f"{constants.OPS_GROUP}/{constants.VERSION}"
AI_PATH = f"/apis/{AI}/namespaces/team-a/applicationinstances"


# Cluster is off the default allow-list (F8); allowed here, as a cluster that opts in has it,
# so the cluster-scoped reproductions of F1 still reach the name check.
ALLOWED = DEFAULT_ALLOWED | {(constants.OPS_GROUP, "Cluster")}


async def run(api: RecordingApi, kind: str, payload: Any, policy: Policy = TEAMS) -> JobResult:
    applier = Applier(
        api.client, cluster_id=lambda: "c1", clock=FakeClock(), policy=policy, allowed=ALLOWED
    )
    return await applier.process(Job(id="j1", kind=kind, payload=payload))


def assert_failed_naming(result: JobResult, field: str) -> None:
    assert result.outcome == Outcome.FAILED, result
    assert result.error.startswith(f"{field} "), result.error


def instance(namespace: str, *, release_ns: str | None = None) -> dict[str, Any]:
    release = {"name": "db", "namespace": release_ns or namespace}
    return {"metadata": {"name": "db", "namespace": namespace}, "spec": {"release": release}}


# -- the reproductions of F1 -----------------------------------------------------------------------


async def test_a_delete_cannot_reach_a_helmrelease_through_its_namespace() -> None:
    async with recording_api() as api:
        ref = {"apiVersion": AI, "kind": "ApplicationInstance", "name": "db"}
        result = await run(api, "delete", {**ref, "namespace": HELMRELEASE_NS})
    assert_failed_naming(result, "namespace")
    assert "is not a valid namespace name" in result.error
    assert api.paths() == []  # not even a GET


async def test_a_cluster_scoped_delete_cannot_reach_a_seaweed_through_its_name() -> None:
    async with recording_api() as api:
        result = await run(
            api, "delete", {"apiVersion": OPS, "kind": "Cluster", "name": SEAWEED_NAME}
        )
    assert_failed_naming(result, "name")
    assert api.paths() == []


@pytest.mark.parametrize("kind", ["apply", "ensure-application-instance"])
async def test_a_namespace_with_dot_segments_cannot_slip_past_the_namespace_policy(
    kind: str,
) -> None:
    """``team-a/../prod`` matched ``team-*`` and reached ``prod``, which ``prod`` was denied."""
    async with recording_api() as api:
        obj = instance("team-a/../prod")
        if kind == "apply":
            result = await run(
                api, "apply", {"apiVersion": AI, "kind": "ApplicationInstance", **obj}
            )
        else:
            result = await run(api, "intent", {"intent": kind, "applicationInstance": obj})
    assert_failed_naming(result, "metadata.namespace")
    assert api.paths() == []  # no namespace created, nothing applied


async def test_a_release_namespace_with_dot_segments_is_refused_before_any_namespace_exists() -> (
    None
):
    async with recording_api() as api:
        obj = instance("team-a", release_ns="team-a/../kube-system")
        result = await run(api, "apply", {"apiVersion": AI, "kind": "ApplicationInstance", **obj})
    assert_failed_naming(result, "spec.release.namespace")
    assert api.paths() == []


async def test_the_delete_intent_sends_neither_get_nor_delete() -> None:
    async with recording_api() as api:
        payload = {
            "intent": "delete-application-instance",
            "name": "db",
            "namespace": HELMRELEASE_NS,
        }
        result = await run(api, "intent", payload)
        named = await run(
            api,
            "intent",
            {"intent": "delete-application-instance", "name": "../x", "namespace": "team-a"},
        )
    assert_failed_naming(result, "namespace")
    assert_failed_naming(named, "name")
    assert api.paths() == []


async def test_request_operation_names_are_checked() -> None:
    async with recording_api() as api:
        op = {"metadata": {"name": "b/../../x", "namespace": "team-a"}, "spec": {}}
        result = await run(api, "intent", {"intent": "request-operation", "operation": op})
    assert_failed_naming(result, "metadata.name")
    assert api.paths() == []


async def test_a_namespaced_delete_without_a_namespace_is_refused() -> None:
    """It used to go to the cluster-wide path, whatever the namespace policy said."""
    async with recording_api() as api:
        result = await run(
            api, "delete", {"apiVersion": AI, "kind": "ApplicationInstance", "name": "db"}
        )
    assert_failed_naming(result, "namespace")
    assert result.error == "namespace is required for ApplicationInstance"
    assert api.paths() == []


async def test_a_namespace_object_name_is_a_label() -> None:
    async with recording_api() as api:
        result = await run(
            api,
            "apply",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a.x"}},
        )
    assert_failed_naming(result, "metadata.name")
    assert "not a valid namespace name" in result.error
    assert api.writes() == []


# -- what still works ------------------------------------------------------------------------------


async def test_valid_jobs_reach_exactly_their_object() -> None:
    async with recording_api() as api:
        applied = await run(
            api, "apply", {"apiVersion": AI, "kind": "ApplicationInstance", **instance("team-a")}
        )
        deleted = await run(
            api,
            "delete",
            {"apiVersion": AI, "kind": "ApplicationInstance", "name": "db", "namespace": "team-a"},
        )
        cluster = await run(
            api,
            "delete",
            {"apiVersion": OPS, "kind": "Cluster", "name": "c.1"},
        )
    assert [r.outcome for r in (applied, deleted, cluster)] == [Outcome.SUCCEEDED] * 3
    assert [(w.method, w.raw_path.split("?")[0]) for w in api.writes()] == [
        ("PATCH", f"{AI_PATH}/db"),
        ("DELETE", f"{AI_PATH}/db"),
        ("DELETE", f"/apis/{OPS}/clusters/c.1"),
    ]


# -- any delete job --------------------------------------------------------------------------------


async def _delete(namespace: str, name: str) -> tuple[JobResult, list[str]]:
    async with recording_api() as api:
        ref = {
            "apiVersion": AI,
            "kind": "ApplicationInstance",
            "name": name,
            "namespace": namespace,
        }
        result = await run(api, "delete", ref, policy=Policy())
    return result, [w.raw_path for w in api.writes()]


@given(namespace=texts, name=texts)
@settings(max_examples=40, deadline=None)
@example(namespace=HELMRELEASE_NS, name="db")
@example(namespace="team-a", name=SEAWEED_NAME)
def test_any_delete_job_deletes_exactly_its_object_or_fails_naming_the_field(
    namespace: str, name: str
) -> None:
    result, writes = asyncio.run(_delete(namespace, name))
    if result.outcome == Outcome.FAILED:
        assert writes == []
        # An empty name fails earlier, as a payload without a name.
        assert result.error.startswith(("namespace ", "name ", "delete payload requires "))
        return
    assert result.outcome == Outcome.SUCCEEDED
    assert valid_namespace(namespace)
    (path,) = writes
    segments = [unquote(s) for s in path[1:].split("/")]
    assert segments == [
        "apis",
        *AI.split("/"),
        "namespaces",
        namespace,
        "applicationinstances",
        name,
    ]
