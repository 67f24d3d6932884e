"""Runbook Operations through Argo Workflows' real workflow-controller (issue 26, deliverable 5).

A Runbook (``workflow`` engine) creates a Workflow of a WorkflowTemplate the test puts in the
target's namespace; the real workflow-controller (``argo`` fixture, v3.6.10) creates its Pods,
the real scheduler binds them to kwok Nodes, our kwok stage finishes them the way a kubelet
reports it (scripts/testenv/kwok-stages/pod-argo-exit.yaml: a step whose script is
``sh -c "exit N"`` exits N, any other 0), and the controller turns Pods into node phases, retries
and the Workflow's phase and message. The operator (``real_operator``: a subprocess under the
shipped ServiceAccount and RBAC) reports the Operation. Nothing here writes a status or a
WorkflowTaskResult (vworkspace/testing/argo.py says why the controller needs none).

Each test prints what it observed as ``argo-phases:`` lines: the Workflow's phase and its nodes'
phases (``name(Type)=Phase`` plus the message, in the order they appeared) and the Operation's
phase and conditions. Those are what the engine's mapping and the hand-written Workflow statuses
of the other tiers are checked against.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import attrs
import pytest

from tests.integration.operator_process import OperatorProcess
from tests.real.test_flux import ConditionLog, condition
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.engines.workflow import WORKFLOWS
from vworkspace.engines.workload import workload_name
from vworkspace.kube.rest.client import KubeClient
from vworkspace.kube.rest.errors import NotFoundError
from vworkspace.kube.rest.resources import APPLICATION_INSTANCES, OPERATIONS, ResourceType
from vworkspace.testing import ControlPlane
from vworkspace.testing.argo import ArgoController
from vworkspace.testing.kwok import KwokNodes
from vworkspace.testing.objects import managed_instance, operation

WORKFLOW_TEMPLATES = ResourceType(
    "argoproj.io", "v1alpha1", "workflowtemplates", "WorkflowTemplate"
)
PODS = ResourceType("", "v1", "pods", "Pod")
OPERATION = "rb"
TEMPLATE = "restart-app"
IMAGE = "registry.invalid/tools:1"
CAPABILITIES = {"ops.vworkspace.io/runbook": "workflow"}
# The operator looks at a running Operation every 5 s (controllers/operation.py POLL); each Pod
# runs 1 s (the stage's delay); Argo requeues a Workflow within a few seconds.
TIMEOUT = 90.0


@pytest.fixture
async def kube(control_plane: ControlPlane) -> AsyncIterator[KubeClient]:
    client = await KubeClient.from_kubeconfig(str(control_plane.kubeconfig_path))
    yield client
    await client.close()


class PhaseLog:
    """The distinct phases of a Workflow and of each of its nodes, in the order seen (polled
    every 50 ms, as :class:`~tests.real.test_flux.ConditionLog`)."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._last: dict[str, str] = {}

    def record(self, wf: JsonObj) -> None:
        status = wf.get("status") or {}
        if status.get("phase"):
            self._note("", f"Workflow={status['phase']}" + _said(status.get("message")))
        nodes = status.get("nodes") or {}
        for node_id, node in sorted(nodes.items(), key=lambda kv: kv[1].get("startedAt") or ""):
            name = f"{node.get('displayName', node_id)}({node.get('type', '?')})"
            self._note(node_id, f"{name}={node.get('phase', '')}" + _said(node.get("message")))

    def _note(self, key: str, state: str) -> None:
        if self._last.get(key) != state:
            self._last[key] = state
            self.seen.append(state)


def _said(message: str | None) -> str:
    return f' "{message}"' if message else ""


@attrs.define
class Observed:
    """What one poll loop saw of an Operation, its Workflow and the Workflow's Pods."""

    workflow: PhaseLog = attrs.field(factory=PhaseLog)
    operation: ConditionLog = attrs.field(factory=lambda: ConditionLog(phase=True))
    last_workflow: JsonObj = attrs.field(factory=dict)
    last_operation: JsonObj = attrs.field(factory=dict)
    pods: dict[str, JsonObj] = attrs.field(factory=dict)

    def report(self, what: str, seconds: float) -> None:
        print(
            f"\nargo-phases: {what} ({seconds:.1f}s): Workflow: {' -> '.join(self.workflow.seen)}"
        )
        status = self.last_operation.get("status") or {}
        verdict = next(
            (c for c in status.get("conditions") or [] if c["type"] in ("Succeeded", "Failed")),
            {},
        )
        print(
            f"argo-phases: {what}: Operation: {' -> '.join(self.operation.seen)}"
            f' (message "{verdict.get("message", "")}")'
        )


async def _get(kube: KubeClient, resource: ResourceType, key: ObjectKey) -> JsonObj:
    try:
        return await kube.get(resource, key)
    except NotFoundError:
        return {}


