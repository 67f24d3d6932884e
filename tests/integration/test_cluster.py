"""The Cluster reconciler against the real API server and a strict mock control plane."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import itertools
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from vworkspace.api.meta import ObjectKey
from vworkspace.app.hardening_flags import Hardening
from vworkspace.app.wiring import AgentSettings, OperatorSettings, build_manager, served_kinds
from vworkspace.kube.objects import update_status
from vworkspace.kube.rest.client import KubeClient
from vworkspace.kube.rest.errors import NotFoundError
from vworkspace.kube.rest.resources import APPLICATION_INSTANCES, CLUSTERS, SECRETS
from vworkspace.mockcontrolplane import Fault, MockControlPlane

from .test_reconcilers import eventually

pytestmark = pytest.mark.integration


class Running:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def mock() -> AsyncIterator[MockControlPlane]:
    async with MockControlPlane(strict_registration=True) as server:
        yield server


@pytest.fixture
async def operator(
    kube: KubeClient,
    mock: MockControlPlane,
    vworkspace_crds: list[str],
    kube_namespace: str,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Running]:
    registry = CollectorRegistry()
    tiny = request.node.get_closest_marker("tiny_event_buffer") is not None
    # The mock is plain http on 127.0.0.1, which the operator accepts only when told so.
    https_only = request.node.get_closest_marker("https_only") is not None
    agent = AgentSettings(
        poll_interval=1,
        heartbeat_interval=1.0,
        event_buffer_size=3 if tiny else 1000,
        hardening=Hardening(allow_insecure_control_plane=not https_only),
    )  # Secret-driven
    settings = OperatorSettings(namespace=kube_namespace, agent=agent)
    async with aiohttp.ClientSession() as http:
        manager = build_manager(
            settings, kube, registry=registry, served=await served_kinds(kube), http=http
        )
        stop = asyncio.Event()
        task = asyncio.create_task(manager.run(stop))
        for informer in manager.informers:
            await asyncio.wait_for(informer.wait_synced(), 20)
        try:
            yield Running(registry)
        finally:
            with contextlib.suppress(NotFoundError):  # let the operator release its finalizer
                await kube.delete(CLUSTERS, ObjectKey(None, kube_namespace))
            with contextlib.suppress(AssertionError):
                await eventually(lambda: _gone(kube, kube_namespace), timeout=10)
            stop.set()
            assert await asyncio.wait_for(task, 30) == 0


async def _gone(kube: KubeClient, name: str) -> bool:
    try:
        await kube.get(CLUSTERS, ObjectKey(None, name))
    except NotFoundError:
        return True
    return False


def cond(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(
        (c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == type_), {}
    )


async def cluster_where(
    kube: KubeClient, name: str, **expected: tuple[str, str]
) -> dict[str, Any] | None:
    obj = await kube.get(CLUSTERS, ObjectKey(None, name))
    ok = all(
        (cond(obj, t).get("status"), cond(obj, t).get("reason")) == v for t, v in expected.items()
    )
    return obj if ok else None


async def register(
    kube: KubeClient, mock: MockControlPlane, name: str, namespace: str, token: str = "reg-token-1"
) -> dict[str, Any]:
    mock.add_registration_token(token, f"cluster-{name}")
    await kube.create(
        SECRETS,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "reg", "namespace": namespace},
            "stringData": {"registrationToken": token},
        },
        field_manager="test",
    )
    await kube.create(
        CLUSTERS,
        {
            "apiVersion": "ops.vworkspace.io/v1alpha1",
            "kind": "Cluster",
            "metadata": {"name": name},
            "spec": {
                "controlPlaneEndpoint": mock.url,
                "registrationTokenSecretRef": {"name": "reg"},
            },
        },
        field_manager="test",
    )
    try:
        result: dict[str, Any] = await eventually(
            lambda: cluster_where(
                kube,
                name,
                Connected=("True", "RoundTripOK"),
                Authenticated=("True", "CredentialAccepted"),
            ),
            timeout=20,
            what="Connected",
        )
    except AssertionError:
        current = await kube.get(CLUSTERS, ObjectKey(None, name))
        raise AssertionError(
            f"not connected: {current.get('spec')} {current.get('status')}"
        ) from None
    return result


def placeholder(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps.vworkspace.io/v1alpha1",
        "kind": "ApplicationInstance",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"appRef": {"catalogId": "x"}, "mode": "placeholder"},
    }


async def test_registration_from_a_token_secret_end_to_end(
    operator: Running, kube: KubeClient, mock: MockControlPlane, kube_namespace: str
) -> None:
    cluster = await register(kube, mock, kube_namespace, kube_namespace)
    assert cluster["status"]["phase"] == "Connected"
    assert cluster["spec"]["clusterId"] == f"cluster-{kube_namespace}"
    assert cluster["status"]["credentialStatus"]["registrationTokenConsumed"] is True
    assert len(cluster["status"]["observedToken"]) == 16
    secret = await kube.get(SECRETS, ObjectKey(kube_namespace, "vworkspace-agent-credentials"))
    assert base64.b64decode(secret["data"]["cluster-id"]).decode() == f"cluster-{kube_namespace}"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == cluster["metadata"]["uid"]
    assert mock.events(
        f"cluster-{kube_namespace}", kind="Cluster"
    )  # heartbeats and condition events arrive
    # The agent now serves jobs with the credentials the registration wrote.
    await mock.enqueue(
        f"cluster-{kube_namespace}",
        {"id": "after-reg", "kind": "apply", "payload": placeholder("reg-app", kube_namespace)},
    )
    await eventually(
        lambda: asyncio.sleep(0, mock.job_result("after-reg")), timeout=20, what="job result"
    )
    assert mock.job_result("after-reg")["outcome"] == "succeeded"  # type: ignore[index]


async def test_one_heartbeat_per_interval_not_one_more_per_status_write(
    operator: Running, kube: KubeClient, mock: MockControlPlane, kube_namespace: str
) -> None:
    # Each heartbeat writes status.lastHeartbeat; without an update predicate that write came
    # back as a watch event and sent a second heartbeat ~10 ms later (docs/api.md, deviation 18).
    registered = datetime.datetime.now(datetime.UTC)
    await register(kube, mock, kube_namespace, kube_namespace)

    def heartbeats(since: datetime.datetime) -> list[datetime.datetime]:
        return sorted(
            t
            for t in (
                datetime.datetime.fromisoformat(e["timestamp"])
                for e in mock.events(f"cluster-{kube_namespace}", kind="Cluster")
                if e["kind"] == "ClusterHeartbeat"
            )
            if t >= since
        )

    async def at_least(count: int, since: datetime.datetime) -> list[datetime.datetime] | None:
        seen = heartbeats(since)
        return seen if len(seen) >= count else None

    # Registration's own spec and finalizer writes are changes worth a reconcile (and a
    # heartbeat each); the window starts at the second heartbeat after registration.
    settled = (await eventually(lambda: at_least(2, registered), what="two heartbeats"))[1]
    # heartbeat_interval is 1 s here: four more heartbeats, each about a second after the last.
    window = await eventually(lambda: at_least(5, settled), timeout=20, what="five heartbeats")
    gaps = [round((b - a).total_seconds(), 3) for a, b in itertools.pairwise(window)]
    assert min(gaps) >= 0.5, gaps  # a heartbeat per status write would come ~10 ms after one


async def test_a_bad_registration_token_is_a_clear_condition(
    operator: Running, kube: KubeClient, mock: MockControlPlane, kube_namespace: str
) -> None:
    await kube.create(
        CLUSTERS,
        {
            "apiVersion": "ops.vworkspace.io/v1alpha1",
            "kind": "Cluster",
            "metadata": {"name": kube_namespace},
            "spec": {"controlPlaneEndpoint": mock.url, "registrationToken": "not-a-real-token"},
        },
        field_manager="test",
    )
    failed = await eventually(
        lambda: cluster_where(kube, kube_namespace, Authenticated=("False", "RegistrationFailed")),
        what="RegistrationFailed",
    )
    assert failed["status"]["phase"] == "Error"
    assert "unknown or already used registration token" in cond(failed, "Authenticated")["message"]
    assert cond(failed, "Connected")["reason"] == "RegistrationPending"
    registers = mock.state.requests
    # Kept: an absence over a window (no retry loop); the retry is due in 30 s, so any positive
    # signal of the next attempt would take that long.
    await asyncio.sleep(3)
    assert mock.state.requests - registers <= 1  # retried every 30 s, not in a loop


@pytest.mark.https_only
async def test_a_plain_http_endpoint_is_refused_without_the_insecure_flag(
    operator: Running, kube: KubeClient, mock: MockControlPlane, kube_namespace: str
) -> None:
    """Issue 24, F8: a Cluster re-registered the agent at any endpoint, http:// included."""
    mock.add_registration_token("http-token", f"cluster-{kube_namespace}")
    await kube.create(
        CLUSTERS,
        {
            "apiVersion": "ops.vworkspace.io/v1alpha1",
            "kind": "Cluster",
            "metadata": {"name": kube_namespace},
            "spec": {"controlPlaneEndpoint": mock.url, "registrationToken": "http-token"},
        },
        field_manager="test",
    )
    failed = await eventually(
        lambda: cluster_where(kube, kube_namespace, Authenticated=("False", "RegistrationFailed")),
        what="RegistrationFailed",
    )
    message = cond(failed, "Authenticated")["message"]
    assert message.startswith("registration failed: spec.controlPlaneEndpoint must be an https://")
    assert "--allow-insecure-control-plane" in message
    assert failed["status"]["phase"] == "Error"
    assert mock.state.requests == 0  # the token never left the cluster
    assert "http-token" in mock.state.registration_tokens  # and is still unused


