"""The webhook's rules on the reconciler's path (issue 24, deliverable 5; docs/webhooks.md,
"Without the webhook"): for each rule the Operation reconciler enforces, the function it calls
refuses the Operation with exactly the webhook's message, and the Pod-running engines refuse a
foreign ServiceAccount themselves."""

from __future__ import annotations

from typing import Any, cast

import pytest

from vworkspace.api.admission import (
    World,
    invalid_target_problem,
    operation_cluster_problem,
    operation_spec_problem,
    review_application_instance,
    review_operation,
)
from vworkspace.api.applicationinstance import ApplicationInstanceView
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.operation import OperationView
from vworkspace.api.templates import TEMPLATES
from vworkspace.engines.base import EngineError
from vworkspace.engines.job import HelmHookJobEngine, JobEngine
from vworkspace.engines.workflow import desired as workflow_desired
from vworkspace.kube.rest.api import KubeApi
from vworkspace.testing import objects

RUNNER = "vworkspace-operation-runner"
# Every template's capability granted to its engine.
GRANTS = {t.capability_annotation: t.engine for t in TEMPLATES}


def operation(type_: str = "Backup", **spec: Any) -> JsonObj:
    op = objects.operation("op-1", "team-a", type_=type_, **spec)
    op["metadata"]["uid"] = "4f0c-uid"
    return op


def target(annotations: dict[str, str] | None = None, **spec: Any) -> JsonObj:
    ai = objects.managed_instance(
        "shop", "team-a", annotations=GRANTS if annotations is None else annotations
    )
    ai["spec"].update(spec)
    return ai


def reconciler_path(op: JsonObj, *, ns: dict[str, str], ai: JsonObj) -> str | None:
    """What OperationReconciler._admit asks, in its order, for an Operation whose target
    exists (the approval, conflict and engine checks are its own, as in Go)."""
    return (
        operation_spec_problem(op)
        or invalid_target_problem(op, ai)
        or operation_cluster_problem(op, namespace_annotations=ns, target=ai)
    )


def webhook(op: JsonObj, *, ns: dict[str, str], ai: JsonObj) -> str | None:
    world = World(namespace_annotations=ns, target=ai)
    return review_operation(op, world=world, approval_secret="s", now=0.0)


RUN_AS_ADMIN = {"image": "busybox", "serviceAccountName": "cluster-admin"}

# (rule, Operation, Namespace annotations, target, the webhook's message)
RULES: list[tuple[str, JsonObj, dict[str, str], JsonObj, str]] = [
    (
        "1 target shape",
        operation(targetRef={"apiVersion": "v1", "kind": "Secret", "name": "x"}),
        {},
        target(),
        "spec.targetRef.apiVersion must be apps.vworkspace.io/v1alpha1, got 'v1'",
    ),
    (
        "2 job ServiceAccount (F9)",
        operation("RunCommand", parameters=RUN_AS_ADMIN),
        {},
        target(),
        "spec.parameters.serviceAccountName must be vworkspace-operation-runner (or unset) for "
        "engine job, got 'cluster-admin'",
    ),
    (
        "2 workflow ServiceAccount",
        operation("Runbook", parameters={"template": "t", "serviceAccountName": "argo-server"}),
        {},
        target(),
        "spec.parameters.serviceAccountName must be vworkspace-operation-runner (or unset) for "
        "engine workflow, got 'argo-server'",
    ),
    (
        "2 helmHookJob ServiceAccount",
        operation("Migration", parameters={"hookName": "h", "serviceAccountName": "default"}),
        {},
        target(),
        "spec.parameters.serviceAccountName must be vworkspace-operation-runner (or unset) for "
        "engine helmHookJob, got 'default'",
    ),
    (
        "3 known type",
        operation("Snapshot", engine="velero"),
        {},
        target(),
        "spec.type must be one of Backup, Restore, Upgrade, Migration, RunCommand, Runbook, "
        "got 'Snapshot'",
    ),
    (
        "4 Namespace allow-list",
        operation("RunCommand", parameters={"image": "busybox"}),
        {"ops.vworkspace.io/allowed-types": "Backup, Upgrade"},
        target(),
        "Operation type RunCommand is not allowed in namespace 'team-a': its annotation "
        "ops.vworkspace.io/allowed-types allows only Backup, Upgrade",
    ),
    (
        "5 built-in template",
        operation("Backup", engine="job", parameters={"image": "busybox"}),
        {},
        target(),
        "no built-in template for type Backup with engine job (Backup runs on engine velero)",
    ),
    (
        "7 capability annotation",
        operation("RunCommand", parameters={"image": "busybox"}),
        {},
        target({"ops.vworkspace.io/backup": "velero"}),
        "ApplicationInstance 'shop' does not allow RunCommand Operations: its annotation "
        "ops.vworkspace.io/runcommand must be 'job', got 'nothing'",
    ),
    (
        "8 parameter schema",
        operation("RunCommand", parameters={"image": "busybox", "hostNetwork": True}),
        {},
        target(),
        "spec.parameters: Additional properties are not allowed ('hostNetwork' was unexpected) "
        "(template runCommand.job)",
    ),
]