async def follow(kube: KubeClient, namespace: str, phase: str, *, argo: ArgoController) -> Observed:
    """Poll the Operation, its Workflow and the Workflow's Pods every 50 ms until the Operation
    reaches ``phase`` and the Workflow has finished (or is gone); fail with both sequences and
    the controller's log tail on timeout."""
    seen = Observed()
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        argo.check_alive()
        op = await _get(kube, OPERATIONS, ObjectKey(namespace, OPERATION))
        wf = await _get(kube, WORKFLOWS, ObjectKey(namespace, workload_name(op))) if op else {}
        if wf:
            seen.last_workflow = wf
            seen.workflow.record(wf)
            listed = await kube.list(
                PODS,
                namespace,
                labelSelector=f"workflows.argoproj.io/workflow={wf['metadata']['name']}",
            )
            seen.pods.update((pod["metadata"]["name"], pod) for pod in listed["items"])
        if op:
            seen.last_operation = op
            seen.operation.record(op)
        finished = (seen.last_workflow.get("status") or {}).get("finishedAt")
        if (
            (op.get("status") or {}).get("phase") == phase
            and seen.last_workflow
            and (finished or not wf)
        ):
            return seen
        await asyncio.sleep(0.05)
    raise AssertionError(
        f"Operation {namespace}/{OPERATION} not {phase} or its Workflow not finished after "
        f"{TIMEOUT}s; Workflow {seen.workflow.seen}; Operation {seen.operation.seen}; "
        f"Workflow status {seen.last_workflow.get('status')}; "
        f"Operation status {seen.last_operation.get('status')}\n{argo.log_tail()}"
    )


def container_step(name: str, script: str, *, retries: int | None = None) -> JsonObj:
    """A container template running ``sh -c <script>``."""
    template: JsonObj = {
        "name": name,
        "inputs": {"parameters": [{"name": "version"}]},
        "container": {"image": IMAGE, "command": ["sh", "-c"], "args": [script]},
    }
    if retries is not None:
        template["retryStrategy"] = {"limit": retries}
    return template


def workflow_template(namespace: str, restart: JsonObj) -> JsonObj:
    """WorkflowTemplate :data:`TEMPLATE`: steps ``check`` (``echo`` of the Operation's
    ``targetChartVersion``, which the Runbook passes as a Workflow argument) then ``restart``."""
    check = container_step("check", "echo checking {{inputs.parameters.version}}")
    version = [{"name": "version", "value": "{{workflow.parameters.targetChartVersion}}"}]
    steps = [
        [{"name": "check", "template": "check", "arguments": {"parameters": version}}],
        [{"name": "restart", "template": restart["name"], "arguments": {"parameters": version}}],
    ]
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "WorkflowTemplate",
        "metadata": {"name": TEMPLATE, "namespace": namespace},
        "spec": {
            "entrypoint": "main",
            "arguments": {"parameters": [{"name": "targetChartVersion"}]},
            "templates": [{"name": "main", "steps": steps}, check, restart],
        },
    }


@pytest.fixture
async def target(
    kube_namespace: str, real_operator: OperatorProcess, kube: KubeClient
) -> ObjectKey:
    """The Runbook's ApplicationInstance ``shop`` (``real_operator`` deletes it and its
    Operations, and waits, before the operator stops)."""
    key = ObjectKey(kube_namespace, "shop")
    instance = managed_instance(key.name, kube_namespace, annotations=CAPABILITIES)
    await kube.create(APPLICATION_INSTANCES, instance, field_manager="test")
    return key


async def start_runbook(kube: KubeClient, namespace: str, template: JsonObj | None) -> None:
    """Create the WorkflowTemplate (unless None) and Runbook :data:`OPERATION` on ``shop``."""
    if template is not None:
        await kube.create(WORKFLOW_TEMPLATES, template, field_manager="test")
    params = {"template": TEMPLATE, "targetChartVersion": "2.0.0"}
    body = operation(OPERATION, namespace, type_="Runbook", target="shop", parameters=params)
    await kube.create(OPERATIONS, body, field_manager="test")


def nodes_by_name(wf: JsonObj) -> dict[str, JsonObj]:
    return {n["displayName"]: n for n in ((wf.get("status") or {}).get("nodes") or {}).values()}


def pod_nodes(wf: JsonObj) -> list[JsonObj]:
    nodes = ((wf.get("status") or {}).get("nodes") or {}).values()
    return sorted((n for n in nodes if n["type"] == "Pod"), key=lambda n: n["startedAt"])


def main_argv(pod: JsonObj) -> list[str]:
    [main] = [c for c in pod["spec"]["containers"] if c["name"] == "main"]
    argv: list[str] = [*main.get("command", []), *main.get("args", [])]
    return argv[argv.index("--") + 1 :]


