"""Pure parts of the workload engines: names, env, status mapping, Workflow arguments."""

from __future__ import annotations

from typing import Any

import pytest

from vworkspace.api.applicationinstance import ApplicationInstanceView
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.operation import OperationView
from vworkspace.engines.base import EngineError, State
from vworkspace.engines.job import env_list, job_observation
from vworkspace.engines.workflow import arguments, desired, workflow_observation
from vworkspace.engines.workload import workload_name
from vworkspace.testing.objects import managed_instance, operation


def _op(name: str, namespace: str = "shop", **spec: object) -> OperationView:
    op = operation(name, namespace, **spec)
    op["metadata"]["uid"] = "0b6f6a4e-uid"
    return OperationView(op)


def test_workload_names_are_namespace_qualified_and_the_uid_when_too_long() -> None:
    assert workload_name(_op("nightly")) == "shop--nightly"
    assert workload_name(_op("n" * 56)) == "shop--" + "n" * 56  # 62 characters
    assert workload_name(_op("n" * 58)) == "0b6f6a4e-uid"


def test_env_accepts_the_schema_list_in_order_and_the_go_map_sorted() -> None:
    listed = [{"name": "B", "value": "2"}, {"name": "A", "valueFrom": {"x": 1}}]
    assert env_list(listed) == listed
    assert env_list({"B": 2, "A": "1"}) == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "2"},
    ]
    with pytest.raises(EngineError, match=r"spec\.parameters\.env"):
        env_list("A=1")


def _job(*conditions: tuple[str, str, str, str]) -> dict[str, object]:
    """A Job whose status has the (type, status, reason, message) conditions given."""
    return {
        "metadata": {"name": "j", "namespace": "ns"},
        "status": {
            "conditions": [
                {"type": t, "status": s, "reason": r, "message": m} for t, s, r, m in conditions
            ]
        },
    }


# What the Kubernetes 1.36 Job controller wrote in tests/real/test_jobs.py.
SUCCESS_CRITERIA = (
    "SuccessCriteriaMet",
    "True",
    "CompletionsReached",
    "Reached expected number of succeeded pods",
)
COMPLETE = ("Complete", "True", "CompletionsReached", "Reached expected number of succeeded pods")
FAILURE_TARGET = (
    "FailureTarget",
    "True",
    "BackoffLimitExceeded",
    "Job has reached the specified backoff limit",
)
FAILED = ("Failed", "True", "BackoffLimitExceeded", "Job has reached the specified backoff limit")


def test_a_job_without_a_true_terminal_condition_is_running() -> None:
    assert job_observation(_job()).state == State.RUNNING
    assert job_observation(_job(("Failed", "False", "", ""))).state == State.RUNNING
    suspended = ("Suspended", "True", "JobSuspended", "Job suspended")
    assert job_observation(_job(suspended)).state == State.RUNNING


@pytest.mark.parametrize(
    "conditions",
    [(SUCCESS_CRITERIA,), (SUCCESS_CRITERIA, COMPLETE), (COMPLETE,)],
    ids=["SuccessCriteriaMet", "SuccessCriteriaMet+Complete", "Complete (before 1.31)"],
)
def test_the_job_controllers_success_conditions_succeed_with_its_reason(
    conditions: tuple[tuple[str, str, str, str], ...],
) -> None:
    done = job_observation(_job(*conditions))
    assert (done.state, done.reason, done.message, done.outputs) == (
        State.SUCCEEDED,
        "EngineCompleted",
        "CompletionsReached: Reached expected number of succeeded pods",
        {"jobName": "j"},
    )


@pytest.mark.parametrize(
    "conditions",
    [(FAILURE_TARGET,), (FAILURE_TARGET, FAILED), (FAILED,)],
    ids=["FailureTarget", "FailureTarget+Failed", "Failed (before 1.31)"],
)
def test_the_job_controllers_failure_conditions_fail_with_its_reason(
    conditions: tuple[tuple[str, str, str, str], ...],
) -> None:
    """FailureTarget is final (the API server never lets it be withdrawn): the Operation fails
    then, not only once every Pod has terminated and Failed follows."""
    failed = job_observation(_job(*conditions))
    assert (failed.state, failed.reason, failed.message) == (
        State.FAILED,
        "EngineFailed",
        "BackoffLimitExceeded: Job has reached the specified backoff limit",
    )


def test_a_job_condition_without_reason_or_message_still_gives_a_message() -> None:
    assert job_observation(_job(("Failed", "True", "", "exit 1"))).message == "exit 1"
    assert job_observation(_job(("Failed", "True", "", ""))).message == "Job j failed"
    assert job_observation(_job(("Complete", "True", "", ""))).message == "Job j complete"
    deadline = ("FailureTarget", "True", "DeadlineExceeded", "")
    assert job_observation(_job(deadline)).message == "DeadlineExceeded"


