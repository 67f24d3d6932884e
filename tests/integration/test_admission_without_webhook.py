"""The validating webhook's rules hold with the webhook off (issue 24, F9 and deliverable 5;
docs/webhooks.md, "Without the webhook").

The real API server and the in-process operator, with no ValidatingWebhookConfiguration: each
Operation below breaks one rule the webhook would have refused it for. The reconciler must hold
it Pending with ``Blocked=True/ValidationFailed`` and the webhook's message, record an Event,
and create nothing: no Job, Workflow or Velero object for it anywhere, no runner ServiceAccount
in a namespace it escaped to, no change to a target it may not touch. The assertions are on the
cluster, not on the reconciler's return value.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from tests.integration.waits import condition, eventually, op_phase
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.app.wiring import OperatorSettings
from vworkspace.engines.job import JOBS
from vworkspace.engines.velero import BACKUPS, RESTORES
from vworkspace.engines.workflow import WORKFLOWS
from vworkspace.engines.workload import SERVICE_ACCOUNTS
from vworkspace.kube.rest.client import KubeClient
from vworkspace.kube.rest.errors import NotFoundError, RetryableError
from vworkspace.kube.rest.resources import (
    APPLICATION_INSTANCES,
    EVENTS,
    NAMESPACES,
    OPERATIONS,
    ResourceType,
)
from vworkspace.kube.runtime.controller import Result
from vworkspace.testing.objects import managed_instance, operation

from .test_operation_engines import CAPABILITIES, Operator, running_operator

pytestmark = pytest.mark.integration
RUNNER = "vworkspace-operation-runner"
HELM_RELEASES = ResourceType("helm.toolkit.fluxcd.io", "v2", "helmreleases", "HelmRelease")
WORKLOAD_KINDS = (JOBS, WORKFLOWS, BACKUPS, RESTORES)
BLOCKED_RETRY = 30.0


async def _create_namespace(kube: KubeClient, name: str, **annotations: str) -> None:
    meta: JsonObj = {"name": name}
    if annotations:
        meta["annotations"] = annotations
    await kube.create(
        NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}, field_manager="t"
    )


@contextlib.asynccontextmanager
async def extra_namespaces(
    kube: KubeClient, *specs: tuple[str, dict[str, str]]
) -> AsyncIterator[None]:
    for name, marks in specs:
        await _create_namespace(kube, name, **marks)
    try:
        yield
    finally:
        for name, _ in specs:
            with contextlib.suppress(NotFoundError):
                await kube.delete(NAMESPACES, ObjectKey(None, name))


@pytest.fixture
async def operator(
    kube: KubeClient, third_party_crds: list[str], vworkspace_crds: list[str], kube_namespace: str
) -> AsyncIterator[Operator]:
    velero = f"{kube_namespace}-velero"
    async with extra_namespaces(kube, (velero, {})):
        settings = OperatorSettings(namespace=kube_namespace, velero_namespace=velero)
        assert settings.webhooks is None  # the default: no admission webhook in front
        async with running_operator(kube, settings) as op:
            yield op


async def instance(
    kube: KubeClient,
    namespace: str,
    name: str,
    *,
    annotations: dict[str, str] | None = None,
    release_namespace: str | None = None,
) -> JsonObj:
    body = managed_instance(
        name, namespace, annotations=CAPABILITIES if annotations is None else annotations
    )
    if release_namespace is not None:
        body["spec"]["release"]["namespace"] = release_namespace
    return await kube.create(APPLICATION_INSTANCES, body, field_manager="test")


async def blocked(kube: KubeClient, namespace: str, name: str) -> JsonObj:
    """The Operation once it is Pending with Blocked=True (its first reconcile)."""

    async def check() -> JsonObj | None:
        op = await op_phase(kube, namespace, name, "Pending")
        return op if condition(op, "Blocked").get("status") == "True" else None

    result: JsonObj = await eventually(check, what=f"{namespace}/{name} Blocked")
    return result


async def warning_event(kube: KubeClient, namespace: str, name: str) -> JsonObj:
    async def check() -> JsonObj | None:
        events = (await kube.list(EVENTS, namespace))["items"]
        return next(
            (
                e
                for e in events
                if e["regarding"]["name"] == name
                and e["regarding"]["kind"] == "Operation"
                and e["reason"] == "ValidationFailed"
            ),
            None,
        )

    result: JsonObj = await eventually(check, what=f"ValidationFailed Event of {name}")
    return result


async def items(
    kube: KubeClient, resource: ResourceType, namespace: str | None, **query: str
) -> list[JsonObj]:
    """A list, waiting out the 429 "storage is (re)initializing" of CRDs installed moments ago."""

    async def attempt() -> JsonObj | None:
        try:
            return await kube.list(resource, namespace, **query)
        except RetryableError:
            return None

    listed: JsonObj = await eventually(attempt, what=f"list of {resource.kind}")
    return list(listed["items"])


async def workloads_of(kube: KubeClient, op: JsonObj) -> list[str]:
    """Every Job, Workflow, Backup and Restore in the cluster carrying the Operation's UID."""
    selector = f"ops.vworkspace.io/operation={op['metadata']['uid']}"
    found = []
    for resource in WORKLOAD_KINDS:
        listed = await items(kube, resource, None, labelSelector=selector)
        found += [f"{resource.kind} {i['metadata']['name']}" for i in listed]
    return found


