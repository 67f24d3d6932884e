"""The ``job`` (RunCommand) and ``helmHookJob`` (Migration) engines: one ``batch/v1`` Job per
Operation in the target's release namespace (docs/api.md, "Operation templates").

Naming, labels, ownership and locating are shared with the other workload engines
(:mod:`vworkspace.engines.workload`). The Job runs one container (``runner``, or ``hook`` for a
Migration) with ``restartPolicy: Never`` as ServiceAccount ``vworkspace-operation-runner``,
which the engine creates (without role bindings) when the namespace lacks it;
``parameters.serviceAccountName`` naming any other account is an error (admission rule 2).

Parameters: ``image``, ``command``, ``args``, ``env`` (a list of ``{name, value, valueFrom}`` as
the template schema has it, or Go's ``{name: value}`` map, sorted by name), ``backoffLimit``,
``activeDeadlineSeconds`` (else ``timeoutSeconds``, which Go accepted and ignored),
``ttlSecondsAfterFinished`` (default 86400). A Migration takes ``hookName`` (label
``ops.vworkspace.io/hook-name`` and annotation ``helm.sh/hook``) and its image from
``parameters.image`` or the target's ``ops.vworkspace.io/migration-image`` annotation.

Status from the Job's conditions (:func:`job_observation`): ``FailureTarget=True`` or
``Failed=True`` -> failed, ``SuccessCriteriaMet=True`` or ``Complete=True`` -> succeeded, with
the Job controller's ``<reason>: <message>`` as the Operation's message; else running; outputs
``{"jobName": <name>}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vworkspace.api import constants
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

JOBS = ResourceType("batch", "v1", "jobs", "Job")
DEFAULT_TTL = 86400


def env_list(value: Any) -> list[JsonObj]:
    """The container ``env``: the schema's list as given (order matters for ``$(VAR)``
    references), or Go's map sorted by name."""
    if isinstance(value, dict):
        return [{"name": str(k), "value": str(v)} for k, v in sorted(value.items())]
    if isinstance(value, list):
        return [
            {k: item[k] for k in ("name", "value", "valueFrom") if k in item}
            for item in value
            if isinstance(item, dict)
        ]
    if value is None:
        return []
    raise EngineError("spec.parameters.env must be a list of {name, value} or a map")


def _strings(params: Mapping[str, Any], key: str) -> list[str] | None:
    value = params.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise EngineError(f"spec.parameters.{key} must be a list of strings")
    return [str(v) for v in value]


def job_spec(
    params: Mapping[str, Any], *, account: str, pod_labels: dict[str, str], container: JsonObj
) -> JsonObj:
    spec: JsonObj = {
        "ttlSecondsAfterFinished": int(params.get("ttlSecondsAfterFinished", DEFAULT_TTL)),
        "template": {
            "metadata": {"labels": pod_labels},
            "spec": {
                "restartPolicy": "Never",
                "serviceAccountName": account,
                "containers": [container],
            },
        },
    }
    if params.get("backoffLimit") is not None:
        spec["backoffLimit"] = int(params["backoffLimit"])
    deadline = params.get("activeDeadlineSeconds") or params.get("timeoutSeconds")
    if deadline:
        spec["activeDeadlineSeconds"] = int(deadline)
    return spec


# The Job controller's terminal conditions, as Kubernetes >= 1.31 writes them (issue 25,
# observed in tests/real/test_jobs.py): first the *target* condition, once the verdict is known
# (SuccessCriteriaMet, FailureTarget), then Complete / Failed once every Pod has terminated. The
# API server refuses Complete without SuccessCriteriaMet and Failed without FailureTarget, and
# never lets a target condition be withdrawn, so the first one is already final. Older Job
# controllers wrote only Complete / Failed. Each pair is read in order of preference.
_SUCCESS = ("Complete", "SuccessCriteriaMet")
_FAILURE = ("Failed", "FailureTarget")


def _true_conditions(job: JsonObj) -> dict[str, JsonObj]:
    conditions = (job.get("status") or {}).get("conditions") or []
    return {
        str(c.get("type")): c
        for c in conditions
        if isinstance(c, dict) and c.get("status") == "True"
    }


def _verdict(cond: JsonObj, fallback: str) -> str:
    """``<reason>: <message>`` of the Job controller's condition (e.g. ``BackoffLimitExceeded:
    Job has reached the specified backoff limit``), whichever parts it has."""
    parts = [str(cond[k]) for k in ("reason", "message") if cond.get(k)]
    return ": ".join(parts) or fallback