async def test_rotation_switches_tokens_without_a_failed_job(
    operator: Running, kube: KubeClient, mock: MockControlPlane, kube_namespace: str
) -> None:
    await register(kube, mock, kube_namespace, kube_namespace)
    cluster_id = f"cluster-{kube_namespace}"
    old = mock.state.token_for(cluster_id)
    await kube.merge_patch(
        CLUSTERS,
        ObjectKey(None, kube_namespace),
        {"spec": {"rotateCredentials": True}},
        field_manager="test",
    )
    await eventually(
        lambda: _rotated(kube, kube_namespace), timeout=45, what="rotateCredentials cleared"
    )
    new = mock.state.token_for(cluster_id)
    assert new != old
    assert old not in mock.state.bearer_tokens  # invalid at once
    secret = await kube.get(SECRETS, ObjectKey(kube_namespace, "vworkspace-agent-credentials"))
    assert base64.b64decode(secret["data"]["token"]).decode() == new
    for index in range(3):
        await mock.enqueue(
            cluster_id,
            {
                "id": f"rot-{index}",
                "kind": "apply",
                "payload": placeholder(f"rot-{index}", kube_namespace),
            },
        )
    for index in range(3):
        await eventually(
            lambda i=index: asyncio.sleep(0, mock.job_result(f"rot-{i}")),
            timeout=20,
            what=f"rot-{index}",
        )
        assert mock.job_result(f"rot-{index}")["outcome"] == "succeeded"  # type: ignore[index]
    assert operator.metric("vworkspace_agent_jobs_total", outcome="failed") == 0
    await eventually(
        lambda: asyncio.sleep(
            0,
            mock.events(cluster_id, kind="Cluster")
            and [
                e
                for e in mock.events(cluster_id, kind="Cluster")
                if e["kind"] == "CredentialRotated"
            ],
        ),
        what="CredentialRotated",
    )


