"""Pure parts of the workload engines: names, env, status mapping, Workflow arguments."""

from __future__ import annotations

import pytest

from vworkspace.engines.base import EngineError, State
from vworkspace.engines.job import env_list, job_observation
from vworkspace.engines.workflow import arguments, desired, workflow_observation
from vworkspace.engines.workload import workload_name
from vworkspace.testing.objects import managed_instance, operation


def _op(name: str, namespace: str = "shop", **spec: object) -> dict[str, object]:
    op = operation(name, namespace, **spec)
    op["metadata"]["uid"] = "0b6f6a4e-uid"
    return op


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
        ("Terminated", State.FAILED),
        ("Skipped", State.FAILED),
    ],
)
def test_workflow_phases(phase: str, state: State) -> None:
    wf = {"metadata": {"name": "w", "namespace": "ns"}, "status": {"phase": phase, "message": "m"}}
    seen = workflow_observation(wf)
    assert (seen.state, seen.outputs) == (state, {"workflowName": "w"})


def test_workflow_arguments_are_sorted_and_template_spellings_must_agree() -> None:
    assert arguments({"workflowTemplateParameters": {"b": 1}, "failureAction": "stop"}) == [
        {"name": "b", "value": "1"},
        {"name": "failureAction", "value": "stop"},
    ]
    target = managed_instance("shop", "shop")
    both = _op("rb", type_="Runbook", parameters={"template": "a", "workflowTemplate": "b"})
    with pytest.raises(EngineError, match="different"):
        desired(both, target)
    same = _op("rb", type_="Runbook", parameters={"template": "a", "workflowTemplate": "a"})
    assert desired(same, target)["spec"]["workflowTemplateRef"] == {"name": "a"}