def job_observation(job: JsonObj) -> Observation:
    """The Operation's view of its Job: failed as soon as the Job controller has decided so
    (``FailureTarget`` or ``Failed``), succeeded likewise (``SuccessCriteriaMet`` or
    ``Complete``), else running. The message is the Job controller's reason and message, so an
    Operation says *why* (``BackoffLimitExceeded``, ``DeadlineExceeded``, ``PodFailurePolicy``)
    where the Operation's own reason (``EngineFailed``) cannot: the control plane depends on that
    vocabulary. Failure is checked first; the API server forbids both at once anyway."""
    view = ObjectView(job)
    name = view.name
    outputs = {"jobName": name}
    ref = EngineRef("Job", name, view.namespace or "")
    true = _true_conditions(job)
    failed = next((true[t] for t in _FAILURE if t in true), None)
    if failed is not None:
        message = _verdict(failed, f"Job {name} failed")
        return Observation(State.FAILED, "EngineFailed", message, outputs, ref=ref)
    complete = next((true[t] for t in _SUCCESS if t in true), None)
    if complete is not None:
        message = _verdict(complete, f"Job {name} complete")
        return Observation(State.SUCCEEDED, "EngineCompleted", message, outputs, ref=ref)
    return Observation(State.RUNNING, "EngineStarted", f"Job {name} running", outputs, ref=ref)


class JobEngine:
    """RunCommand: the command of the parameters in container ``runner``."""

    name = "job"
    container_name = "runner"

    def __init__(self, client: KubeApi) -> None:
        self._client = client

    def approval_required(self, op: OperationView) -> bool:
        return False  # only when the Operation asks (spec.approvals.required)

    def runs_without_target(self, op: OperationView) -> bool:
        return False  # the Job runs in the target's release namespace

    def container(self, op: OperationView, target: ApplicationInstanceView) -> JsonObj:
        params = workload.params(op)
        if not params.get("image"):
            raise EngineError("spec.parameters.image is required")
        container: JsonObj = {"name": self.container_name, "image": str(params["image"])}
        for key in ("command", "args"):
            values = _strings(params, key)
            if values:
                container[key] = values
        env = env_list(params.get("env"))
        if env:
            container["env"] = env
        return container

    def extra_labels(self, op: OperationView) -> dict[str, str]:
        return {}

    def annotations(self, op: OperationView) -> dict[str, str]:
        return {}

    def desired(self, op: OperationView, target: ApplicationInstanceView) -> JsonObj:
        namespace = workload.target_namespace(target)
        meta = workload.metadata(op, name=workload.workload_name(op), namespace=namespace)
        meta["labels"].update(self.extra_labels(op))
        if self.annotations(op):
            meta["annotations"] = self.annotations(op)
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": meta,
            "spec": job_spec(
                workload.params(op),
                account=workload.runner_account(op),
                pod_labels=dict(meta["labels"]),
                container=self.container(op, target),
            ),
        }

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
        job = self.desired(op, target)
        await workload.ensure_runner_account(self._client, workload.target_namespace(target))
        created = await workload.create_if_absent(self._client, JOBS, job)
        return workload.ref_of(JOBS, created)

    async def observe(self, request: OperationRequest) -> Observation:
        job = await workload.locate(
            self._client, JOBS, request.operation, computed=self._computed(request)
        )
        return job_observation(job)

    async def cancel(self, request: OperationRequest) -> None:
        op = request.operation
        known = workload.recorded_ref(op) or self._computed(request)
        await workload.delete_labelled(
            self._client, JOBS, op, namespace=known.namespace if known else None
        )


class HelmHookJobEngine(JobEngine):
    """Migration: a hook-labelled Job in container ``hook``, without env."""

    name = "helmHookJob"
    container_name = "hook"

    def _hook(self, op: OperationView) -> str:
        hook = workload.params(op).get("hookName")
        if not hook:
            raise EngineError("spec.parameters.hookName is required")
        return str(hook)

    def container(self, op: OperationView, target: ApplicationInstanceView) -> JsonObj:
        params = workload.params(op)
        image = params.get("image") or target.annotations.get(constants.ANNOTATION_MIGRATION_IMAGE)
        if not image:
            raise EngineError(
                "spec.parameters.image is required for a Migration unless the target has the "
                f"annotation {constants.ANNOTATION_MIGRATION_IMAGE}"
            )
        container: JsonObj = {"name": self.container_name, "image": str(image)}
        for key in ("command", "args"):
            values = _strings(params, key)
            if values:
                container[key] = values
        return container

    def extra_labels(self, op: OperationView) -> dict[str, str]:
        return {constants.LABEL_HOOK_NAME: self._hook(op)}

    def annotations(self, op: OperationView) -> dict[str, str]:
        return {constants.ANNOTATION_HELM_HOOK: self._hook(op)}


# batch/v1 is served by every cluster: both are always registered (no CRD to wait for).
DESCRIPTOR = OperationEngineDescriptor(
    name=JobEngine.name, build=lambda context: JobEngine(context.client)
)
HOOK_DESCRIPTOR = OperationEngineDescriptor(
    name=HelmHookJobEngine.name, build=lambda context: HelmHookJobEngine(context.client)
)