async def test_a_runbook_succeeds_through_the_real_workflow_controller(
    target: ObjectKey,
    kube_namespace: str,
    argo: ArgoController,
    kwok_nodes: KwokNodes,
    kube: KubeClient,
) -> None:
    started = time.monotonic()
    restart = container_step("restart", "echo restarting {{inputs.parameters.version}}")
    await start_runbook(kube, kube_namespace, workflow_template(kube_namespace, restart))
    seen = await follow(kube, kube_namespace, "Succeeded", argo=argo)
    seen.report("Runbook succeeding", time.monotonic() - started)

    wf, op = seen.last_workflow, seen.last_operation
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    nodes = nodes_by_name(wf)
    assert [n["displayName"] for n in pod_nodes(wf)] == ["check", "restart"]
    for name in ("check", "restart"):
        assert nodes[name]["phase"] == "Succeeded"
        # The controller read the exit code from the Pod's main container (no executor ran).
        assert nodes[name]["outputs"]["exitCode"] == "0"
        assert nodes[name]["hostNodeName"] in kwok_nodes.names
    succeeded = condition(op, "Succeeded")
    assert (succeeded["status"], succeeded["reason"]) == ("True", "EngineCompleted")
    assert succeeded["message"] == f"Workflow {wf['metadata']['name']} Succeeded"
    assert op["status"]["outputs"] == {"workflowName": wf["metadata"]["name"]}
    # The Operation's argument reached the step's command, through Argo's own substitution.
    argvs = sorted(main_argv(pod) for pod in seen.pods.values())
    assert argvs == [
        ["sh", "-c", "echo checking 2.0.0"],
        ["sh", "-c", "echo restarting 2.0.0"],
    ]
    assert all(p["status"]["phase"] == "Succeeded" for p in seen.pods.values())
    # (A Pod node's Running is usually seen too, but not always: the Pod runs 1 s and the
    # controller looks at a Workflow at most once a second.)
    assert seen.workflow.seen[0] == "Workflow=Running"
    assert seen.operation.seen.index("phase=Running") < seen.operation.seen.index("phase=Succeeded")


async def test_a_failing_runbook_fails_with_argos_message_after_its_retry(
    target: ObjectKey,
    kube_namespace: str,
    argo: ArgoController,
    kwok_nodes: KwokNodes,
    kube: KubeClient,
) -> None:
    started = time.monotonic()
    restart = container_step("restart", "exit 3", retries=1)
    await start_runbook(kube, kube_namespace, workflow_template(kube_namespace, restart))
    seen = await follow(kube, kube_namespace, "Failed", argo=argo)
    seen.report("Runbook failing with exit 3, retry limit 1", time.monotonic() - started)

    wf, op = seen.last_workflow, seen.last_operation
    assert wf["status"]["phase"] == "Failed", wf["status"]
    attempts = [n for n in pod_nodes(wf) if n["templateName"] == "restart"]
    # The first attempt and its one retry, each Failed with the exit code from the Pod.
    assert [n["phase"] for n in attempts] == ["Failed", "Failed"]
    assert {n["message"] for n in attempts} == {"Error (exit code 3)"}
    assert {n["outputs"]["exitCode"] for n in attempts} == {"3"}
    failed = condition(op, "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "EngineFailed")
    name = wf["metadata"]["name"]
    # Argo's Workflow message names only the failed child node's id; the engine adds the
    # message of the step that failed last (the retry's).
    assert wf["status"]["message"].startswith("child '")
    assert wf["status"]["message"].endswith("' failed")
    assert (
        failed["message"] == f"Failed: {wf['status']['message']}; restart(1): Error (exit code 3)"
    )
    assert op["status"]["outputs"] == {"workflowName": name}
    failed_pods = [p for p in seen.pods.values() if p["status"]["phase"] == "Failed"]
    assert len(failed_pods) == 2
    for pod in failed_pods:
        [main] = [c for c in pod["status"]["containerStatuses"] if c["name"] == "main"]
        assert (main["state"]["terminated"]["exitCode"], main["state"]["terminated"]["reason"]) == (
            3,
            "Error",
        )


async def test_a_runbook_of_a_missing_template_fails_with_argos_error(
    target: ObjectKey, kube_namespace: str, argo: ArgoController, kube: KubeClient
) -> None:
    started = time.monotonic()
    await start_runbook(kube, kube_namespace, None)
    seen = await follow(kube, kube_namespace, "Failed", argo=argo)
    seen.report("Runbook of a missing WorkflowTemplate", time.monotonic() - started)

    op = seen.last_operation
    failed = condition(op, "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "EngineFailed")
    # Argo's Error (the controller could not run it), not Failed (a step failed): the operator
    # reports "<Workflow phase>: <Workflow message>", both written by Argo's controller.
    assert failed["message"] == f'Error: workflowtemplates.argoproj.io "{TEMPLATE}" not found'
    assert not seen.pods
    # The operator deletes a failed Operation's Workflow at once (its cancel), so the 50 ms poll
    # may never see the Workflow's status (CI saw it gone 0.2 s after the start); when it did,
    # the status is the one the Operation reports.
    status = seen.last_workflow.get("status") or {}
    if status.get("phase"):
        assert (status["phase"], f"Error: {status.get('message')}") == ("Error", failed["message"])