@pytest.mark.parametrize(
    ("phase", "state"),
    [
        ("", State.RUNNING),
        ("Running", State.RUNNING),
        ("Succeeded", State.SUCCEEDED),
        ("Failed", State.FAILED),
        ("Error", State.FAILED),
        # Argo's WorkflowPhase has no other values; one it may add later does not end the
        # Operation on a guess.
        ("Pending", State.RUNNING),
        ("Terminated", State.RUNNING),
    ],
)
def test_workflow_phases(phase: str, state: State) -> None:
    wf = {"metadata": {"name": "w", "namespace": "ns"}, "status": {"phase": phase, "message": "m"}}
    seen = workflow_observation(wf)
    assert (seen.state, seen.outputs) == (state, {"workflowName": "w"})


def _node(name: str, type_: str, phase: str, message: str = "", **extra: Any) -> JsonObj:
    return {
        "id": f"w-{name}",
        "name": f"w.{name}",
        "displayName": name,
        "type": type_,
        "phase": phase,
        **({"message": message} if message else {}),
        **extra,
    }


# The shape of what workflow-controller v3.6.10 wrote for a steps Workflow whose step `restart`
# (retry limit 1) ran `sh -c "exit 3"` twice (tests/real/test_argo.py, argo-phases lines): the
# Workflow's message names only the failed child's node id; StepGroup nodes left out.
FAILED_STEPS_STATUS: JsonObj = {
    "phase": "Failed",
    "message": "child 'w-restart' failed",
    "nodes": {
        n["id"]: n
        for n in (
            _node("w", "Steps", "Failed", "child 'w-restart' failed", children=["w-0"]),
            _node("check", "Pod", "Succeeded", finishedAt="2026-12-07T14:00:02Z"),
            _node("restart", "Retry", "Failed", "No more retries left", children=["w-r0", "w-r1"]),
            _node("restart(0)", "Pod", "Failed", "Error (exit code 3)", finishedAt="T1"),
            _node("restart(1)", "Pod", "Failed", "Error (exit code 3)", finishedAt="T2"),
        )
    },
}


def test_a_failed_workflow_says_its_phase_message_and_the_failed_step() -> None:
    wf = {"metadata": {"name": "w", "namespace": "ns"}, "status": FAILED_STEPS_STATUS}
    seen = workflow_observation(wf)
    assert (seen.state, seen.reason, seen.message) == (
        State.FAILED,
        "EngineFailed",
        "Failed: child 'w-restart' failed; restart(1): Error (exit code 3)",
    )


def test_an_errored_workflow_says_error_and_argos_message() -> None:
    status = {"phase": "Error", "message": 'workflowtemplates.argoproj.io "t" not found'}
    seen = workflow_observation({"metadata": {"name": "w", "namespace": "ns"}, "status": status})
    assert (seen.state, seen.message) == (
        State.FAILED,
        'Error: workflowtemplates.argoproj.io "t" not found',
    )


def test_a_failed_step_already_in_the_workflow_message_is_not_repeated() -> None:
    # A single-container entrypoint: the Workflow's message is its Pod node's.
    pod = _node("w", "Pod", "Failed", "Error (exit code 2)")
    status = {"phase": "Failed", "message": "Error (exit code 2)", "nodes": {"w": pod}}
    seen = workflow_observation({"metadata": {"name": "w", "namespace": "ns"}, "status": status})
    assert seen.message == "Failed: Error (exit code 2)"


def test_a_failed_workflow_without_message_or_nodes_still_gives_one() -> None:
    seen = workflow_observation(
        {"metadata": {"name": "w", "namespace": "ns"}, "status": {"phase": "Error"}}
    )
    assert seen.message == "Workflow w Error"
    succeeded = {"metadata": {"name": "w", "namespace": "ns"}, "status": {"phase": "Succeeded"}}
    assert workflow_observation(succeeded).message == "Workflow w Succeeded"


def test_workflow_arguments_are_sorted_and_template_spellings_must_agree() -> None:
    assert arguments({"workflowTemplateParameters": {"b": 1}, "failureAction": "stop"}) == [
        {"name": "b", "value": "1"},
        {"name": "failureAction", "value": "stop"},
    ]
    target = ApplicationInstanceView(managed_instance("shop", "shop"))
    both = _op("rb", type_="Runbook", parameters={"template": "a", "workflowTemplate": "b"})
    with pytest.raises(EngineError, match="different"):
        desired(both, target)
    same = _op("rb", type_="Runbook", parameters={"template": "a", "workflowTemplate": "a"})
    assert desired(same, target)["spec"]["workflowTemplateRef"] == {"name": "a"}
