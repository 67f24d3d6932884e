"""Simulated nodes (issue 25, deliverable 1): the real kube-scheduler places Pods on kwok's Nodes,
the real deployment and Job controllers write the status, and a Pod that fails (annotated, or
running ``sh -c "exit N"``: our stages in scripts/testenv/kwok-stages) makes the Job controller
fail its Job with its own reason. Nothing here writes a status itself."""

from __future__ import annotations

from typing import Any

from vworkspace.testing import ControlPlane
from vworkspace.testing.kwok import FAIL_ANNOTATION, KwokNodes, node_schedulable
from vworkspace.testing.rest import RestClient

TIMEOUT = 60.0


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in obj.get("status", {}).get("conditions") or []:
        if cond.get("type") == kind:
            found: dict[str, Any] = cond
            return found
    return None


def wait_condition(rest: RestClient, path: str, kind: str) -> dict[str, Any]:
    """Wait until the object at ``path`` has condition ``kind`` True; return the object."""
    seen: dict[str, Any] = {}

    def true() -> bool:
        seen.update(rest.get(path))
        cond = condition(seen, kind)
        return cond is not None and cond.get("status") == "True"

    rest.wait_for(f"{kind}=True on {path}", true, timeout=TIMEOUT)
    return seen


def pods(rest: RestClient, namespace: str, selector: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = rest.get(
        f"/api/v1/namespaces/{namespace}/pods", labelSelector=selector
    )["items"]
    return items


def scheduled_pods(rest: RestClient, namespace: str) -> set[str]:
    """The Pods default-scheduler reported as Scheduled (bound to a Node)."""
    events = rest.get(f"/api/v1/namespaces/{namespace}/events")["items"]
    return {
        e["involvedObject"]["name"]
        for e in events
        if e.get("reason") == "Scheduled"
        and (e.get("reportingComponent") or e.get("source", {}).get("component"))
        == "default-scheduler"
    }


def job(
    name: str, *, annotations: dict[str, str] | None = None, command: list[str] | None = None
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": "registry.invalid/migrate:1"}
    if command:
        container["command"] = command
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations or {}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [container],
                },
            },
        },
    }


def test_nodes_are_ready_and_managed_by_kwok(
    control_plane: ControlPlane, kwok_nodes: KwokNodes
) -> None:
    rest = control_plane.rest()
    for name in kwok_nodes.names:
        node = rest.get(f"/api/v1/nodes/{name}")
        assert node_schedulable(node), node
        # Written by kwok's node-initialize stage, not by us.
        assert node["status"]["nodeInfo"]["kubeletVersion"].startswith("kwok-")
    assert len(kwok_nodes.names) == 3


def test_deployment_becomes_available_with_pods_running_on_kwok_nodes(
    control_plane: ControlPlane, kwok_nodes: KwokNodes, kube_namespace: str
) -> None:
    rest = control_plane.rest()
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "registry.invalid/web:1"}]},
            },
        },
    }
    base = f"/apis/apps/v1/namespaces/{kube_namespace}/deployments"
    rest.post(base, deployment)

    done = wait_condition(rest, f"{base}/web", "Available")
    assert done["status"]["availableReplicas"] == 2
    assert done["status"]["readyReplicas"] == 2
    running = pods(rest, kube_namespace, "app=web")
    assert len(running) == 2
    for pod in running:
        assert pod["status"]["phase"] == "Running"
        assert pod["spec"]["nodeName"] in kwok_nodes.names
    # Bound by the real scheduler: it reports each binding as an event of its own (sent
    # asynchronously, so it may land after the Deployment is Available).
    names = {pod["metadata"]["name"] for pod in running}
    rest.wait_for(
        f"default-scheduler's Scheduled events for {sorted(names)}",
        lambda: scheduled_pods(rest, kube_namespace) >= names,
        timeout=TIMEOUT,
    )


def test_job_completes_through_the_job_controller(
    control_plane: ControlPlane, kwok_nodes: KwokNodes, kube_namespace: str
) -> None:
    rest = control_plane.rest()
    base = f"/apis/batch/v1/namespaces/{kube_namespace}/jobs"
    rest.post(base, job("migrate"))

    done = wait_condition(rest, f"{base}/migrate", "Complete")
    assert done["status"]["succeeded"] == 1
    assert done["status"].get("failed", 0) == 0
    [pod] = pods(rest, kube_namespace, "app=migrate")
    assert pod["status"]["phase"] == "Succeeded"
    assert pod["spec"]["nodeName"] in kwok_nodes.names


def test_job_whose_pod_fails_ends_failed_with_the_job_controllers_reason(
    control_plane: ControlPlane, kwok_nodes: KwokNodes, kube_namespace: str
) -> None:
    rest = control_plane.rest()
    base = f"/apis/batch/v1/namespaces/{kube_namespace}/jobs"
    rest.post(base, job("broken", annotations={FAIL_ANNOTATION: "3"}))

    done = wait_condition(rest, f"{base}/broken", "Failed")
    failed = condition(done, "Failed")
    assert failed is not None
    assert failed["reason"] == "BackoffLimitExceeded"
    assert done["status"]["failed"] == 1
    assert condition(done, "Complete") is None
    [pod] = pods(rest, kube_namespace, "app=broken")
    assert pod["status"]["phase"] == "Failed"
    [status] = pod["status"]["containerStatuses"]
    assert status["state"]["terminated"]["exitCode"] == 3
    assert status["state"]["terminated"]["reason"] == "Error"


def test_a_job_whose_shell_exits_non_zero_fails_with_that_exit_code(
    control_plane: ControlPlane, kwok_nodes: KwokNodes, kube_namespace: str
) -> None:
    """Our pod-shell-exit stage: what an Operation can ask for (a command), no annotation."""
    rest = control_plane.rest()
    base = f"/apis/batch/v1/namespaces/{kube_namespace}/jobs"
    rest.post(base, job("exits", command=["sh", "-c", "exit 7"]))

    done = wait_condition(rest, f"{base}/exits", "Failed")
    failed = condition(done, "Failed")
    assert failed is not None
    assert failed["reason"] == "BackoffLimitExceeded"
    [pod] = pods(rest, kube_namespace, "app=exits")
    assert pod["status"]["phase"] == "Failed"
    [status] = pod["status"]["containerStatuses"]
    assert status["state"]["terminated"]["exitCode"] == 7
    assert status["state"]["terminated"]["reason"] == "Error"


def test_a_job_whose_shell_script_is_not_just_exit_completes(
    control_plane: ControlPlane, kwok_nodes: KwokNodes, kube_namespace: str
) -> None:
    """Only a script that is exactly ``exit N`` (N > 0) fails; kwok cannot run any other."""
    rest = control_plane.rest()
    base = f"/apis/batch/v1/namespaces/{kube_namespace}/jobs"
    rest.post(base, job("echoes", command=["sh", "-c", "echo exit 7"]))

    done = wait_condition(rest, f"{base}/echoes", "Complete")
    assert done["status"]["succeeded"] == 1
    [pod] = pods(rest, kube_namespace, "app=echoes")
    [status] = pod["status"]["containerStatuses"]
    assert status["state"]["terminated"]["exitCode"] == 0