async def assert_blocked_and_nothing_created(
    operator: Operator, kube: KubeClient, op: JsonObj, message: str, *, retry: float | None
) -> None:
    namespace, name = op["metadata"]["namespace"], op["metadata"]["name"]
    held = await blocked(kube, namespace, name)
    for type_ in ("Blocked", "Accepted"):
        cond = condition(held, type_)
        assert (cond["status"], cond["reason"], cond["message"]) == (
            "True" if type_ == "Blocked" else "False",
            "ValidationFailed",
            message,
        ), name
        assert cond["observedGeneration"] == held["metadata"]["generation"]
    assert {"engineRef", "startedAt"}.isdisjoint(held["status"])
    event = await warning_event(kube, namespace, name)
    assert (event["type"], event["note"]) == ("Warning", message)
    assert await workloads_of(kube, held) == [], name
    # No hot loop: a rule on the Operation alone waits for a spec change; one that reads the
    # target or the Namespace looks again in 30 s. Another reconcile writes nothing new.
    controller = next(c for c in operator.manager.controllers if c.name == "operation")
    result = await controller.reconciler.reconcile(ObjectKey(namespace, name))
    assert result == (Result.done() if retry is None else Result.after(retry)), name
    again = await kube.get(OPERATIONS, ObjectKey(namespace, name))
    assert again["metadata"]["resourceVersion"] == held["metadata"]["resourceVersion"]


# -- F9 -----------------------------------------------------------------------------------------


async def test_f9_a_run_command_as_cluster_admin_is_blocked_and_no_job_is_created(
    operator: Operator, kube: KubeClient, kube_namespace: str
) -> None:
    await instance(kube, kube_namespace, "shop")
    op = await kube.create(
        OPERATIONS,
        operation(
            "as-admin",
            kube_namespace,
            type_="RunCommand",
            parameters={"image": "busybox", "serviceAccountName": "cluster-admin"},
        ),
        field_manager="test",
    )
    await assert_blocked_and_nothing_created(
        operator,
        kube,
        op,
        "spec.parameters.serviceAccountName must be vworkspace-operation-runner (or unset) for "
        "engine job, got 'cluster-admin'",
        retry=None,
    )
    assert await items(kube, JOBS, kube_namespace) == []
    # Re-evaluated when the spec changes: with the runner account it starts, as the runner.
    await kube.merge_patch(
        OPERATIONS,
        ObjectKey(kube_namespace, "as-admin"),
        {"spec": {"parameters": {"serviceAccountName": RUNNER}}},
        field_manager="test",
    )
    running = await eventually(
        lambda: op_phase(kube, kube_namespace, "as-admin", "Running"), what="Running"
    )
    job = await kube.get(JOBS, ObjectKey(kube_namespace, running["status"]["engineRef"]["name"]))
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == RUNNER


# -- every other rule ---------------------------------------------------------------------------