async def _rotated(kube: KubeClient, name: str) -> bool:
    obj = await kube.get(CLUSTERS, ObjectKey(None, name))
    return obj["spec"].get("rotateCredentials") is False


@pytest.mark.tiny_event_buffer
async def test_an_outage_shows_as_disconnected_with_the_exact_drop_count_then_recovers(
    operator: Running, kube: KubeClient, mock: MockControlPlane, kube_namespace: str
) -> None:
    await register(kube, mock, kube_namespace, kube_namespace)
    mock.state.inject(Fault("/events", status=503, count=100_000))
    for index in range(4):  # each placeholder makes 4 condition transitions: the buffer holds 3
        await kube.create(
            APPLICATION_INSTANCES, placeholder(f"o-{index}", kube_namespace), field_manager="test"
        )
    down = await eventually(
        lambda: cluster_where(
            kube,
            kube_namespace,
            Connected=("False", "ControlPlaneUnreachable"),
            Disconnected=("True", "NoRecentRoundTrip"),
            BufferOverflow=("True", "EventBufferFull"),
        ),
        timeout=20,
        what="Disconnected with overflow",
    )
    dropped = operator.metric("vworkspace_operator_event_buffer_dropped_total")
    assert dropped > 0
    message = cond(down, "BufferOverflow")["message"]
    assert int(message.split()[0]) <= dropped  # the count at the time of the status write
    assert down["status"]["phase"] == "Disconnected"
    mock.state.faults.clear()
    await eventually(
        lambda: cluster_where(
            kube,
            kube_namespace,
            Connected=("True", "RoundTripOK"),
            BufferOverflow=("False", "BufferDrained"),
        ),
        timeout=20,
        what="recovered",
    )

    async def final_state_delivered() -> bool:
        events = mock.events(
            f"cluster-{kube_namespace}", kind="ApplicationInstance", namespace=kube_namespace
        )
        return all(  # the snapshot re-sync delivered every instance's final Ready=True
            any(
                e["resourceRef"]["name"] == f"o-{index}"
                and e["conditions"][0]["type"] == "Ready"
                and e["conditions"][0]["status"] == "True"
                for e in events
            )
            for index in range(4)
        )

    await eventually(final_state_delivered, timeout=10, what="final state at the control plane")


