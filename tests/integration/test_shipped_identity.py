"""The operator as it runs in a cluster: its own ServiceAccount, only the RBAC rendered from
manifests/ (vworkspace/testing/identity.py), and no 403.

* The pull loop end to end, twice: once through the in-cluster loader (the service-account files
  and ``KUBERNETES_SERVICE_HOST``/``_PORT`` as a kubelet provides them; no kubeconfig at all) and
  once with a kubeconfig holding only the ServiceAccount's token. Each time: a helm instance into
  a namespace the agent creates, a native SeaweedFS instance, a RunCommand (Job engine) and a
  Backup (Velero engine) Operation, all as agent jobs; the downstream objects are then answered
  (HelmRelease Ready, Seaweed Ready, Job Complete, Backup Completed) so the operator's status
  writes run too, and the instance is deleted (finalizer removal, HelmRelease cleanup).
  ``OperatorProcess.stop()`` fails on any 403 (its ``rest_client_requests_total`` and its log).
* A negative control: the same RBAC with one verb removed (``patch`` on ``helmreleases``) makes
  the check fail, naming the verb and the resource.

The registration through a Cluster, leader election and secure metrics under the same identity:
tests/integration/test_install_manifests.py::test_the_operator_runs_with_nothing_but_the_manifests_rbac.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vworkspace.engines.workload import workload_name
from vworkspace.mockcontrolplane import AdminClient
from vworkspace.testing import ApiError, ControlPlane, RestClient
from vworkspace.testing.crds import install_crds, load_crds
from vworkspace.testing.identity import (
    ShippedIdentity,
    install_shipped_identity,
    remove_shipped_identity,
)
from vworkspace.testing.objects import managed_instance, operation

from .operator_process import MockProcess, OperatorProcess, wait_until
from .test_install_manifests import get
from .test_reconcilers import flux_succeeded, stamped
from .test_seaweed import seaweedfs

pytestmark = pytest.mark.integration

SEAWEED_CRDS = Path(__file__).parent.parent / "fixtures" / "crds" / "seaweedfs.yaml"
APPS = "/apis/apps.vworkspace.io/v1alpha1/namespaces"
OPS = "/apis/ops.vworkspace.io/v1alpha1/namespaces"
HELM = "/apis/helm.toolkit.fluxcd.io/v2/namespaces"
SEAWEED = "/apis/seaweed.seaweedfs.com/v1/namespaces"
MERGE = "application/merge-patch+json"
Doc = dict[str, Any]


@pytest.fixture
def seaweed_crds(control_plane: ControlPlane) -> list[str]:
    return install_crds(control_plane.rest(), load_crds([SEAWEED_CRDS]))


def condition(obj: Doc | None, kind: str) -> Doc:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return {}


def patch_status(rest: RestClient, path: str, status: Doc) -> None:
    rest.request("PATCH", f"{path}/status", body={"status": status}, content_type=MERGE)


async def waiting(
    what: str,
    check: Callable[[], Any],
    operator: OperatorProcess,
    *,
    show: Callable[[], Any] = lambda: "",
    timeout: float = 45,
) -> None:
    """wait_until off the event loop, with ``show()`` and the operator's log tail in the
    failure."""
    try:
        await asyncio.to_thread(wait_until, what, check, timeout)
    except AssertionError as err:
        log = operator.output()[-6000:]
        raise AssertionError(f"{err}\n{show()}\noperator log (tail):\n{log}") from None


async def job_result(admin: AdminClient, job_id: str) -> Doc:
    for _ in range(300):  # 30 s
        result = await admin.job_result(job_id)
        if result is not None:
            return dict(result)
        await asyncio.sleep(0.1)
    raise AssertionError(f"no result for job {job_id} after 30 s")


def job_complete(rest: RestClient, path: str) -> None:
    """The terminal status the Kubernetes 1.36 Job controller writes, as tests/real/test_jobs.py
    observed it (the API server wants SuccessCriteriaMet before Complete)."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    conditions = [
        {
            "type": kind,
            "status": "True",
            "reason": "CompletionsReached",
            "message": "Reached expected number of succeeded pods",
            "lastProbeTime": now,
            "lastTransitionTime": now,
        }
        for kind in ("SuccessCriteriaMet", "Complete")
    ]
    patch_status(
        rest,
        path,
        {
            "conditions": conditions,
            "startTime": now,
            "completionTime": now,
            "succeeded": 1,
            "ready": 0,
            "terminating": 0,
            "uncountedTerminatedPods": {},
        },
    )


def phase(rest: RestClient, path: str) -> str | None:
    return ((get(rest, path) or {}).get("status") or {}).get("phase")


