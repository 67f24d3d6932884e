"""Job-running Operations through the real Job controller (issue 25, deliverables 6 and 7).

A RunCommand (``job`` engine) and a Migration (``helmHookJob`` engine, with its image given and
with the image from the target's ``ops.vworkspace.io/migration-image`` annotation) each create
their Job; the real Job controller creates its Pod, the real scheduler binds it to a kwok Node,
kwok's pod-complete stage ends it Succeeded, the Job controller writes Complete, and the
operator (``real_operator``: a subprocess under the shipped ServiceAccount and RBAC) reports the
Operation Succeeded. A failing one asks for the command ``sh -c "exit N"``: our kwok stage
(scripts/testenv/kwok-stages/pod-shell-exit.yaml) ends that Pod Failed with exit code N, the Job
controller retries up to the Operation's ``backoffLimit`` and then fails the Job with its own
reason (BackoffLimitExceeded), which the Operation's Failed condition carries.

Nothing here writes a status. Each test prints what it observed as ``flux-conditions:`` lines
(the format of tests/real/test_flux.py): the Job's conditions and counts, the Operation's phase
and conditions, in the order they appeared. Those sequences are what the hand-written Job
statuses of the other tiers are checked against.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import attrs
import pytest

from tests.integration.operator_process import OperatorProcess
from tests.real.test_flux import ConditionLog, condition, report
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.engines.job import JOBS
from vworkspace.engines.workload import workload_name
from vworkspace.kube.rest.client import KubeClient
from vworkspace.kube.rest.errors import NotFoundError
from vworkspace.kube.rest.resources import APPLICATION_INSTANCES, OPERATIONS, ResourceType
from vworkspace.testing import ControlPlane
from vworkspace.testing.kwok import KwokNodes
from vworkspace.testing.objects import managed_instance, operation

PODS = ResourceType("", "v1", "pods", "Pod")
OPERATION = "op"
MIGRATION_IMAGE = "registry.invalid/shop-migrate:1"
CAPABILITIES = {
    "ops.vworkspace.io/migration": "helmHookJob",
    "ops.vworkspace.io/runcommand": "job",
    "ops.vworkspace.io/migration-image": MIGRATION_IMAGE,
}
# The Job controller's own words (k8s.io/kubernetes pkg/controller/job, 1.36).
BACKOFF_REASON = "BackoffLimitExceeded"
BACKOFF_MESSAGE = "Job has reached the specified backoff limit"
# The operator looks at a running Operation every 5 s (controllers/operation.py POLL); a failing
# Job with backoffLimit 1 waits the Job controller's 10 s pod backoff once.
TIMEOUT = 90.0
# Job status counts worth a line in the sequence (terminating and ready are 1.29+ fields).
COUNTS = ("active", "ready", "terminating", "succeeded", "failed")


@pytest.fixture
async def kube(control_plane: ControlPlane) -> AsyncIterator[KubeClient]:
    client = await KubeClient.from_kubeconfig(str(control_plane.kubeconfig_path))
    yield client
    await client.close()


@attrs.define
class Observed:
    """What one poll loop saw of an Operation and its Job, in order."""

    job: ConditionLog = attrs.field(factory=ConditionLog)
    operation: ConditionLog = attrs.field(factory=ConditionLog)
    last_job: JsonObj = attrs.field(factory=dict)
    last_operation: JsonObj = attrs.field(factory=dict)
    # The Job's Pods by name, as last seen (the operator deletes a failed Operation's Job and
    # so its Pods after the verdict).
    pods: dict[str, JsonObj] = attrs.field(factory=dict)

    def record(self, job: JsonObj, op: JsonObj, pods: list[JsonObj]) -> None:
        self.pods.update((pod["metadata"]["name"], pod) for pod in pods)
        if job:
            self.last_job = job
            status = job.get("status") or {}
            counts = ",".join(f"{k}:{status[k]}" for k in COUNTS if status.get(k))
            # The counts as one pseudo-condition, so ConditionLog keeps each change once.
            self.job.record(_with_pseudo(job, "counts", counts or "none"))
        if op:
            self.last_operation = op
            phase = (op.get("status") or {}).get("phase") or "none"
            self.operation.record(_with_pseudo(op, "phase", phase))

    def report(self, what: str, seconds: float) -> None:
        report(f"{what}: Job", self.job, seconds)
        report(f"{what}: Operation", self.operation, seconds)


def _with_pseudo(obj: JsonObj, kind: str, value: str) -> JsonObj:
    conditions = list((obj.get("status") or {}).get("conditions") or [])
    return {"status": {"conditions": [{"type": kind, "status": value}, *conditions]}}


async def _get(kube: KubeClient, resource: ResourceType, key: ObjectKey) -> JsonObj:
    try:
        return await kube.get(resource, key)
    except NotFoundError:
        return {}


def _finished(job: JsonObj) -> bool:
    return any(condition(job, t).get("status") == "True" for t in ("Complete", "Failed"))


async def follow(kube: KubeClient, namespace: str, name: str, phase: str) -> Observed:
    """Poll the Operation and its Job every 50 ms until the Operation reaches ``phase`` and the
    Job is finished (Complete / Failed) or gone (the operator deletes a failed Operation's Job,
    possibly between the Job controller's FailureTarget and Failed); fail with both sequences
    on timeout."""
    seen = Observed()
    op_key = ObjectKey(namespace, name)
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        op = await _get(kube, OPERATIONS, op_key)
        job = await _get(kube, JOBS, ObjectKey(namespace, workload_name(op))) if op else {}
        seen.record(job, op, await job_pods(kube, namespace, job) if job else [])
        reached = (op.get("status") or {}).get("phase") == phase
        if reached and seen.last_job and (not job or _finished(job)):
            return seen
        await asyncio.sleep(0.05)
    raise AssertionError(
        f"Operation {op_key} not {phase} or its Job not finished after {TIMEOUT}s; "
        f"Job {seen.job.seen}; Operation {seen.operation.seen}; "
        f"Job status {seen.last_job.get('status')}; "
        f"Operation status {seen.last_operation.get('status')}"
    )


@pytest.fixture
async def target(
    kube_namespace: str, real_operator: OperatorProcess, kube: KubeClient
) -> ObjectKey:
    """The Operations' ApplicationInstance ``shop``, with the capability annotations
    (``real_operator`` deletes it and its Operations, and waits, before the operator stops)."""
    key = ObjectKey(kube_namespace, "shop")
    instance = managed_instance(key.name, kube_namespace, annotations=CAPABILITIES)
    await kube.create(APPLICATION_INSTANCES, instance, field_manager="test")
    return key


async def start(kube: KubeClient, target: ObjectKey, type_: str, params: JsonObj) -> None:
    """Create Operation :data:`OPERATION` of ``type_`` on ``target``."""
    body = operation(
        OPERATION, target.namespace, type_=type_, target=target.name, parameters=params
    )
    await kube.create(OPERATIONS, body, field_manager="test")


async def job_pods(kube: KubeClient, namespace: str, job: JsonObj) -> list[JsonObj]:
    listed = await kube.list(
        PODS, namespace, labelSelector=f"batch.kubernetes.io/job-name={job['metadata']['name']}"
    )
    items: list[JsonObj] = listed["items"]
    return items


SUCCEEDING = {
    "RunCommand": (
        "RunCommand",
        {
            "image": "registry.invalid/tools:1",
            "command": ["sh", "-c"],
            "args": ["echo $GREETING"],
            "env": [{"name": "GREETING", "value": "hello"}],
            "backoffLimit": 0,
        },
    ),
    "Migration": (
        "Migration",
        {"hookName": "pre-upgrade", "image": "registry.invalid/migrate:2", "backoffLimit": 0},
    ),
    "Migration-image-from-target": ("Migration", {"hookName": "post-upgrade"}),
}


@pytest.mark.parametrize("case", sorted(SUCCEEDING))
async def test_a_job_operation_succeeds_through_the_real_job_controller_on_a_kwok_pod(
    case: str,
    target: ObjectKey,
    kwok_nodes: KwokNodes,
    kube: KubeClient,
) -> None:
    type_, params = SUCCEEDING[case]
    started = time.monotonic()
    await start(kube, target, type_, params)
    seen = await follow(kube, target.namespace, OPERATION, "Succeeded")
    seen.report(f"{case} succeeding", time.monotonic() - started)

    job, op = seen.last_job, seen.last_operation
    assert condition(job, "Complete").get("status") == "True", job.get("status")
    assert condition(job, "SuccessCriteriaMet").get("status") == "True", job.get("status")
    assert job["status"]["succeeded"] == 1
    assert job["status"].get("failed", 0) == 0
    succeeded = condition(op, "Succeeded")
    assert (succeeded["status"], succeeded["reason"]) == ("True", "EngineCompleted")
    # The operator's message is the Job controller's reason and message.
    assert succeeded["message"] == (
        f"{condition(job, 'Complete')['reason']}: {condition(job, 'Complete')['message']}"
    )
    assert op["status"]["outputs"] == {"jobName": job["metadata"]["name"]}
    assert condition(op, "Running")["status"] == "False"
    [pod] = seen.pods.values()
    assert pod["status"]["phase"] == "Succeeded"
    assert pod["spec"]["nodeName"] in kwok_nodes.names
    [container] = pod["spec"]["containers"]
    expected_image = params.get("image", MIGRATION_IMAGE)
    assert container["image"] == expected_image
    assert container["name"] == ("runner" if type_ == "RunCommand" else "hook")
    assert "Complete=True/CompletionsReached" in seen.job.seen
    assert seen.operation.seen.index("phase=Running/") < seen.operation.seen.index(
        "phase=Succeeded/"
    )


FAILING = {
    "RunCommand": (
        "RunCommand",
        {"image": "registry.invalid/tools:1", "command": ["sh", "-c"], "args": ["exit 3"]},
        3,
    ),
    "Migration": (
        "Migration",
        {"hookName": "pre-upgrade", "command": ["/bin/sh", "-c", "exit 42"]},
        42,
    ),
}


@pytest.mark.parametrize("case", sorted(FAILING))
async def test_a_failing_job_operation_fails_with_the_job_controllers_reason(
    case: str,
    target: ObjectKey,
    kwok_nodes: KwokNodes,
    kube: KubeClient,
) -> None:
    type_, params, exit_code = FAILING[case]
    # One retry: the Job controller runs a second Pod (after its 10 s pod backoff) before it
    # gives up, so the test sees the engine's backoffLimit honoured, not the default of 6.
    params = {**params, "backoffLimit": 1}
    started = time.monotonic()
    await start(kube, target, type_, params)
    seen = await follow(kube, target.namespace, OPERATION, "Failed")
    seen.report(f"{case} failing with exit {exit_code}", time.monotonic() - started)

    job, op = seen.last_job, seen.last_operation
    assert job["spec"]["backoffLimit"] == 1
    verdict = condition(job, "FailureTarget")
    assert (verdict.get("status"), verdict.get("reason")) == ("True", BACKOFF_REASON), job
    assert verdict["message"] == BACKOFF_MESSAGE
    assert condition(job, "Complete") == {}
    failed = condition(op, "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "EngineFailed")
    assert failed["message"] == f"{BACKOFF_REASON}: {BACKOFF_MESSAGE}"
    assert op["status"]["outputs"] == {"jobName": job["metadata"]["name"]}
    assert f"FailureTarget=True/{BACKOFF_REASON}" in seen.job.seen
    # Two Pods, the first and its one retry, ran on kwok Nodes and failed with the exit code of
    # their script, as a kubelet reports it (our stage). (The Job's own ``failed: 2`` may not be
    # seen: the operator can delete the Job between FailureTarget and the controller's count.)
    assert len(seen.pods) == 2, sorted(seen.pods)
    for pod in seen.pods.values():
        assert pod["status"]["phase"] == "Failed"
        assert pod["spec"]["nodeName"] in kwok_nodes.names
        [status] = pod["status"]["containerStatuses"]
        terminated = status["state"]["terminated"]
        assert (terminated["exitCode"], terminated["reason"]) == (exit_code, "Error")
