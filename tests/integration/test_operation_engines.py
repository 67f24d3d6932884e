"""Operations on every engine against the real API server: job (RunCommand), helmHookJob
(Migration), workflow (Runbook), and the Velero naming fix. Nothing runs Pods here: the tests
write the Job / Workflow / Backup status the way the Job controller, Argo and Velero would.

The hand-written Job statuses are what the real Job controller wrote in tests/real/test_jobs.py
(``set_job_condition``).

The operator runs with a clock whose wall time a test can move forward (``ShiftedClock``), so
the 60 s "workload missing" grace is tested without waiting a minute, and with a short Operation
poll (``waits.OPERATION_POLL``), so a Running Operation is looked at again within a fraction of a
second. Where a test asserts that something did NOT change, it first waits for the operator to
have looked again (``Operator.reconciles``, tests/integration/waits.py) instead of sleeping."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.integration.waits import (
    Reconciles,
    condition,
    eventually,
    op_phase,
    poke,
    short_operation_poll,
)
from vworkspace.api.approvals import sign
from vworkspace.api.meta import ObjectKey
from vworkspace.api.templates import TEMPLATES, parameter_problem
from vworkspace.app.engines import served
from vworkspace.app.manager import Manager
from vworkspace.app.wiring import OperatorSettings, build_manager, served_kinds
from vworkspace.engines.job import JOBS
from vworkspace.engines.velero import BACKUPS, RESTORES
from vworkspace.engines.workflow import DESCRIPTOR as WORKFLOW
from vworkspace.engines.workflow import WORKFLOWS
from vworkspace.engines.workload import SERVICE_ACCOUNTS, workload_name
from vworkspace.kube.clock import RealClock
from vworkspace.kube.rest.client import KubeClient
from vworkspace.kube.rest.errors import NotFoundError
from vworkspace.kube.rest.resources import (
    APPLICATION_INSTANCES,
    NAMESPACES,
    OPERATIONS,
    ResourceType,
)
from vworkspace.mockcontrolplane import MockControlPlane
from vworkspace.testing import ControlPlane
from vworkspace.testing.crds import install_crds, load_crds, third_party_dir
from vworkspace.testing.objects import managed_instance, operation

from .agent_harness import CLUSTER, TOKEN, Agent, wait_result

pytestmark = pytest.mark.integration
SECRET = "approval-test-secret"
CRDS = ResourceType(
    "apiextensions.k8s.io", "v1", "customresourcedefinitions", "CRD", namespaced=False
)
CAPABILITIES = {
    "ops.vworkspace.io/backup": "velero",
    "ops.vworkspace.io/restore": "velero",
    "ops.vworkspace.io/upgrade": "helm",
    "ops.vworkspace.io/migration": "helmHookJob",
    "ops.vworkspace.io/runcommand": "job",
    "ops.vworkspace.io/runbook": "workflow",
    "ops.vworkspace.io/migration-image": "registry.example.com/shop-migrate:1",
}


class ShiftedClock(RealClock):
    """Real time, except that ``now()`` can be moved forward (monotonic time and sleeps are
    untouched, so queues and informers behave normally)."""

    def __init__(self) -> None:
        self.shift = 0.0

    def now(self) -> datetime.datetime:
        return super().now() + datetime.timedelta(seconds=self.shift)


class Operator:
    def __init__(self, manager: Manager, clock: ShiftedClock) -> None:
        self.manager = manager
        self.clock = clock
        self.reconciles = Reconciles.of(manager, "operation")

    async def forgot(self, resource: ResourceType, key: ObjectKey) -> None:
        """Wait until the operator's cache no longer holds the object (deleted, finalizers
        released, the watch event seen): what its reconciles read from then on."""
        informer = next(i for i in self.manager.informers if i.resource == resource)

        async def gone() -> bool:
            return informer.store.get(key) is None

        await eventually(gone, what=f"{resource.kind} {key} gone from the operator's cache")


async def _namespace(kube: KubeClient, name: str) -> None:
    await kube.create(
        NAMESPACES,
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        field_manager="test",
    )


@pytest.fixture
async def velero_ns(kube: KubeClient, kube_namespace: str) -> AsyncIterator[str]:
    name = f"{kube_namespace}-velero"
    await _namespace(kube, name)
    yield name
    with contextlib.suppress(NotFoundError):
        await kube.delete(NAMESPACES, ObjectKey(None, name))


@contextlib.asynccontextmanager
async def running_operator(kube: KubeClient, settings: OperatorSettings) -> AsyncIterator[Operator]:
    clock = ShiftedClock()
    served_now = await served_kinds(kube)
    settings = short_operation_poll(settings)
    manager = build_manager(
        settings, kube, registry=CollectorRegistry(), served=served_now, clock=clock
    )
    running = Operator(manager, clock)
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(stop))
    for informer in manager.informers:
        await asyncio.wait_for(informer.wait_synced(), 20)
    try:
        yield running
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 30) == 0


@pytest.fixture
async def operator(
    kube: KubeClient,
    third_party_crds: list[str],
    vworkspace_crds: list[str],
    velero_ns: str,
    kube_namespace: str,
) -> AsyncIterator[Operator]:
    settings = OperatorSettings(
        namespace=kube_namespace, velero_namespace=velero_ns, approval_secret=SECRET
    )
    async with running_operator(kube, settings) as op:
        yield op


async def target(kube: KubeClient, namespace: str, name: str = "shop") -> dict[str, Any]:
    return await kube.create(
        APPLICATION_INSTANCES,
        managed_instance(name, namespace, annotations=CAPABILITIES),
        field_manager="test",
    )


async def start(
    kube: KubeClient, namespace: str, name: str, type_: str, parameters: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Create an Operation (schema-valid parameters) and wait until it is Running."""
    template = next(t for t in TEMPLATES if t.type == type_)
    assert parameter_problem(template, parameters) is None  # what admission would accept
    created = await kube.create(
        OPERATIONS,
        operation(name, namespace, type_=type_, parameters=parameters),
        field_manager="test",
    )
    running = await eventually(
        lambda: op_phase(kube, namespace, name, "Running"), what=f"{name} Running"
    )
    return created, running