# -- drop-in behaviour of the Go agent (issue 19) -----------------------------------------------


async def test_the_agent_follows_the_clusters_credentials_secret_ref(
    operator: Running, kube: KubeClient, mock: MockControlPlane, kube_namespace: str
) -> None:
    # Credentials in a Secret of another name than --agent-credentials-secret, named by the
    # Cluster's status.credentialsSecretRef (as a Go install or a restore may leave them).
    cluster_id = f"cluster-follow-{kube_namespace}"[:60]
    mock.set_bootstrap_token(cluster_id, "follow-token")
    await kube.create(
        SECRETS,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds-from-go", "namespace": kube_namespace},
            "stringData": {
                "control-plane-base-url": mock.url,
                "cluster-id": cluster_id,
                "token": "follow-token",
            },
        },
        field_manager="test",
    )
    cluster = await kube.create(
        CLUSTERS,
        {
            "apiVersion": "ops.vworkspace.io/v1alpha1",
            "kind": "Cluster",
            "metadata": {"name": kube_namespace},
            "spec": {"controlPlaneEndpoint": mock.url},
        },
        field_manager="test",
    )
    await update_status(
        kube,
        CLUSTERS,
        ObjectKey(None, kube_namespace),
        lambda obj: {
            **(obj.get("status") or {}),
            "credentialsSecretRef": {"name": "creds-from-go", "namespace": kube_namespace},
        },
        field_manager="test",
        current=cluster,
    )
    await mock.enqueue(
        cluster_id,
        {"id": "followed", "kind": "apply", "payload": placeholder("followed", kube_namespace)},
    )
    await eventually(
        lambda: asyncio.sleep(0, mock.job_result("followed")), timeout=20, what="job result"
    )
    assert mock.job_result("followed")["outcome"] == "succeeded"  # type: ignore[index]
    # The default Secret was never written: the agent used the one the Cluster names.
    with pytest.raises(NotFoundError):
        await kube.get(SECRETS, ObjectKey(kube_namespace, "vworkspace-agent-credentials"))


async def test_the_agent_stops_polling_while_its_cluster_is_being_deleted(
    operator: Running, kube: KubeClient, mock: MockControlPlane, kube_namespace: str
) -> None:
    await register(kube, mock, kube_namespace, kube_namespace)
    key = ObjectKey(None, kube_namespace)
    connectivity = ("vworkspace_operator_connectivity_state", {"mode": "pull"})
    await eventually(
        lambda: asyncio.sleep(0, operator.metric(connectivity[0], **connectivity[1]) == 1),
        what="connected",
    )
    # Another finalizer keeps the Cluster in deletion after the operator has released its own.
    cluster = await kube.get(CLUSTERS, key)
    await kube.apply(
        CLUSTERS,
        {
            "apiVersion": "ops.vworkspace.io/v1alpha1",
            "kind": "Cluster",
            "metadata": {"name": kube_namespace, "finalizers": ["test.vworkspace.io/hold"]},
        },
        field_manager="test-hold",
    )
    try:
        await kube.delete(CLUSTERS, key)
        # The poller is in its stopped state (-1, not 0 "reconnecting"), and fetches nothing.
        await eventually(
            lambda: asyncio.sleep(0, operator.metric(connectivity[0], **connectivity[1]) == -1),
            what="the agent stopped",
        )
        cluster_id = cluster["spec"]["clusterId"]
        await mock.enqueue(
            cluster_id,
            {"id": "too-late", "kind": "apply", "payload": placeholder("late", kube_namespace)},
        )
        assert mock.pending_count(cluster_id) == 1
    finally:
        await kube.apply(
            CLUSTERS,
            {
                "apiVersion": "ops.vworkspace.io/v1alpha1",
                "kind": "Cluster",
                "metadata": {"name": kube_namespace, "finalizers": []},
            },
            field_manager="test-hold",
        )