@pytest.mark.parametrize(
    ("op", "ns", "ai", "message"),
    [rule[1:] for rule in RULES],
    ids=[rule[0] for rule in RULES],
)
def test_each_rule_refuses_on_the_reconciler_path_with_the_webhook_message(
    op: JsonObj, ns: dict[str, str], ai: JsonObj, message: str
) -> None:
    assert webhook(op, ns=ns, ai=ai) == message
    assert reconciler_path(op, ns=ns, ai=ai) == message


def test_rules_on_the_operation_alone_need_neither_target_nor_namespace() -> None:
    # The reconciler runs these before it looks the target up: F9 is refused even when the
    # target does not exist (yet).
    op = operation("RunCommand", parameters=RUN_AS_ADMIN)
    assert operation_spec_problem(op) == RULES[1][4]


@pytest.mark.parametrize(
    "op",
    [
        operation(parameters={"ttl": "72h"}),
        operation("Restore", parameters={"backupName": "b"}),
        operation("Upgrade", parameters={"targetVersion": "2.0.0"}),
        operation("Migration", parameters={"hookName": "h", "image": "migrate:1"}),
        operation("RunCommand", parameters={"image": "busybox", "serviceAccountName": RUNNER}),
        operation("Runbook", parameters={"template": "t"}),
    ],
    ids=lambda op: str(op["spec"]["type"]),
)
def test_every_template_passes_with_valid_parameters(op: JsonObj) -> None:
    assert reconciler_path(op, ns={}, ai=target()) is None


def test_a_blank_allow_list_allows_every_type() -> None:
    op = operation("RunCommand", parameters={"image": "busybox"})
    blank = {"ops.vworkspace.io/allowed-types": " , "}
    assert operation_cluster_problem(op, namespace_annotations=blank, target=target()) is None


def test_a_target_whose_release_namespace_escapes_its_own_is_refused() -> None:
    # Without the webhook such an instance exists (Blocked); the job, workflow and velero
    # engines would put their workload in its release namespace.
    escaping = target(release={"name": "shop", "namespace": "kube-system"})
    problem = review_application_instance(escaping)
    assert problem == (
        "spec.release.namespace must equal metadata.namespace ('team-a'), got 'kube-system'"
    )
    op = operation("RunCommand", parameters={"image": "busybox"})
    assert reconciler_path(op, ns={}, ai=escaping) == (
        f"spec.targetRef.name: ApplicationInstance 'shop' is not valid: {problem}"
    )
    assert invalid_target_problem(op, target()) is None


# -- the engines refuse on their own -------------------------------------------------------------

ENGINE = cast(KubeApi, None)  # desired() builds the object only; no request is made


def pod_account(op: JsonObj) -> str:
    view, ai = OperationView(op), ApplicationInstanceView(target())
    if op["spec"]["engine"] == "workflow":
        return str(workflow_desired(view, ai)["spec"]["serviceAccountName"])
    engine = JobEngine(ENGINE) if op["spec"]["engine"] == "job" else HelmHookJobEngine(ENGINE)
    return str(engine.desired(view, ai)["spec"]["template"]["spec"]["serviceAccountName"])


@pytest.mark.parametrize(
    "op",
    [
        operation("RunCommand", parameters=RUN_AS_ADMIN),
        operation(
            "Migration", parameters={"hookName": "h", "image": "m", "serviceAccountName": "default"}
        ),
        operation("Runbook", parameters={"template": "t", "serviceAccountName": "argo"}),
    ],
    ids=["job", "helmHookJob", "workflow"],
)
def test_pod_engines_refuse_a_foreign_service_account_with_the_admission_message(
    op: JsonObj,
) -> None:
    expected = operation_spec_problem(op)
    assert expected is not None
    assert expected.startswith("spec.parameters.serviceAccountName must be")
    with pytest.raises(EngineError) as raised:
        pod_account(op)
    assert str(raised.value) == expected


@pytest.mark.parametrize("account", [None, RUNNER])
@pytest.mark.parametrize(
    ("type_", "params"),
    [
        ("RunCommand", {"image": "busybox"}),
        ("Migration", {"hookName": "h", "image": "m"}),
        ("Runbook", {"template": "t"}),
    ],
)
def test_pod_engines_run_as_the_runner(type_: str, params: JsonObj, account: str | None) -> None:
    if account is not None:
        params = {**params, "serviceAccountName": account}
    assert pod_account(operation(type_, parameters=params)) == RUNNER
