"""The ``workflow`` engine (Runbook): one ``argoproj.io/v1alpha1`` Workflow per Operation that
runs a WorkflowTemplate, in the target's release namespace (docs/api.md,
"Operation templates").

Naming, labels, ownership and locating are shared with the other workload engines
(:mod:`vworkspace.engines.workload`). Parameters: the template name from ``template`` (the
template schema's spelling) or ``workflowTemplate`` (Go's); arguments from Go's
``workflowTemplateParameters`` map plus the schema's ``targetChartVersion``,
``snapshotClassName`` and ``failureAction`` when given, sorted by name; ``timeoutSeconds`` ->
``spec.activeDeadlineSeconds``. The Workflow runs as ``vworkspace-operation-runner``
(``parameters.serviceAccountName`` naming any other account is an error, admission rule 2).

Status from ``status.phase``, as Argo's workflow-controller v3.6 writes it (checked against the
real controller in tests/real/test_argo.py): Succeeded -> succeeded; Failed (a step failed) and
Error (the controller could not run it, e.g. its WorkflowTemplate does not exist) -> failed;
"", Pending, Running -> running. Those are all the phases a Workflow has (``WorkflowPhase``);
an unknown one counts as running. The failed message is ``"<phase>: <status.message>"`` plus,
when the Workflow's nodes say more, ``"; <node>: <its message>"`` for the failed leaf node that
finished last: Argo's own Workflow message for a failed step is ``child '<node id>' failed``,
while the Pod's node says ``Error (exit code 3)`` (after retries, the last attempt's, e.g.
``restart(1)``). Outputs ``{"workflowName": <name>}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vworkspace.api.applicationinstance import ApplicationInstanceView
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.api.operation import OperationView
from vworkspace.api.view import ObjectView
from vworkspace.engines import workload
from vworkspace.engines.base import EngineError, EngineRef, Observation, OperationRequest, State
from vworkspace.engines.descriptor import OperationEngineDescriptor
from vworkspace.kube.rest.api import KubeApi
from vworkspace.kube.rest.resources import ResourceType

WORKFLOWS = ResourceType("argoproj.io", "v1alpha1", "workflows", "Workflow")
# Workflow phases that end it unsuccessfully (Argo's WorkflowPhase: "", Pending, Running,
# Succeeded, Failed, Error); node phases use the same two words for failures.
FAILED_PHASES = frozenset({"Failed", "Error"})
# Schema parameters that are handed to the template as arguments of the same name.
ARGUMENT_PARAMETERS = ("targetChartVersion", "snapshotClassName", "failureAction")


def arguments(params: Mapping[str, Any]) -> list[JsonObj]:
    values: dict[str, str] = {}
    extra = params.get("workflowTemplateParameters")
    if extra is not None and not isinstance(extra, dict):
        raise EngineError("spec.parameters.workflowTemplateParameters must be a map")
    for key, value in (extra or {}).items():
        values[str(key)] = str(value)
    for key in ARGUMENT_PARAMETERS:
        if params.get(key) not in (None, ""):
            values[key] = str(params[key])
    return [{"name": k, "value": v} for k, v in sorted(values.items())]


def desired(op: OperationView, target: ApplicationInstanceView) -> JsonObj:
    params = workload.params(op)
    template = params.get("template") or params.get("workflowTemplate")
    if params.get("workflowTemplate") and template != params["workflowTemplate"]:
        raise EngineError(
            "spec.parameters.template and spec.parameters.workflowTemplate name different "
            "WorkflowTemplates; give one"
        )
    if not template:
        raise EngineError("spec.parameters.template (or workflowTemplate) is required")
    namespace = workload.target_namespace(target)
    spec: JsonObj = {
        "workflowTemplateRef": {"name": str(template)},
        "serviceAccountName": workload.runner_account(op),
    }
    args = arguments(params)
    if args:
        spec["arguments"] = {"parameters": args}
    if params.get("timeoutSeconds"):
        spec["activeDeadlineSeconds"] = int(params["timeoutSeconds"])
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": workload.metadata(op, name=workload.workload_name(op), namespace=namespace),
        "spec": spec,
    }


def failed_leaf(status: Mapping[str, Any]) -> str:
    """``"<display name>: <message>"`` of the failed (or errored) node without children that
    finished last, or "" when there is none (or Argo compressed or offloaded the nodes)."""
    nodes = status.get("nodes")
    if not isinstance(nodes, dict):
        return ""
    leaves = [
        node
        for node in nodes.values()
        if isinstance(node, dict)
        and not node.get("children")
        and node.get("phase") in FAILED_PHASES
        and node.get("message")
    ]
    if not leaves:
        return ""
    last = max(leaves, key=lambda n: (str(n.get("finishedAt") or ""), str(n.get("id") or "")))
    return f"{last.get('displayName') or last.get('name') or last.get('id')}: {last['message']}"


def failure_message(name: str, phase: str, status: Mapping[str, Any]) -> str:
    message = str(status.get("message") or "")
    said = f"{phase}: {message}" if message else f"Workflow {name} {phase}"
    leaf = failed_leaf(status)
    return f"{said}; {leaf}" if leaf and leaf.split(": ", 1)[1] not in message else said


def workflow_observation(wf: JsonObj) -> Observation:
    view = ObjectView(wf)
    name = view.name
    outputs = {"workflowName": name}
    ref = EngineRef("Workflow", name, view.namespace or "")
    status = view.status
    phase = status.get("phase") or ""
    message = status.get("message") or ""
    if phase == "Succeeded":
        return Observation(
            State.SUCCEEDED,
            "EngineCompleted",
            message or f"Workflow {name} Succeeded",
            outputs,
            ref=ref,
        )
    if phase in FAILED_PHASES:
        return Observation(
            State.FAILED, "EngineFailed", failure_message(name, phase, status), outputs, ref=ref
        )
    return Observation(
        State.RUNNING, "EngineStarted", f"Workflow {name} {phase or 'Pending'}", outputs, ref=ref
    )


class WorkflowEngine:
    name = "workflow"

    def __init__(self, client: KubeApi) -> None:
        self._client = client

    def approval_required(self, op: OperationView) -> bool:
        return False  # only when the Operation asks (spec.approvals.required)

    def runs_without_target(self, op: OperationView) -> bool:
        return False  # the Workflow runs in the target's release namespace

    def _computed(self, request: OperationRequest) -> ObjectKey | None:
        if request.target is None:
            return None
        return ObjectKey(
            workload.target_namespace(request.target), workload.workload_name(request.operation)
        )

    async def materialize(self, request: OperationRequest) -> EngineRef:
        op, target = request.operation, request.target
        if target is None:
            raise EngineError("the target ApplicationInstance does not exist")
        wf = desired(op, target)
        await workload.ensure_runner_account(self._client, workload.target_namespace(target))
        created = await workload.create_if_absent(self._client, WORKFLOWS, wf)
        return workload.ref_of(WORKFLOWS, created)

    async def observe(self, request: OperationRequest) -> Observation:
        wf = await workload.locate(
            self._client, WORKFLOWS, request.operation, computed=self._computed(request)
        )
        return workflow_observation(wf)

    async def cancel(self, request: OperationRequest) -> None:
        op = request.operation
        known = workload.recorded_ref(op) or self._computed(request)
        await workload.delete_labelled(
            self._client, WORKFLOWS, op, namespace=known.namespace if known else None
        )


DESCRIPTOR = OperationEngineDescriptor(
    name=WorkflowEngine.name,
    requires=("argoproj.io/v1alpha1/Workflow",),
    missing="the Argo Workflows CRD (argoproj.io/v1alpha1 Workflow) is not installed",
    build=lambda context: WorkflowEngine(context.client),
)