# What the Kubernetes 1.36 Job controller writes, as observed in tests/real/test_jobs.py: the
# target condition (SuccessCriteriaMet / FailureTarget) and then, once no Pod is left running or
# terminating, Complete / Failed, both with the same reason and message. The API server refuses
# Complete without SuccessCriteriaMet (and without completionTime), Failed without FailureTarget,
# and a finished Job with active or terminating Pods (pkg/apis/batch/validation).
BACKOFF = "BackoffLimitExceeded: Job has reached the specified backoff limit"
JOB_VERDICTS = {
    "Complete": (
        "SuccessCriteriaMet",
        "CompletionsReached",
        "Reached expected number of succeeded pods",
    ),
    "Failed": (
        "FailureTarget",
        "BackoffLimitExceeded",
        "Job has reached the specified backoff limit",
    ),
}


async def set_job_condition(
    kube: KubeClient, key: ObjectKey, type_: str, *, terminating: int = 0
) -> None:
    """Write the Job controller's verdict ``type_`` (Complete or Failed) as it writes it: with
    ``terminating`` Pods still going, only the target condition (FailureTarget /
    SuccessCriteriaMet), as the controller does until they are gone; else both conditions."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    first, reason, message = JOB_VERDICTS[type_]
    conditions = [
        {
            "type": t,
            "status": "True",
            "reason": reason,
            "message": message,
            "lastProbeTime": now,
            "lastTransitionTime": now,
        }
        for t in ((first,) if terminating else (first, type_))
    ]
    status: dict[str, Any] = {
        "conditions": conditions,
        "startTime": now,
        "ready": 0,
        "terminating": terminating,
        "uncountedTerminatedPods": {},
    }
    if type_ == "Complete":
        status["succeeded"] = 1
        if not terminating:
            status["completionTime"] = now
    else:
        # One first Pod and every retry failed (the API server defaults backoffLimit to 6).
        status["failed"] = (await kube.get(JOBS, key))["spec"]["backoffLimit"] + 1
    await kube.merge_patch(
        JOBS, key, {"status": status}, field_manager="job-controller", subresource="status"
    )


async def set_workflow_phase(
    kube: KubeClient,
    key: ObjectKey,
    phase: str,
    message: str,
    nodes: dict[str, Any] | None = None,
) -> None:
    # The minimal Argo CRDs have no status subresource: Argo writes status with the object.
    status: dict[str, Any] = {"phase": phase, "message": message}
    if nodes is not None:
        status["nodes"] = nodes
    await kube.merge_patch(WORKFLOWS, key, {"status": status}, field_manager="argo")


def failed_step_nodes(workflow: str, step: str, exit_code: int) -> tuple[str, dict[str, Any]]:
    """What Argo's workflow-controller v3.6.10 writes when a steps Workflow's step ends with a
    non-zero exit code (seen in tests/real/test_argo.py): the Workflow's message names only the
    failed child's node id; the step's Pod node carries ``Error (exit code N)``."""
    pod_id = f"{workflow}-1234567890"
    message = f"child '{pod_id}' failed"
    nodes = {
        workflow: {
            "id": workflow,
            "name": workflow,
            "displayName": workflow,
            "type": "Steps",
            "phase": "Failed",
            "message": message,
            "children": [f"{workflow}-1"],
        },
        f"{workflow}-1": {
            "id": f"{workflow}-1",
            "name": f"{workflow}[0]",
            "displayName": "[0]",
            "type": "StepGroup",
            "phase": "Failed",
            "message": message,
            "children": [pod_id],
        },
        pod_id: {
            "id": pod_id,
            "name": f"{workflow}[0].{step}",
            "displayName": step,
            "type": "Pod",
            "phase": "Failed",
            "message": f"Error (exit code {exit_code})",
            "outputs": {"exitCode": str(exit_code)},
        },
    }
    return message, nodes


def job_key(created: dict[str, Any], namespace: str) -> ObjectKey:
    return ObjectKey(namespace, workload_name(created))


# -- job (RunCommand) ---------------------------------------------------------------------------


async def test_a_run_command_becomes_a_job_and_succeeds_with_its_name(
    operator: Operator, kube: KubeClient, kube_namespace: str
) -> None:
    ai = await target(kube, kube_namespace)
    params = {
        "image": "busybox:1.36",
        "command": ["sh", "-c"],
        "args": ["echo $GREETING"],
        "env": [{"name": "GREETING", "value": "hi"}, {"name": "A", "value": "1"}],
        "backoffLimit": 2,
        "activeDeadlineSeconds": 300,
    }
    created, running = await start(kube, kube_namespace, "cmd", "RunCommand", params)
    key = job_key(created, kube_namespace)
    assert key.name == f"{kube_namespace}--cmd"
    assert running["status"]["engineRef"] == {
        "kind": "Job",
        "name": key.name,
        "namespace": kube_namespace,
    }
    assert running["status"]["startedAt"]
    job = await kube.get(JOBS, key)
    uid = created["metadata"]["uid"]
    labels = {
        "app.vworkspace.io/managed-by": "vworkspace-operator",
        "ops.vworkspace.io/operation": uid,
    }
    assert labels.items() <= job["metadata"]["labels"].items()
    assert labels.items() <= job["spec"]["template"]["metadata"]["labels"].items()
    assert job["metadata"]["ownerReferences"] == [
        {"apiVersion": "ops.vworkspace.io/v1alpha1", "kind": "Operation", "name": "cmd", "uid": uid}
    ]
    assert (job["spec"]["backoffLimit"], job["spec"]["activeDeadlineSeconds"]) == (2, 300)
    assert job["spec"]["ttlSecondsAfterFinished"] == 86400
    pod = job["spec"]["template"]["spec"]
    assert (pod["restartPolicy"], pod["serviceAccountName"]) == (
        "Never",
        "vworkspace-operation-runner",
    )
    (container,) = pod["containers"]
    assert {k: container[k] for k in ("name", "image", "command", "args", "env")} == {
        "name": "runner",
        "image": "busybox:1.36",
        "command": ["sh", "-c"],
        "args": ["echo $GREETING"],
        "env": [{"name": "GREETING", "value": "hi"}, {"name": "A", "value": "1"}],
    }
    # The runner ServiceAccount exists (created without any role binding) so the Pod can start.
    account = await kube.get(
        SERVICE_ACCOUNTS, ObjectKey(ai["metadata"]["namespace"], pod["serviceAccountName"])
    )
    assert account["metadata"]["labels"]["app.vworkspace.io/managed-by"] == "vworkspace-operator"

    # A poll of the unfinished Job keeps the Operation Running.
    await operator.reconciles.another(ObjectKey(kube_namespace, "cmd"))
    assert await op_phase(kube, kube_namespace, "cmd", "Running")
    await set_job_condition(kube, key, "Complete")
    done = await eventually(lambda: op_phase(kube, kube_namespace, "cmd", "Succeeded"))
    assert done["status"]["outputs"] == {"jobName": key.name}
    assert condition(done, "Succeeded")["reason"] == "EngineCompleted"
    assert condition(done, "Succeeded")["message"] == (
        "CompletionsReached: Reached expected number of succeeded pods"
    )
    assert condition(done, "Running")["status"] == "False"
    await kube.get(JOBS, key)  # a succeeded Job is left to its TTL


async def test_a_failed_job_fails_the_operation_with_its_message_then_is_deleted(
    operator: Operator, kube: KubeClient, kube_namespace: str
) -> None:
    await target(kube, kube_namespace)
    params = {"image": "busybox", "env": {"B": "2", "A": "1"}}  # Go's map spelling
    created, _ = await start(kube, kube_namespace, "bad", "RunCommand", params)
    key = job_key(created, kube_namespace)
    job = await kube.get(JOBS, key)
    assert job["spec"]["template"]["spec"]["containers"][0]["env"] == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "2"},
    ]
    await set_job_condition(kube, key, "Failed")
    failed = await eventually(lambda: op_phase(kube, kube_namespace, "bad", "Failed"))
    assert condition(failed, "Failed")["message"] == BACKOFF
    assert failed["status"]["outputs"] == {"jobName": key.name}

    async def gone() -> bool:
        try:
            got = await kube.get(JOBS, key)
        except NotFoundError:
            return True
        return bool(got["metadata"].get("deletionTimestamp"))

    await eventually(gone, what="failed Job deleted after the verdict")
    # A finished Operation is not polled: make the operator look at it with its Job gone.
    op_key = ObjectKey(kube_namespace, "bad")
    seen = operator.reconciles.started(op_key)
    await poke(kube, OPERATIONS, op_key)
    await operator.reconciles.another(op_key, since=seen)
    again = await kube.get(OPERATIONS, op_key)
    assert condition(again, "Failed")["message"] == BACKOFF


async def test_a_job_failure_target_fails_the_operation_while_its_pods_still_terminate(
    operator: Operator, kube: KubeClient, kube_namespace: str
) -> None:
    """FailureTarget is the Job controller's final word (Failed follows once the Pods are
    gone, and the API server never lets FailureTarget be withdrawn): the Operation fails then."""
    await target(kube, kube_namespace)
    created, _ = await start(kube, kube_namespace, "slow", "RunCommand", {"image": "busybox"})
    await set_job_condition(kube, job_key(created, kube_namespace), "Failed", terminating=1)
    failed = await eventually(lambda: op_phase(kube, kube_namespace, "slow", "Failed"))
    assert condition(failed, "Failed")["message"] == BACKOFF


async def test_deleting_a_running_operation_deletes_its_job(
    operator: Operator, kube: KubeClient, kube_namespace: str
) -> None:
    await target(kube, kube_namespace)
    created, _ = await start(kube, kube_namespace, "doomed", "RunCommand", {"image": "busybox"})
    key = job_key(created, kube_namespace)
    await kube.get(JOBS, key)
    await kube.delete(OPERATIONS, ObjectKey(kube_namespace, "doomed"))

    async def job_gone() -> bool:
        listed = await kube.list(
            JOBS,
            kube_namespace,
            labelSelector=f"ops.vworkspace.io/operation={created['metadata']['uid']}",
        )
        return all(j["metadata"].get("deletionTimestamp") for j in listed["items"])

    await eventually(job_gone, what="Job deleted")


async def test_a_job_of_another_operation_at_the_name_fails_the_operation(
    operator: Operator, kube: KubeClient, kube_namespace: str
) -> None:
    await target(kube, kube_namespace)
    name = f"{kube_namespace}--taken"
    foreign_job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": kube_namespace,
            "labels": {"ops.vworkspace.io/operation": "someone-else"},
        },
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "x", "image": "busybox"}],
                }
            }
        },
    }
    await kube.create(JOBS, foreign_job, field_manager="test")
    await kube.create(
        OPERATIONS,
        operation("taken", kube_namespace, type_="RunCommand", parameters={"image": "busybox"}),
        field_manager="test",
    )
    failed = await eventually(lambda: op_phase(kube, kube_namespace, "taken", "Failed"))
    assert condition(failed, "Failed")["message"] == (
        f"Job {kube_namespace}/{name} belongs to a different operation"
    )
    # The reconcile that wrote the verdict has finished (a cancel would have followed it).
    await operator.reconciles.settled(ObjectKey(kube_namespace, "taken"))
    job = await kube.get(JOBS, ObjectKey(kube_namespace, name))  # not ours: left alone
    assert not job["metadata"].get("deletionTimestamp")


async def test_a_running_operation_whose_target_is_deleted_follows_its_job_by_label(
    operator: Operator, kube: KubeClient, kube_namespace: str
) -> None:
    await target(kube, kube_namespace)
    created, _ = await start(kube, kube_namespace, "orphan", "RunCommand", {"image": "busybox"})
    uid = created["metadata"]["uid"]
    key = job_key(created, kube_namespace)
    await kube.delete(APPLICATION_INSTANCES, ObjectKey(kube_namespace, "shop"))

    async def target_gone() -> bool:
        try:
            await kube.get(APPLICATION_INSTANCES, ObjectKey(kube_namespace, "shop"))
        except NotFoundError:
            return True
        return False

    await eventually(target_gone, what="target deleted")
    await operator.forgot(APPLICATION_INSTANCES, ObjectKey(kube_namespace, "shop"))
    # Forget where the Job is: the engine must find it by the UID label alone.
    op = await kube.get(OPERATIONS, ObjectKey(kube_namespace, "orphan"))
    await kube.merge_patch(
        OPERATIONS,
        ObjectKey(kube_namespace, "orphan"),
        {"status": {"engineRef": None}},
        field_manager="test",
        subresource="status",
    )
    # A poll back-fills the reference (only the operator writes it back), and the one after it
    # still finds the Operation Running.
    op_key = ObjectKey(kube_namespace, "orphan")

    async def backfilled() -> bool:
        got = await kube.get(OPERATIONS, op_key)
        return (got.get("status") or {}).get("engineRef") == op["status"]["engineRef"]

    await eventually(backfilled, what="engineRef back-filled")
    await operator.reconciles.another(op_key)
    still = await op_phase(kube, kube_namespace, "orphan", "Running")
    assert still, "a Running Operation must not fall back to Pending when its target goes"
    assert condition(still, "Blocked").get("status") != "True"
    assert still["status"]["engineRef"] == op["status"]["engineRef"]  # back-filled
    jobs = await kube.list(JOBS, None, labelSelector=f"ops.vworkspace.io/operation={uid}")
    assert [j["metadata"]["name"] for j in jobs["items"]] == [key.name]  # no second workload
    await set_job_condition(kube, key, "Complete")
    done = await eventually(lambda: op_phase(kube, kube_namespace, "orphan", "Succeeded"))
    assert done["status"]["outputs"] == {"jobName": key.name}


async def test_two_jobs_with_the_operation_label_and_no_target_fail_it_as_ambiguous(
    operator: Operator, kube: KubeClient, kube_namespace: str
) -> None:
    await target(kube, kube_namespace)
    created, _ = await start(kube, kube_namespace, "twins", "RunCommand", {"image": "busybox"})
    job = await kube.get(JOBS, job_key(created, kube_namespace))
    copy = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "twin",
            "namespace": kube_namespace,
            "labels": {"ops.vworkspace.io/operation": created["metadata"]["uid"]},
        },
        "spec": {"template": {"spec": job["spec"]["template"]["spec"]}},
    }
    await kube.create(JOBS, copy, field_manager="test")
    await kube.delete(APPLICATION_INSTANCES, ObjectKey(kube_namespace, "shop"))
    # While the target is there (also while it is being deleted), the Job's name is derived
    # from it and found: only without the target is the label the Job's one trace.
    await operator.forgot(APPLICATION_INSTANCES, ObjectKey(kube_namespace, "shop"))
    await kube.merge_patch(
        OPERATIONS,
        ObjectKey(kube_namespace, "twins"),
        {"status": {"engineRef": None}},
        field_manager="test",
        subresource="status",
    )
    failed = await eventually(
        lambda: op_phase(kube, kube_namespace, "twins", "Failed"), what="Failed as ambiguous"
    )
    assert condition(failed, "Failed")["message"].startswith("ambiguous: several Jobs")


async def test_a_missing_job_is_tolerated_for_the_grace_period_then_fails(
    operator: Operator, kube: KubeClient, kube_namespace: str
) -> None:
    await target(kube, kube_namespace)
    created, _ = await start(kube, kube_namespace, "lost", "RunCommand", {"image": "busybox"})
    key = job_key(created, kube_namespace)
    await kube.delete(JOBS, key)
    await eventually(lambda: _absent(kube, JOBS, key), what="Job gone")
    await operator.reconciles.another(ObjectKey(kube_namespace, "lost"))  # saw it missing
    assert await op_phase(kube, kube_namespace, "lost", "Running")  # within the grace
    operator.clock.shift = 61.0  # past the 60 s grace after startedAt
    failed = await eventually(lambda: op_phase(kube, kube_namespace, "lost", "Failed"))
    assert condition(failed, "Failed")["message"] == (
        f"workload missing: Job {key.namespace}/{key.name} not found"
    )


async def _absent(kube: KubeClient, resource: ResourceType, key: ObjectKey) -> bool:
    try:
        await kube.get(resource, key)
    except NotFoundError:
        return True
    return False


# -- helmHookJob (Migration) --------------------------------------------------------------------


async def test_a_migration_becomes_a_hook_job(
    operator: Operator, kube: KubeClient, kube_namespace: str
) -> None:
    await target(kube, kube_namespace)
    params = {"hookName": "pre-upgrade", "image": "migrate:2", "backoffLimit": 0}
    created, running = await start(kube, kube_namespace, "mig", "Migration", params)
    key = job_key(created, kube_namespace)
    assert running["status"]["engineRef"]["kind"] == "Job"
    job = await kube.get(JOBS, key)
    assert job["metadata"]["labels"]["ops.vworkspace.io/hook-name"] == "pre-upgrade"
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-upgrade"
    template = job["spec"]["template"]
    assert template["metadata"]["labels"]["ops.vworkspace.io/hook-name"] == "pre-upgrade"
    (container,) = template["spec"]["containers"]
    assert (container["name"], container["image"], "env" in container) == (
        "hook",
        "migrate:2",
        False,
    )
    assert job["spec"]["backoffLimit"] == 0
    await set_job_condition(kube, key, "Complete")
    done = await eventually(lambda: op_phase(kube, kube_namespace, "mig", "Succeeded"))
    assert done["status"]["outputs"] == {"jobName": key.name}


# -- workflow (Runbook) -------------------------------------------------------------------------


async def test_a_runbook_becomes_a_workflow_of_its_template(
    operator: Operator, kube: KubeClient, kube_namespace: str
) -> None:
    await target(kube, kube_namespace)
    params = {
        "template": "restart-app",
        "targetChartVersion": "2.0.0",
        "failureAction": "rollback",
        "timeoutSeconds": 600,
    }
    created, running = await start(kube, kube_namespace, "rb", "Runbook", params)
    key = ObjectKey(kube_namespace, workload_name(created))
    assert running["status"]["engineRef"] == {
        "kind": "Workflow",
        "name": key.name,
        "namespace": kube_namespace,
    }
    wf = await kube.get(WORKFLOWS, key)
    assert wf["metadata"]["labels"]["ops.vworkspace.io/operation"] == created["metadata"]["uid"]
    assert wf["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
    assert wf["spec"] == {
        "workflowTemplateRef": {"name": "restart-app"},
        "serviceAccountName": "vworkspace-operation-runner",
        "arguments": {
            "parameters": [
                {"name": "failureAction", "value": "rollback"},
                {"name": "targetChartVersion", "value": "2.0.0"},
            ]
        },
        "activeDeadlineSeconds": 600,
    }
    await set_workflow_phase(kube, key, "Running", "")
    await operator.reconciles.another(ObjectKey(kube_namespace, "rb"))  # saw it Running
    assert await op_phase(kube, kube_namespace, "rb", "Running")
    message, nodes = failed_step_nodes(key.name, "restart", 2)
    await set_workflow_phase(kube, key, "Failed", message, nodes)
    failed = await eventually(lambda: op_phase(kube, kube_namespace, "rb", "Failed"))
    assert condition(failed, "Failed")["message"] == (
        f"Failed: {message}; restart: Error (exit code 2)"
    )
    assert failed["status"]["outputs"] == {"workflowName": key.name}


async def test_a_runbook_in_go_spelling_succeeds(
    operator: Operator, kube: KubeClient, kube_namespace: str
) -> None:
    await target(kube, kube_namespace)
    params = {"workflowTemplate": "check", "workflowTemplateParameters": {"b": "2", "a": "1"}}
    created, _ = await start(kube, kube_namespace, "rb-go", "Runbook", params)
    key = ObjectKey(kube_namespace, workload_name(created))
    wf = await kube.get(WORKFLOWS, key)
    assert wf["spec"]["arguments"]["parameters"] == [
        {"name": "a", "value": "1"},
        {"name": "b", "value": "2"},
    ]
    await set_workflow_phase(kube, key, "Succeeded", "")
    done = await eventually(lambda: op_phase(kube, kube_namespace, "rb-go", "Succeeded"))
    assert done["status"]["outputs"] == {"workflowName": key.name}


# -- every template -----------------------------------------------------------------------------


def minimal_parameters(name: str) -> dict[str, Any]:
    """The smallest schema-valid parameters of each template, as a control plane sends them."""
    claim = sign(
        {"v": 1, "rid": 1, "op": name, "by": "t", "at": "now", "exp": int(time.time()) + 600},
        SECRET,
    )
    return {
        "Backup": {},
        "Restore": {"backupName": "b1", "_claim": claim},
        "Upgrade": {"targetVersion": "2.0.0"},
        "Migration": {"hookName": "pre-upgrade"},  # image from the target's annotation
        "RunCommand": {"image": "busybox"},
        "Runbook": {"template": "restart-app"},
    }


WORKLOADS = {
    "Backup": BACKUPS,
    "Restore": RESTORES,
    "Migration": JOBS,
    "RunCommand": JOBS,
    "Runbook": WORKFLOWS,
}


async def test_every_template_reaches_running_with_its_workload(
    operator: Operator, kube: KubeClient, kube_namespace: str, velero_ns: str
) -> None:
    for template in TEMPLATES:
        await target(kube, kube_namespace, name=template.type.lower())
    for template in TEMPLATES:
        name = f"{template.type.lower()}-op"
        params = dict(minimal_parameters(name)[template.type])
        claim = params.pop("_claim", None)
        assert parameter_problem(template, params) is None
        body = operation(
            name,
            kube_namespace,
            type_=template.type,
            target=template.type.lower(),
            parameters=params,
        )
        if claim:
            body["spec"]["approvals"] = {"claim": claim}
        created = await kube.create(OPERATIONS, body, field_manager="test")
        running = await eventually(
            lambda n=name: op_phase(kube, kube_namespace, n, "Running"), what=f"{name} Running"
        )
        resource = WORKLOADS.get(template.type)
        if resource is None:  # Upgrade: the workload is the instance's new version
            ai = await kube.get(
                APPLICATION_INSTANCES, ObjectKey(kube_namespace, template.type.lower())
            )
            assert ai["spec"]["chart"]["version"] == "2.0.0"
            continue
        namespace = velero_ns if resource in (BACKUPS, RESTORES) else kube_namespace
        assert running["status"]["engineRef"]["name"] == workload_name(created)
        await kube.get(resource, ObjectKey(namespace, workload_name(created)))
    job = await kube.get(JOBS, ObjectKey(kube_namespace, f"{kube_namespace}--migration-op"))
    image = job["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == CAPABILITIES["ops.vworkspace.io/migration-image"]


async def test_every_template_runs_from_a_request_operation_intent(
    operator: Operator, kube: KubeClient, kube_namespace: str, velero_ns: str
) -> None:
    """What the control plane does: a ``request-operation`` intent job through the agent."""
    async with MockControlPlane(visibility_timeout=1.0) as mock:
        mock.set_bootstrap_token(CLUSTER, TOKEN)
        agent = await Agent(kube, mock, kube_namespace).start()
        try:
            for template in TEMPLATES:
                await target(kube, kube_namespace, name=template.type.lower())
            for template in TEMPLATES:
                name = f"{template.type.lower()}-intent"
                params = dict(minimal_parameters(name)[template.type])
                claim = params.pop("_claim", None)
                body = operation(
                    name,
                    kube_namespace,
                    type_=template.type,
                    target=template.type.lower(),
                    parameters=params,
                )
                del body["apiVersion"], body["kind"]  # as intents embed them
                if claim:
                    body["spec"]["approvals"] = {"claim": claim}
                job_id = f"op-{template.type.lower()}"
                await mock.enqueue(
                    CLUSTER,
                    {
                        "id": job_id,
                        "kind": "intent",
                        "payload": {"intent": "request-operation", "operation": body},
                    },
                )
                assert (await wait_result(mock, job_id))["outcome"] == "succeeded"
                running = await eventually(
                    lambda n=name: op_phase(kube, kube_namespace, n, "Running"),
                    what=f"{name} Running",
                )
                resource = WORKLOADS.get(template.type)
                if resource is not None:
                    ns = velero_ns if resource in (BACKUPS, RESTORES) else kube_namespace
                    await kube.get(resource, ObjectKey(ns, workload_name(running)))
        finally:
            await agent.stop()


# -- Velero naming ------------------------------------------------------------------------------


async def test_same_named_backups_in_two_namespaces_get_two_velero_backups(
    operator: Operator, kube: KubeClient, kube_namespace: str, velero_ns: str
) -> None:
    other = f"{kube_namespace}-b"
    await _namespace(kube, other)
    try:
        ops = []
        for namespace in (kube_namespace, other):
            await target(kube, namespace)
            created, _ = await start(kube, namespace, "nightly", "Backup", {})
            ops.append(created)
        names = [workload_name(o) for o in ops]
        assert len(set(names)) == 2
        backups = [await kube.get(BACKUPS, ObjectKey(velero_ns, n)) for n in names]
        for backup, op in zip(backups, ops, strict=True):
            assert (
                backup["metadata"]["labels"]["ops.vworkspace.io/operation"] == op["metadata"]["uid"]
            )
        await kube.delete(OPERATIONS, ObjectKey(kube_namespace, "nightly"))
        await eventually(
            lambda: _absent(kube, OPERATIONS, ObjectKey(kube_namespace, "nightly")),
            what="first Operation gone",
        )
        assert await _absent(kube, BACKUPS, ObjectKey(velero_ns, names[0]))
        survivor = await kube.get(BACKUPS, ObjectKey(velero_ns, names[1]))
        assert survivor["metadata"]["uid"] == backups[1]["metadata"]["uid"]
        await operator.reconciles.another(ObjectKey(other, "nightly"))  # a poll after the delete
        assert await op_phase(kube, other, "nightly", "Running")
        await kube.merge_patch(
            BACKUPS,
            ObjectKey(velero_ns, names[1]),
            # As Velero v1.18.1 writes it (tests/real/test_velero_ops.py): no failureReason,
            # the counts of its log's errors and warnings.
            {"status": {"phase": "PartiallyFailed", "errors": 2, "warnings": 1}},
            field_manager="velero",
        )
        failed = await eventually(lambda: op_phase(kube, other, "nightly", "Failed"))
        # The verdict is Velero's and it stays.
        verdict = (
            "Backup PartiallyFailed: 2 errors, 1 warning; "
            f"see velero backup logs {names[1]} -n {velero_ns}"
        )
        assert condition(failed, "Failed")["message"] == verdict
        assert failed["status"]["outputs"] == {"backupName": names[1]}
        # A finished Operation is not polled: make the operator look at it again.
        seen = operator.reconciles.started(ObjectKey(other, "nightly"))
        await poke(kube, OPERATIONS, ObjectKey(other, "nightly"))
        await operator.reconciles.another(ObjectKey(other, "nightly"), since=seen)
        again = await kube.get(OPERATIONS, ObjectKey(other, "nightly"))
        assert condition(again, "Failed")["message"] == verdict
        # A failed Velero object is kept (it is the record the message points to), until its
        # Operation is deleted.
        await kube.get(BACKUPS, ObjectKey(velero_ns, names[1]))
        await kube.delete(OPERATIONS, ObjectKey(other, "nightly"))
        await eventually(
            lambda: _absent(kube, BACKUPS, ObjectKey(velero_ns, names[1])), what="deleted"
        )
    finally:
        with contextlib.suppress(NotFoundError):
            await kube.delete(NAMESPACES, ObjectKey(None, other))


async def test_a_backup_and_a_restore_created_together_run_one_after_the_other(
    operator: Operator, kube: KubeClient, kube_namespace: str, velero_ns: str
) -> None:
    # Seen by hand before the fix: two workers admitted both at once (neither saw the other's
    # status yet), so a Restore ran while the Backup it waits for was running.
    await target(kube, kube_namespace)
    restore_params = dict(minimal_parameters("b-restore")["Restore"])
    claim = restore_params.pop("_claim")
    backup = operation("a-backup", kube_namespace, type_="Backup", parameters={})
    restore = operation(
        "b-restore",
        kube_namespace,
        type_="Restore",
        parameters=restore_params,
        approvals={"claim": claim},
    )
    created_backup, _ = await asyncio.gather(
        kube.create(OPERATIONS, backup, field_manager="test"),
        kube.create(OPERATIONS, restore, field_manager="test"),
    )
    await eventually(lambda: op_phase(kube, kube_namespace, "a-backup", "Running"))
    held = await eventually(lambda: op_phase(kube, kube_namespace, "b-restore", "Pending"))
    assert condition(held, "Blocked")["reason"] == "ConflictingOperation"
    assert await _absent(kube, RESTORES, ObjectKey(velero_ns, f"{kube_namespace}--b-restore"))
    await kube.merge_patch(
        BACKUPS,
        ObjectKey(velero_ns, workload_name(created_backup)),
        {"status": {"phase": "Completed"}},
        field_manager="velero",
    )
    await eventually(lambda: op_phase(kube, kube_namespace, "a-backup", "Succeeded"))
    # Started by the Backup's finish, well before the 30 s re-check of a Blocked Operation.
    await eventually(lambda: op_phase(kube, kube_namespace, "b-restore", "Running"), timeout=15)
    await kube.get(RESTORES, ObjectKey(velero_ns, f"{kube_namespace}--b-restore"))


async def test_a_restore_starts_without_its_target_but_may_not_map_namespaces_then(
    operator: Operator, kube: KubeClient, kube_namespace: str, velero_ns: str
) -> None:
    # Bringing back a deleted instance is what a Restore is for (docs/api.md, deviation 33):
    # no ApplicationInstance "gone" exists, yet the approved Restore starts, confined to its
    # namespace; tests/real/test_velero_ops.py does it through the real Velero.
    def restore(name: str, **extra: Any) -> dict[str, Any]:
        params = dict(minimal_parameters(name)["Restore"])
        claim = params.pop("_claim")
        return operation(
            name,
            kube_namespace,
            type_="Restore",
            target="gone",
            parameters={**params, **extra},
            approvals={"claim": claim},
        )

    await kube.create(OPERATIONS, restore("back"), field_manager="test")
    await kube.create(
        OPERATIONS, restore("mapped", namespaceMapping={"a": "b"}), field_manager="test"
    )
    await eventually(lambda: op_phase(kube, kube_namespace, "back", "Running"))
    created = await kube.get(RESTORES, ObjectKey(velero_ns, f"{kube_namespace}--back"))
    assert created["spec"] == {
        "backupName": "b1",
        "includedNamespaces": [kube_namespace],
        "excludedResources": ["operations.ops.vworkspace.io"],
    }
    held = await eventually(lambda: op_phase(kube, kube_namespace, "mapped", "Pending"))
    assert condition(held, "Blocked")["reason"] == "ValidationFailed"
    assert condition(held, "Blocked")["message"] == (
        "spec.parameters.namespaceMapping: a Restore whose target ApplicationInstance 'gone' "
        f"does not exist restores into namespace {kube_namespace!r} only; remove the mapping"
    )
    assert await _absent(kube, RESTORES, ObjectKey(velero_ns, f"{kube_namespace}--mapped"))
    # Any other type still waits for its target.
    await kube.create(
        OPERATIONS,
        operation("nightly", kube_namespace, type_="Backup", target="gone", parameters={}),
        field_manager="test",
    )
    waiting = await eventually(lambda: op_phase(kube, kube_namespace, "nightly", "Pending"))
    assert condition(waiting, "Blocked")["reason"] == "TargetNotReady"


# -- engines found at run time ------------------------------------------------------------------


def _workflow_crds() -> list[dict[str, Any]]:
    return [
        crd
        for crd in load_crds([third_party_dir(os.environ)])
        if crd["metadata"]["name"] == "workflows.argoproj.io"
    ]


async def test_a_runbook_unblocks_when_the_argo_crds_are_installed_later(
    kube: KubeClient,
    control_plane: ControlPlane,
    third_party_crds: list[str],
    vworkspace_crds: list[str],
    velero_ns: str,
    kube_namespace: str,
) -> None:
    crds = _workflow_crds()
    assert crds, "the Argo Workflow CRD is among the third-party CRDs"
    await kube.delete(CRDS, ObjectKey(None, "workflows.argoproj.io"))
    try:
        await eventually(
            lambda: _not(served(kube, WORKFLOW.requires)), timeout=60, what="Workflow not served"
        )
        settings = OperatorSettings(
            namespace=kube_namespace,
            velero_namespace=velero_ns,
            engine_discovery_interval=0.5,
            engine_discovery_max_interval=1.0,
        )
        async with running_operator(kube, settings) as running:
            assert running.manager.informers  # started without the Workflow kind
            await target(kube, kube_namespace)
            await kube.create(
                OPERATIONS,
                operation("late", kube_namespace, type_="Runbook", parameters={"template": "t"}),
                field_manager="test",
            )
            blocked = await eventually(lambda: op_phase(kube, kube_namespace, "late", "Pending"))
            assert condition(blocked, "Blocked")["reason"] == "DependencyMissing"
            await asyncio.to_thread(install_crds, control_plane.rest(), crds)
            # Well before the 30 s Blocked retry: the finder requeues it when the kind appears.
            await eventually(lambda: op_phase(kube, kube_namespace, "late", "Running"), timeout=15)
            await kube.get(WORKFLOWS, ObjectKey(kube_namespace, f"{kube_namespace}--late"))
    finally:
        await asyncio.to_thread(install_crds, control_plane.rest(), crds)


async def _not(check: Any) -> bool:
    return not await check