@pytest.mark.parametrize("mode", ["in-cluster", "kubeconfig-token"])
async def test_the_pull_loop_runs_end_to_end_as_the_operators_service_account(
    mode: str,
    control_plane: ControlPlane,
    shipped_identity: ShippedIdentity,
    vworkspace_crds: list[str],
    third_party_crds: list[str],
    seaweed_crds: list[str],
    kube_namespace: str,
    tmp_path: Path,
) -> None:
    rest = control_plane.rest()
    ns = f"{kube_namespace}-agent"  # does not exist: the agent creates it
    velero = f"{kube_namespace}-velero"
    rest.post(
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": velero}},
    )
    cluster, token, admin_token = "cluster-sa", f"bt-{secrets.token_hex(4)}", "sa-admin"
    mock = MockProcess(
        tmp_path / "mock.log",
        "--cluster-id",
        cluster,
        "--bootstrap-token",
        token,
        "--admin-token",
        admin_token,
    )
    operator = None
    try:
        mock.wait_healthy()
        operator = OperatorProcess(
            control_plane,
            shipped_identity.namespace,
            tmp_path / "operator.log",
            "--leader-elect",
            "--agent-enabled",
            "--allow-insecure-control-plane",  # the mock is plain http on 127.0.0.1
            "--control-plane-base-url",
            mock.url,
            "--cluster-id",
            cluster,
            "--agent-token",
            token,
            "--agent-poll-interval",
            "1s",
            "--velero-namespace",
            velero,
            "--log-format",
            "json",
            identity=shipped_identity,
            in_cluster=mode == "in-cluster",
        )
        assert ("KUBECONFIG" in operator.env) == (mode == "kubeconfig-token")
        operator.wait_ready()
        admin = AdminClient(mock.url, admin_token=admin_token)
        jobs = {
            "crm": managed_instance(
                "crm",
                ns,
                catalog_id="crm",
                chart="crm",
                # The engines the instance allows its Operations.
                annotations={
                    "ops.vworkspace.io/runcommand": "job",
                    "ops.vworkspace.io/backup": "velero",
                },
            ),
            "weed": seaweedfs("weed", ns),
            "shell": operation(
                "shell-1",
                ns,
                type_="RunCommand",
                target="crm",
                parameters={"image": "busybox:1.36", "command": ["true"]},
            ),
            "backup": operation(
                "backup-1",
                ns,
                type_="Backup",
                target="crm",
                parameters={"storageLocation": "default"},
            ),
        }
        for job_id, payload in jobs.items():
            kind = payload["kind"].lower()
            await admin.enqueue(
                cluster,
                {
                    "id": job_id,
                    "kind": "apply",
                    "idempotencyKey": f"{kind}/{ns}/{payload['metadata']['name']}@1",
                    "payload": payload,
                },
            )
        for job_id in jobs:
            result = await job_result(admin, job_id)
            assert result["outcome"] == "succeeded", (job_id, result, operator.output()[-4000:])

        # Flux: the HelmRelease, answered Ready, makes the instance Ready.
        release = f"{HELM}/{ns}/helmreleases/crm"
        instance = f"{APPS}/{ns}/applicationinstances/crm"
        await waiting("the HelmRelease", lambda: get(rest, release), operator)
        generation = rest.get(release)["metadata"]["generation"]
        ready = stamped(flux_succeeded("install"), generation)  # as helm-controller writes it
        patch_status(rest, release, {"observedGeneration": generation, "conditions": ready})
        await waiting(
            "the instance Ready",
            lambda: condition(get(rest, instance), "Ready").get("status") == "True",
            operator,
        )
        # SeaweedFS: the Seaweed CR, answered Ready; the instance then looks for its S3 Service.
        weed = f"{SEAWEED}/{ns}/seaweeds/weed"
        await waiting("the Seaweed CR", lambda: get(rest, weed), operator)
        patch_status(
            rest,
            weed,
            {
                "conditions": [
                    {"type": "Ready", "status": "True", "reason": "Ready", "message": "ok"}
                ]
            },
        )
        await waiting(
            "the SeaweedFS instance waiting for its S3 endpoint",
            lambda: (
                condition(get(rest, f"{APPS}/{ns}/applicationinstances/weed"), "Ready").get(
                    "reason"
                )
                == "WaitingForS3Endpoint"
            ),
            operator,
        )
        # Job engine: the RunCommand's Job (and its runner ServiceAccount), answered Complete.
        shell = f"{OPS}/{ns}/operations/shell-1"
        await waiting(
            "the RunCommand running",
            lambda: phase(rest, shell) == "Running",
            operator,
            show=lambda: (get(rest, shell) or {}).get("status"),
        )
        job = f"/apis/batch/v1/namespaces/{ns}/jobs/{workload_name(rest.get(shell))}"
        job_complete(rest, job)
        await waiting(
            "the RunCommand Succeeded", lambda: phase(rest, shell) == "Succeeded", operator
        )
        # Velero engine: the Backup, answered Completed.
        backup = f"{OPS}/{ns}/operations/backup-1"
        await waiting(
            "the Backup running",
            lambda: phase(rest, backup) == "Running",
            operator,
            show=lambda: (get(rest, backup) or {}).get("status"),
        )
        velero_backup = (
            f"/apis/velero.io/v1/namespaces/{velero}/backups/{workload_name(rest.get(backup))}"
        )
        # Velero's CRDs have no status subresource: the server writes status with the object.
        rest.request(
            "PATCH", velero_backup, body={"status": {"phase": "Completed"}}, content_type=MERGE
        )
        await waiting("the Backup Succeeded", lambda: phase(rest, backup) == "Succeeded", operator)
        # Status reached the control plane, and deletion runs the finalizer under the same RBAC.
        events: list[Doc] = []
        for _ in range(300):
            events = await admin.events(
                cluster, kind="ApplicationInstance", namespace=ns, name="crm"
            )
            if events:
                break
            await asyncio.sleep(0.1)
        assert events, "no status event for the instance reached the control plane"
        rest.delete(instance)
        await waiting("the instance deleted", lambda: get(rest, instance) is None, operator)
        await waiting("its HelmRelease deleted", lambda: get(rest, release) is None, operator)
        assert operator.forbidden_so_far() == []
    finally:
        mock.stop()
        if operator is not None:
            operator.stop()  # fails on any 403 the operator received
        for name in (ns, velero):
            with contextlib.suppress(ApiError):
                rest.delete(f"/api/v1/namespaces/{name}")


