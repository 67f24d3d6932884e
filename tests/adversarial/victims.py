"""The victims: objects outside the target that no job may touch, planted by the test itself
(not through the agent) in a namespace of their own and at cluster scope.

In the victim namespace, each named ``keep-me``: a Velero Backup, a Flux HelmRelease, a Secret
(holding a random value, grepped for afterwards), a ConfigMap, an ApplicationInstance, an
Operation (awaiting approval, so the operator leaves it Pending) and a Seaweed when its CRD is
installed. Cluster-scoped: the labelled victim Namespace, a Namespace whose name starts like the
target glob without matching it, and a Cluster.
"""

from __future__ import annotations

import secrets
from typing import Any

from tests.adversarial.corpus import APPS, KEEP, OPS, Victims
from tests.integration.operator_process import wait_until
from vworkspace.api.jsontypes import JsonObj
from vworkspace.testing import ApiError

VICTIM_LABEL = "adv.vworkspace.io/victim"


def make_victims() -> Victims:
    suffix = secrets.token_hex(3)
    return Victims(
        namespace=f"adv-victim-{suffix}",
        lookalike=f"adv-targetx{suffix}",
        cluster=f"adv-keep-me-{suffix}",
    )


def _namespaced(v: Victims, secret_value: str) -> list[tuple[str, JsonObj]]:
    meta = {"name": KEEP, "namespace": v.namespace, "labels": {VICTIM_LABEL: "true"}}
    ns = v.namespace
    return [
        (
            f"/apis/velero.io/v1/namespaces/{ns}/backups",
            {
                "apiVersion": "velero.io/v1",
                "kind": "Backup",
                "metadata": meta,
                "spec": {"includedNamespaces": [ns]},
            },
        ),
        (
            f"/apis/helm.toolkit.fluxcd.io/v2/namespaces/{ns}/helmreleases",
            {
                "apiVersion": "helm.toolkit.fluxcd.io/v2",
                "kind": "HelmRelease",
                "metadata": meta,
                "spec": {
                    "interval": "10m",
                    "chart": {
                        "spec": {
                            "chart": "db",
                            "sourceRef": {"kind": "HelmRepository", "name": "repo"},
                        }
                    },
                },
            },
        ),
        (
            f"/api/v1/namespaces/{ns}/secrets",
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": meta,
                "stringData": {"password": secret_value},
            },
        ),
        (
            f"/api/v1/namespaces/{ns}/configmaps",
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"k": "v"}},
        ),
        (
            f"/apis/{APPS}/namespaces/{ns}/applicationinstances",
            {
                "apiVersion": APPS,
                "kind": "ApplicationInstance",
                "metadata": meta,
                "spec": {"appRef": {"catalogId": "victim"}, "mode": "placeholder"},
            },
        ),
        (
            f"/apis/{OPS}/namespaces/{ns}/operations",
            {
                "apiVersion": OPS,
                "kind": "Operation",
                "metadata": meta,
                "spec": {
                    "targetRef": {"apiVersion": APPS, "kind": "ApplicationInstance", "name": KEEP},
                    "type": "Backup",
                    "engine": "velero",
                    "approvals": {"required": True},
                },
            },
        ),
        (
            f"/apis/seaweed.seaweedfs.com/v1/namespaces/{ns}/seaweeds",
            {
                "apiVersion": "seaweed.seaweedfs.com/v1",
                "kind": "Seaweed",
                "metadata": meta,
                "spec": {},
            },
        ),
    ]


def _create(rest: Any, path: str, body: JsonObj) -> JsonObj | None:
    """Create unless it exists; None when the resource is not installed (no Seaweed CRD)."""
    try:
        created: JsonObj = rest.post(path, body)
        return created
    except ApiError as err:
        if err.status == 409:
            return None
        if err.status == 404 and "seaweed" in path:
            return None
        raise


def plant(rest: Any, v: Victims, secret_value: str) -> Victims:
    """Create every victim that is missing; returns the victims with the ConfigMap's uid (for
    ownerReferences that point at it)."""
    for name in (v.namespace, v.lookalike):
        _create(
            rest,
            "/api/v1/namespaces",
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": {VICTIM_LABEL: "true", "team": "prod"}},
            },
        )
    _create(
        rest,
        f"/apis/{OPS}/clusters",
        {
            "apiVersion": OPS,
            "kind": "Cluster",
            "metadata": {"name": v.cluster, "labels": {VICTIM_LABEL: "true"}},
            "spec": {},
        },
    )
    for path, body in _namespaced(v, secret_value):
        _create(rest, path, body)
    config_map = rest.get(f"/api/v1/namespaces/{v.namespace}/configmaps/{KEEP}")
    return Victims(
        namespace=v.namespace,
        lookalike=v.lookalike,
        cluster=v.cluster,
        uid=config_map["metadata"]["uid"],
    )


def remove(rest: Any, v: Victims) -> None:
    """Best-effort cleanup at the end of a test (the session's API server is shared)."""
    for path in (
        f"/apis/{OPS}/clusters/{v.cluster}",
        f"/api/v1/namespaces/{v.namespace}",
        f"/api/v1/namespaces/{v.lookalike}",
    ):
        try:
            rest.delete(path)
        except ApiError as err:
            if err.status != 404:
                raise


def replant(rest: Any, v: Victims, secret_value: str) -> None:
    """Put back what a batch removed, so later batches still have victims to protect. A victim
    being deleted (a namespace, the Cluster with the operator's finalizer) must be gone first."""
    paths = [
        f"/api/v1/namespaces/{v.namespace}",
        f"/api/v1/namespaces/{v.lookalike}",
        f"/apis/{OPS}/clusters/{v.cluster}",
    ]

    def none_terminating() -> bool:
        for path in paths:
            try:
                if rest.get(path)["metadata"].get("deletionTimestamp"):
                    return False
            except ApiError as err:
                if err.status != 404:
                    raise
        return True

    wait_until("deleted victims to be gone before re-planting", none_terminating, timeout=90)
    plant(rest, v, secret_value)


def remove_namespaces(rest: Any, prefixes: tuple[str, ...]) -> None:
    """Delete every namespace whose name starts with one of ``prefixes`` and wait until they are
    gone; called while the operator still runs, so it releases its finalizers on the way out.
    Left behind, the blocked Operations of a target namespace would be looked at again every
    30 s by every later operator of the session (which shares this API server), whose work queue
    would then never be empty (tests/integration/test_write_budget.py waits for exactly that)."""
    paths = [
        f"/api/v1/namespaces/{ns['metadata']['name']}"
        for ns in rest.get("/api/v1/namespaces")["items"]
        if ns["metadata"]["name"].startswith(prefixes)
    ]
    for path in paths:
        try:
            rest.delete(path)
        except ApiError as err:
            if err.status != 404:
                raise

    def gone() -> bool:
        for path in paths:
            try:
                rest.get(path)
                return False
            except ApiError as err:
                if err.status != 404:
                    raise
        return True

    wait_until(f"namespaces {', '.join(prefixes)}* to be gone", gone, timeout=120)