async def test_each_webhook_rule_holds_in_the_reconciler_and_nothing_is_created(
    operator: Operator, kube: KubeClient, kube_namespace: str
) -> None:
    ns = kube_namespace
    gated, victim = f"{ns}-gated", f"{ns}-victim"
    async with extra_namespaces(
        kube, (gated, {"ops.vworkspace.io/allowed-types": "Backup, Upgrade"}), (victim, {})
    ):
        await instance(kube, ns, "shop")
        await instance(kube, gated, "shop")
        await instance(kube, ns, "closed", annotations={"ops.vworkspace.io/backup": "velero"})
        await instance(kube, ns, "escape", release_namespace=victim)
        run = {"image": "busybox"}
        # (Operation, the webhook's message, requeue): one per rule; the CRD's enums already
        # refuse unknown types and engines (rule 3), so that rule is unit-tested only.
        cases: list[tuple[JsonObj, str, float | None]] = [
            (
                operation(
                    "wrong-kind",
                    ns,
                    targetRef={"apiVersion": "v1", "kind": "Secret", "name": "shop"},
                ),
                "spec.targetRef.apiVersion must be apps.vworkspace.io/v1alpha1, got 'v1'",
                None,
            ),
            (
                operation(
                    "workflow-sa",
                    ns,
                    type_="Runbook",
                    parameters={"template": "t", "serviceAccountName": "argo-server"},
                ),
                "spec.parameters.serviceAccountName must be vworkspace-operation-runner (or "
                "unset) for engine workflow, got 'argo-server'",
                None,
            ),
            (
                operation(
                    "hook-sa",
                    ns,
                    type_="Migration",
                    parameters={"hookName": "h", "serviceAccountName": "default"},
                ),
                "spec.parameters.serviceAccountName must be vworkspace-operation-runner (or "
                "unset) for engine helmHookJob, got 'default'",
                None,
            ),
            (
                operation("gated-cmd", gated, type_="RunCommand", parameters=run),
                f"Operation type RunCommand is not allowed in namespace '{gated}': its "
                "annotation ops.vworkspace.io/allowed-types allows only Backup, Upgrade",
                BLOCKED_RETRY,
            ),
            (
                operation("backup-as-job", ns, type_="Backup", engine="job", parameters=run),
                "no built-in template for type Backup with engine job (Backup runs on engine "
                "velero)",
                None,
            ),
            (
                operation("no-grant", ns, type_="RunCommand", target="closed", parameters=run),
                "ApplicationInstance 'closed' does not allow RunCommand Operations: its "
                "annotation ops.vworkspace.io/runcommand must be 'job', got 'nothing'",
                BLOCKED_RETRY,
            ),
            (
                operation(
                    "no-upgrade-grant",
                    ns,
                    type_="Upgrade",
                    target="closed",
                    parameters={"targetVersion": "9.9.9"},
                ),
                "ApplicationInstance 'closed' does not allow Upgrade Operations: its "
                "annotation ops.vworkspace.io/upgrade must be 'helm', got 'nothing'",
                BLOCKED_RETRY,
            ),
            (
                operation(
                    "privileged",
                    ns,
                    type_="RunCommand",
                    parameters={"image": "busybox", "privileged": True},
                ),
                "spec.parameters: Additional properties are not allowed ('privileged' was "
                "unexpected) (template runCommand.job)",
                None,
            ),
            (
                operation("escaping", ns, type_="RunCommand", target="escape", parameters=run),
                "spec.targetRef.name: ApplicationInstance 'escape' is not valid: "
                f"spec.release.namespace must equal metadata.namespace ('{ns}'), got "
                f"'{victim}'",
                BLOCKED_RETRY,
            ),
        ]
        created = [
            (await kube.create(OPERATIONS, body, field_manager="test"), message, retry)
            for body, message, retry in cases
        ]
        for op, message, retry in created:
            await assert_blocked_and_nothing_created(operator, kube, op, message, retry=retry)
        for namespace in (ns, gated, victim):
            assert await items(kube, JOBS, namespace) == [], namespace
            assert await items(kube, WORKFLOWS, namespace) == [], namespace
        with pytest.raises(NotFoundError):  # the engine never set foot in the victim namespace
            await kube.get(SERVICE_ACCOUNTS, ObjectKey(victim, RUNNER))
        closed = await kube.get(APPLICATION_INSTANCES, ObjectKey(ns, "closed"))
        assert closed["spec"]["chart"]["version"] == "1.0.0"  # no Upgrade without the grant


async def test_an_instance_whose_release_escapes_its_namespace_is_blocked_without_a_release(
    operator: Operator, kube: KubeClient, kube_namespace: str
) -> None:
    victim = f"{kube_namespace}-victim"
    async with extra_namespaces(kube, (victim, {})):
        await instance(kube, kube_namespace, "escape", release_namespace=victim)
        key = ObjectKey(kube_namespace, "escape")

        async def stalled() -> JsonObj | None:
            ai = await kube.get(APPLICATION_INSTANCES, key)
            return ai if condition(ai, "Ready").get("status") == "False" else None

        ai = await eventually(stalled, what="Ready=False")
        message = (
            f"spec.release.namespace must equal metadata.namespace ('{kube_namespace}'), "
            f"got '{victim}'"
        )
        for type_, status in (("Ready", "False"), ("Blocked", "True")):
            cond = condition(ai, type_)
            assert (cond["status"], cond["reason"], cond["message"]) == (
                status,
                "ValidationFailed",
                message,
            )
        for namespace in (kube_namespace, victim):
            assert await items(kube, HELM_RELEASES, namespace) == [], namespace