def without_verb(rendered: list[Doc], *, resource: str, verb: str) -> list[Doc]:
    """``rendered`` with ``verb`` taken off every rule that grants it on ``resource``."""
    docs = copy.deepcopy(rendered)
    removed = 0
    for doc in docs:
        for rule in doc.get("rules") or []:
            if resource in rule.get("resources", []) and verb in rule.get("verbs", []):
                rule["verbs"] = [v for v in rule["verbs"] if v != verb]
                removed += 1
    assert removed, f"no rule grants {verb} on {resource}"
    return docs


async def test_the_403_check_fails_and_names_a_rule_taken_out_of_the_shipped_rbac(
    control_plane: ControlPlane,
    shipped_rendering: list[Doc],
    vworkspace_crds: list[str],
    third_party_crds: list[str],
    kube_namespace: str,
    tmp_path: Path,
) -> None:
    # Its own namespace and ClusterRole names: the real shipped identity stays as it is.
    suffix = secrets.token_hex(3)
    identity = install_shipped_identity(
        control_plane,
        without_verb(shipped_rendering, resource="helmreleases", verb="patch"),
        namespace=f"vworkspace-negative-{suffix}",
        name_suffix=f"-negative-{suffix}",
    )
    rest = control_plane.rest()
    operator = OperatorProcess(
        control_plane,
        identity.namespace,
        tmp_path / "operator.log",
        "--agent-enabled=false",
        "--log-format",
        "json",
        identity=identity,
        in_cluster=True,
    )
    try:
        operator.wait_ready()
        assert operator.forbidden_so_far() == []  # nothing refused before the instance
        body = managed_instance("shop", kube_namespace)
        rest.post(f"{APPS}/{kube_namespace}/applicationinstances", body)
        await waiting(
            "a 403 in the metrics and in the log",
            lambda: len(operator.forbidden_so_far()) >= 2,
            operator,
            show=lambda: (
                operator.forbidden_so_far(),
                get(rest, f"{APPS}/{kube_namespace}/applicationinstances/shop"),
                get(rest, f"{HELM}/{kube_namespace}/helmreleases/shop"),
            ),
        )
        with pytest.raises(AssertionError) as failed:
            operator.stop()
    finally:
        if operator.proc.poll() is None:
            operator.proc.kill()
            operator.proc.wait()
        remove_shipped_identity(control_plane, identity)
        with contextlib.suppress(ApiError):
            rest.delete(f"/api/v1/namespaces/{identity.namespace}")
    message = str(failed.value)
    assert 'rest_client_requests_total{code="403",method="PATCH"}' in message
    assert (
        "refused: patch helmreleases (API group 'helm.toolkit.fluxcd.io', "
        f"as {identity.user})" in message
    ), message
    assert operator.forbidden == [line.strip() for line in message.splitlines()[1:-1]]
