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


def _job(*conditions: tuple[str, str, str]) -> dict[str, object]:
    return {
        "metadata": {"name": "j", "namespace": "ns"},
        "status": {
            "conditions": [{"type": t, "status": s, "message": m} for t, s, m in conditions]
        },
    }


def test_job_conditions_map_to_the_operation_verdict() -> None:
    assert job_observation(_job()).state == State.RUNNING
    assert job_observation(_job(("Failed", "False", ""))).state == State.RUNNING
    done = job_observation(_job(("SuccessCriteriaMet", "True", ""), ("Complete", "True", "")))
    assert (done.state, done.reason, done.outputs) == (
        State.SUCCEEDED,
        "EngineCompleted",
        {"jobName": "j"},
    )
    failed = job_observation(_job(("Failed", "True", "BackoffLimitExceeded")))
    assert (failed.state, failed.message) == (State.FAILED, "BackoffLimitExceeded")


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
