"""Native SeaweedFS managed storage against the real API server (docs/api.md, "Native
SeaweedFS"; docs/pull-mode.md, "Supplemental events").

The operator runs in-process with the Pull agent against the mock control plane; the Seaweed
and S3Credentials CRDs are our own minimal fixtures (tests/fixtures/crds/seaweedfs.yaml), and
the tests play the SeaweedFS operator by writing the CRs' status, the ``<release>-s3`` Service
and the credential Secrets.

The mock keeps the first event per eventKey; to see a *repost* a test clears the mock's key set
(``forget_keys``) so that any second delivery shows up as a second stored event.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from vworkspace.agent.credentials import Overrides
from vworkspace.api.meta import ObjectKey
from vworkspace.app.manager import Manager
from vworkspace.app.wiring import AgentSettings, OperatorSettings, build_manager, served_kinds
from vworkspace.engines.flux import HELM_RELEASES
from vworkspace.engines.s3credentials import short_hash
from vworkspace.engines.seaweed import S3_CREDENTIALS, SEAWEEDS, SERVICES
from vworkspace.kube.rest.client import KubeClient
from vworkspace.kube.rest.errors import NotFoundError
from vworkspace.kube.rest.resources import APPLICATION_INSTANCES, EVENTS, SECRETS
from vworkspace.kube.runtime.controller import Reconciler, Result
from vworkspace.mockcontrolplane import MockControlPlane
from vworkspace.testing import ControlPlane
from vworkspace.testing.crds import CRD_PATH, install_crds, load_crds

from .agent_harness import wait_result
from .waits import eventually

pytestmark = pytest.mark.integration
CLUSTER = "cluster-seaweed"
TOKEN = "seaweed-token"
FIXTURES = Path(__file__).parent.parent / "fixtures" / "crds" / "seaweedfs.yaml"
REPORTED = "vworkspace.io/reported-managed-storage-key"
REPORTED_FAILED = "vworkspace.io/reported-managed-storage-failed"
ACCESS, SECRET = "AKIAWEED", "s3cr3t-value-never-logged"


@pytest.fixture
def seaweed_crds(control_plane: ControlPlane) -> list[str]:
    return install_crds(control_plane.rest(), load_crds([FIXTURES]))


@pytest.fixture
async def mock() -> AsyncIterator[MockControlPlane]:
    async with MockControlPlane() as server:
        server.set_bootstrap_token(CLUSTER, TOKEN)
        yield server


class Operator:
    """Start and stop (restart) the whole operator in-process."""

    def __init__(self, kube: KubeClient, mock: MockControlPlane, namespace: str) -> None:
        self.kube, self.mock, self.namespace = kube, mock, namespace
        self._run: tuple[asyncio.Event, asyncio.Task[int], aiohttp.ClientSession] | None = None
        self.manager: Manager | None = None
        self.reconciled: list[ObjectKey] = []

    async def start(self) -> None:
        agent = AgentSettings(overrides=Overrides(self.mock.url, CLUSTER, TOKEN), poll_interval=1)
        settings = OperatorSettings(
            namespace=self.namespace,
            agent=agent,
            engine_discovery_interval=0.2,
            engine_discovery_max_interval=0.5,
        )
        http = aiohttp.ClientSession()
        self.manager = build_manager(
            settings,
            self.kube,
            registry=CollectorRegistry(),
            served=await served_kinds(self.kube),
            http=http,
        )
        self.reconciled = []  # instance keys reconciled by this run
        controller = next(c for c in self.manager.controllers if c.name == "applicationinstance")
        controller.reconciler = _Recording(controller.reconciler, self.reconciled)
        stop = asyncio.Event()
        task = asyncio.create_task(self.manager.run(stop))
        self._run = (stop, task, http)
        for informer in self.manager.informers:
            await asyncio.wait_for(informer.wait_synced(), 20)

    async def stop(self) -> None:
        assert self._run is not None
        stop, task, http = self._run
        stop.set()
        assert await asyncio.wait_for(task, 30) == 0
        await http.close()
        self._run = None


class _Recording:
    def __init__(self, inner: Reconciler, seen: list[ObjectKey]) -> None:
        self._inner, self._seen = inner, seen

    async def reconcile(self, key: ObjectKey) -> Result:
        result = await self._inner.reconcile(key)
        self._seen.append(key)
        return result


@pytest.fixture
async def operator(
    kube: KubeClient,
    mock: MockControlPlane,
    third_party_crds: list[str],
    vworkspace_crds: list[str],
    seaweed_crds: list[str],
    kube_namespace: str,
) -> AsyncIterator[Operator]:
    op = Operator(kube, mock, kube_namespace)
    await op.start()
    yield op
    if op._run is not None:
        await op.stop()


def seaweedfs(name: str, namespace: str, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps.vworkspace.io/v1alpha1",
        "kind": "ApplicationInstance",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "appRef": {"catalogId": "seaweedfs"},
            "release": {"name": name, "namespace": namespace},
            "values": {
                "source": "inline",
                "inline": {
                    "seaweedfs": {
                        "master": {"replicas": 1},
                        "filer": {"replicas": 1},
                        "s3": {"replicas": 1},
                        "global": {"x": 1},
                    }
                },
            },
            **extra,
        },
    }


async def instance(kube: KubeClient, ns: str, name: str) -> dict[str, Any]:
    return await kube.get(APPLICATION_INSTANCES, ObjectKey(ns, name))


def condition(ai: dict[str, Any], kind: str) -> dict[str, Any]:
    for cond in (ai.get("status") or {}).get("conditions") or []:
        if cond["type"] == kind:
            return dict(cond)
    return {}


async def until_condition(
    kube: KubeClient, ns: str, name: str, kind: str, status: str, reason: str
) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        ai = await instance(kube, ns, name)
        cond = condition(ai, kind)
        return ai if (cond.get("status"), cond.get("reason")) == (status, reason) else None

    found: dict[str, Any] = await eventually(check, what=f"{kind}={status}/{reason}")
    return found


async def set_seaweed_ready(kube: KubeClient, ns: str, name: str, status: str = "True") -> None:
    reason = "Ready" if status == "True" else "NotReady"
    await kube.merge_patch(
        SEAWEEDS,
        ObjectKey(ns, name),
        {
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": status,
                        "reason": reason,
                        "message": f"seaweed {reason}",
                    }
                ]
            }
        },
        field_manager="test",
        subresource="status",
    )


async def create_service(kube: KubeClient, ns: str, name: str) -> None:
    await kube.create(
        SERVICES,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"ports": [{"port": 8333}]},
        },
        field_manager="test",
    )


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def put_credentials(
    kube: KubeClient,
    ns: str,
    name: str,
    release: str,
    *,
    phase: str,
    access: str = ACCESS,
    secret: str = SECRET,
) -> None:
    """An S3Credentials of ``release`` in ``phase`` and (re)written Secret ``<name>-keys``."""
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"{name}-keys", "namespace": ns},
        "data": {"accessKey": b64(access), "secretKey": b64(secret)},
    }
    try:
        await kube.create(SECRETS, body, field_manager="test")
    except Exception:  # already there: a rotation
        await kube.merge_patch(
            SECRETS, ObjectKey(ns, f"{name}-keys"), {"data": body["data"]}, field_manager="test"
        )
    cred = {
        "apiVersion": "seaweed.seaweedfs.com/v1",
        "kind": "S3Credentials",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"seaweedRef": {"name": release}, "secretRef": {"name": f"{name}-keys"}},
    }
    with contextlib.suppress(Exception):
        await kube.create(S3_CREDENTIALS, cred, field_manager="test")
    await kube.merge_patch(
        S3_CREDENTIALS,
        ObjectKey(ns, name),
        {"status": {"phase": phase}},
        field_manager="test",
        subresource="status",
    )


def storage_events(mock: MockControlPlane, ns: str, name: str, prefix: str) -> list[dict[str, Any]]:
    return [
        e for e in mock.events(CLUSTER, namespace=ns, name=name) if e["eventKey"].startswith(prefix)
    ]


def forget_keys(mock: MockControlPlane) -> None:
    mock.state.cluster(CLUSTER).event_keys.clear()


async def wait_for(check: Callable[[], Any], what: str) -> Any:
    async def probe() -> Any:
        return check()

    return await eventually(probe, what=what)


async def gone(kube: KubeClient, resource: Any, key: ObjectKey) -> bool:
    try:
        await kube.get(resource, key)
    except NotFoundError:
        return True
    return False


# -- the acceptance path, through the agent -------------------------------------------------


async def test_an_apply_job_yields_seaweed_storage_reported_once_across_restarts(
    operator: Operator,
    mock: MockControlPlane,
    kube: KubeClient,
    kube_namespace: str,
    capfd: pytest.CaptureFixture[str],
) -> None:
    ns, name = kube_namespace, "seaweedfs-dev"
    await mock.enqueue(
        CLUSTER,
        {
            "id": "sw-1",
            "kind": "apply",
            "idempotencyKey": f"sw/{ns}@1",
            "payload": seaweedfs(name, ns),
        },
    )
    assert (await wait_result(mock, "sw-1"))["outcome"] == "succeeded"

    # The engine made the Seaweed CR: owned by the instance, the wrapper unwrapped.
    cr = await eventually(lambda: kube.get(SEAWEEDS, ObjectKey(ns, name)), what="Seaweed CR")
    ai = await instance(kube, ns, name)
    assert cr["spec"] == {
        "master": {"replicas": 1},
        "filer": {"replicas": 1},
        "s3": {"replicas": 1},
    }
    assert cr["metadata"]["ownerReferences"][0]["uid"] == ai["metadata"]["uid"]
    assert cr["metadata"]["labels"]["app.vworkspace.io/application-instance"] == name
    await until_condition(kube, ns, name, "Ready", "Unknown", "Reconciling")

    # Seaweed Ready, but no S3 Service yet: waiting for the endpoint, no endpoints.
    await set_seaweed_ready(kube, ns, name)
    ai = await until_condition(kube, ns, name, "Ready", "Unknown", "WaitingForS3Endpoint")
    assert "endpoints" not in ai["status"]
    await create_service(kube, ns, f"{name}-s3")  # noticed by the 30 s recheck: nudge it
    await kube.merge_patch(
        SEAWEEDS,
        ObjectKey(ns, name),
        {"metadata": {"annotations": {"nudge": "1"}}},
        field_manager="test",
    )
    ai = await until_condition(kube, ns, name, "Ready", "True", "SeaweedReady")
    url = f"http://{name}-s3.{ns}.svc:8333"
    assert ai["status"]["endpoints"] == [
        {
            "name": "s3",
            "url": url,
            "type": "s3",
            "notes": "In-cluster SeaweedFS S3 gateway (port 8333)",
        }
    ]
    assert "helmReleaseRef" not in ai["status"]
    assert storage_events(mock, ns, name, "managedStorage/") == []  # no credentials yet

    # Credentials: exactly one managed-storage event, then the annotation.
    await put_credentials(kube, ns, "creds", name, phase="Ready")
    events = await wait_for(
        lambda: storage_events(mock, ns, name, "managedStorage/"), "managed-storage event"
    )
    key = short_hash(ACCESS, SECRET)
    assert len(events) == 1
    event = events[0]
    assert event["eventKey"] == f"managedStorage/{ns}/{name}/Ready/True/{key}"
    assert event["kind"] == "ConditionTransition"
    assert event["conditions"][0]["reason"] == "ManagedStorageReady"
    assert event["endpoints"] == [{"name": "s3", "url": url}]
    assert event["managedStorage"] == {
        "accessKeyId": ACCESS,
        "secretAccessKey": SECRET,
        "bucketName": name,
    }
    ai = await eventually(lambda: _annotated(kube, ns, name, key), what="reported annotation")
    assert condition(ai, "Ready")["reason"] == "SeaweedReady"  # ManagedStorageReady: wire only
    endpoints = await wait_for(
        lambda: storage_events(mock, ns, name, "endpoints/"), "endpoints event"
    )
    assert endpoints[0]["endpoints"] == [{"name": "s3", "url": url}]

    # Restart: the new operator does not post it again (any repost would now be stored).
    await operator.stop()
    forget_keys(mock)
    await operator.start()
    # Let the new operator reconcile the instance first: a repost would be buffered now,
    # ahead of the rotated report below.
    await wait_for(lambda: ObjectKey(ns, name) in operator.reconciled, "reconcile after restart")
    # Rotate the keys: a new report (and nothing else) follows.
    await put_credentials(kube, ns, "creds", name, phase="Ready", secret="rotated-secret")
    await kube.merge_patch(
        S3_CREDENTIALS,
        ObjectKey(ns, "creds"),
        {"metadata": {"annotations": {"rotated": "1"}}},
        field_manager="test",
    )
    new_key = short_hash(ACCESS, "rotated-secret")
    await eventually(lambda: _annotated(kube, ns, name, new_key), what="rotated annotation")
    keys = [e["eventKey"] for e in storage_events(mock, ns, name, "managedStorage/")]
    assert keys == [event["eventKey"], f"managedStorage/{ns}/{name}/Ready/True/{new_key}"]

    # Secret values never reach logs or Kubernetes Events.
    await operator.stop()
    out, err = capfd.readouterr()
    recorded = await kube.list(EVENTS, ns)
    for secret in (SECRET, "rotated-secret"):
        assert secret not in out
        assert secret not in err
        assert secret not in str(recorded)


async def _annotated(kube: KubeClient, ns: str, name: str, value: str) -> dict[str, Any] | None:
    ai = await instance(kube, ns, name)
    return ai if (ai["metadata"].get("annotations") or {}).get(REPORTED) == value else None


async def test_deletion_removes_the_seaweed_cr_then_the_instance(
    operator: Operator, kube: KubeClient, kube_namespace: str
) -> None:
    ns = kube_namespace
    await kube.create(APPLICATION_INSTANCES, seaweedfs("sw", ns), field_manager="test")
    await eventually(lambda: kube.get(SEAWEEDS, ObjectKey(ns, "sw")), what="Seaweed CR")
    await kube.delete(APPLICATION_INSTANCES, ObjectKey(ns, "sw"))
    await eventually(lambda: gone(kube, APPLICATION_INSTANCES, ObjectKey(ns, "sw")), what="AI gone")
    assert await gone(kube, SEAWEEDS, ObjectKey(ns, "sw"))


# -- legacy HelmRelease (Go defect 2) ------------------------------------------------------


def legacy_release(ns: str, name: str, owner: dict[str, Any] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": ns,
        "labels": {"app.vworkspace.io/application-instance": name},
    }
    if owner is not None:
        meta["ownerReferences"] = [
            {
                "apiVersion": owner["apiVersion"],
                "kind": owner["kind"],
                "name": name,
                "uid": owner["metadata"]["uid"],
                "controller": True,
            }
        ]
    return {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": meta,
        "spec": {
            "interval": "5m",
            "chart": {
                "spec": {"chart": "seaweedfs", "sourceRef": {"kind": "HelmRepository", "name": "x"}}
            },
        },
    }


async def test_a_legacy_helm_release_blocks_until_it_is_removed(
    operator: Operator, kube: KubeClient, kube_namespace: str
) -> None:
    ns = kube_namespace
    ai = await kube.create(APPLICATION_INSTANCES, seaweedfs("legacy", ns), field_manager="test")
    await kube.create(HELM_RELEASES, legacy_release(ns, "legacy", ai), field_manager="test")
    # The instance may have raced ahead of the HelmRelease: recreate the situation cleanly.
    with contextlib.suppress(NotFoundError):
        await kube.delete(SEAWEEDS, ObjectKey(ns, "legacy"))
    await kube.merge_patch(
        APPLICATION_INSTANCES,
        ObjectKey(ns, "legacy"),
        {"metadata": {"labels": {"nudge": "1"}}},
        field_manager="test",
    )
    ai = await until_condition(kube, ns, "legacy", "Ready", "False", "HelmMigrationRequired")
    assert condition(ai, "Blocked")["status"] == "True"
    assert await gone(kube, SEAWEEDS, ObjectKey(ns, "legacy"))
    assert not await gone(kube, HELM_RELEASES, ObjectKey(ns, "legacy"))  # never deleted by us
    # Removing the HelmRelease is noticed without any other change (Go waited forever).
    await kube.delete(HELM_RELEASES, ObjectKey(ns, "legacy"))
    await eventually(lambda: kube.get(SEAWEEDS, ObjectKey(ns, "legacy")), what="Seaweed CR")
    await until_condition(kube, ns, "legacy", "Blocked", "False", "Unblocked")


async def test_deleting_a_blocked_instance_removes_the_legacy_release(
    operator: Operator, kube: KubeClient, kube_namespace: str
) -> None:
    ns = kube_namespace
    await kube.create(HELM_RELEASES, legacy_release(ns, "old"), field_manager="test")
    await kube.create(APPLICATION_INSTANCES, seaweedfs("old", ns), field_manager="test")
    await until_condition(kube, ns, "old", "Ready", "False", "HelmMigrationRequired")
    await kube.delete(APPLICATION_INSTANCES, ObjectKey(ns, "old"))
    await eventually(
        lambda: gone(kube, APPLICATION_INSTANCES, ObjectKey(ns, "old")), what="AI gone"
    )
    assert await gone(kube, HELM_RELEASES, ObjectKey(ns, "old"))
    assert await gone(kube, SEAWEEDS, ObjectKey(ns, "old"))


# -- Go defect 7: deletion never loops ------------------------------------------------------


async def test_an_instance_with_an_invalid_release_is_blocked_and_deletes_at_once(
    operator: Operator, kube: KubeClient, kube_namespace: str
) -> None:
    ns = kube_namespace
    bad = seaweedfs("bad", ns)
    bad["spec"]["release"]["namespace"] = "elsewhere"
    await kube.create(APPLICATION_INSTANCES, bad, field_manager="test")
    ai = await until_condition(kube, ns, "bad", "Ready", "False", "ValidationFailed")
    assert "spec.release.namespace" in condition(ai, "Ready")["message"]
    await kube.delete(APPLICATION_INSTANCES, ObjectKey(ns, "bad"))
    await eventually(
        lambda: gone(kube, APPLICATION_INSTANCES, ObjectKey(ns, "bad")), what="AI gone"
    )


# -- Go defect 8: failures are reported, and a later failure again -------------------------


async def test_failed_credentials_are_reported_and_a_later_failure_again(
    operator: Operator, mock: MockControlPlane, kube: KubeClient, kube_namespace: str
) -> None:
    ns, name = kube_namespace, "flaky"
    await kube.create(APPLICATION_INSTANCES, seaweedfs(name, ns), field_manager="test")
    await eventually(lambda: kube.get(SEAWEEDS, ObjectKey(ns, name)), what="Seaweed CR")
    await create_service(kube, ns, f"{name}-s3")
    await put_credentials(kube, ns, "c", name, phase="Failed")
    await set_seaweed_ready(kube, ns, name)
    await until_condition(kube, ns, name, "Ready", "True", "SeaweedReady")
    first = await wait_for(
        lambda: storage_events(mock, ns, name, "ManagedStorageFailed/"), "first failure"
    )
    assert first[0]["kind"] == "ManagedStorageFailed"
    assert first[0]["conditions"][0]["reason"] == "ManagedStorageFailed"
    await eventually(lambda: _annotation(kube, ns, name, REPORTED_FAILED), what="failed mark")

    await put_credentials(kube, ns, "c", name, phase="Ready")  # recovered: reported, re-armed
    await wait_for(lambda: storage_events(mock, ns, name, "managedStorage/"), "storage event")
    await eventually(lambda: _no_annotation(kube, ns, name, REPORTED_FAILED), what="re-armed")
    await put_credentials(kube, ns, "c", name, phase="Failed")  # fails again: a new report
    failures = await wait_for(
        lambda: [e for e in storage_events(mock, ns, name, "ManagedStorageFailed/")][1:],
        "second failure",
    )
    assert failures[0]["eventKey"] != first[0]["eventKey"]


async def _annotation(kube: KubeClient, ns: str, name: str, annotation: str) -> str | None:
    ai = await instance(kube, ns, name)
    value = (ai["metadata"].get("annotations") or {}).get(annotation)
    return str(value) if value else None


async def _no_annotation(kube: KubeClient, ns: str, name: str, annotation: str) -> bool:
    return await _annotation(kube, ns, name, annotation) is None


# -- Go defect 1: the watches follow the CRDs at run time ------------------------------------


async def _delete_crds(control_plane: ControlPlane, kube: KubeClient) -> None:
    rest = control_plane.rest()
    for crd in load_crds([FIXTURES]):
        with contextlib.suppress(Exception):
            rest.delete(f"{CRD_PATH}/{crd['metadata']['name']}")

    async def unserved() -> bool:
        try:
            await kube.list(SEAWEEDS)
        except NotFoundError:
            return True
        return False

    await eventually(unserved, timeout=60, what="Seaweed CRD gone")


async def test_the_operator_starts_without_the_crds_and_picks_them_up_later(
    control_plane: ControlPlane,
    kube: KubeClient,
    mock: MockControlPlane,
    third_party_crds: list[str],
    vworkspace_crds: list[str],
    kube_namespace: str,
) -> None:
    ns = kube_namespace
    await _delete_crds(control_plane, kube)
    op = Operator(kube, mock, ns)
    await op.start()
    try:
        await kube.create(APPLICATION_INSTANCES, seaweedfs("early", ns), field_manager="test")
        ai = await until_condition(kube, ns, "early", "Ready", "False", "MissingDependencies")
        assert "S3Credentials" in condition(ai, "Ready")["message"]
        # Deleting while the CRDs are missing does not loop (Go defect 7).
        await kube.create(APPLICATION_INSTANCES, seaweedfs("doomed", ns), field_manager="test")
        await until_condition(kube, ns, "doomed", "Ready", "False", "MissingDependencies")
        await kube.delete(APPLICATION_INSTANCES, ObjectKey(ns, "doomed"))
        await eventually(
            lambda: gone(kube, APPLICATION_INSTANCES, ObjectKey(ns, "doomed")), what="AI gone"
        )
        install_crds(control_plane.rest(), load_crds([FIXTURES]))
        # Without a restart: the engine registers, the Seaweed watch runs (a status change
        # of the CR reaches the instance).
        await eventually(
            lambda: kube.get(SEAWEEDS, ObjectKey(ns, "early")),
            timeout=30,
            what="Seaweed CR after the CRDs appeared",
        )
        await set_seaweed_ready(kube, ns, "early", status="False")
        await until_condition(kube, ns, "early", "Ready", "False", "SeaweedFailed")
    finally:
        await op.stop()
