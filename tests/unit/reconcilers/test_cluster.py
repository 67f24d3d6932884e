"""The Cluster reconcilers on the fake API: the agent-less InitialReconciler (finalizer, the first
Ready=Unknown, the Accepted Event, deletion) and the ClusterReconciler with a fake control-plane
gateway (registration, an endpoint refused before the token leaves, heartbeat, rotation,
BufferOverflow, deletion)."""

from __future__ import annotations

import base64

from vworkspace.api.constants import CLUSTER_FINALIZER
from vworkspace.api.meta import ObjectKey
from vworkspace.controllers.cluster import ClusterReconciler, fingerprint
from vworkspace.controllers.initial import InitialReconciler
from vworkspace.kube.rest.resources import CLUSTERS, SECRETS
from vworkspace.kube.runtime.controller import Result

from .conftest import FakeGateway, World

KEY = ObjectKey(None, "this")
ENDPOINT = "https://cp.example.com"


def cluster(**spec: object) -> dict[str, object]:
    return {
        "apiVersion": CLUSTERS.api_version,
        "kind": "Cluster",
        "metadata": {"name": "this"},
        "spec": dict(spec),
    }


# ---- InitialReconciler ------------------------------------------------------------------------


async def test_initial_takes_ownership_and_says_it_has_seen_the_cluster(
    world: World, initial_clusters: InitialReconciler
) -> None:
    await world.create(CLUSTERS, cluster())
    assert await initial_clusters.reconcile(KEY) == Result.done()
    await world.sync()
    obj = world.get(CLUSTERS, "this", None)
    assert obj["metadata"]["finalizers"] == [CLUSTER_FINALIZER]
    assert world.conditions(obj) == {"Ready": ("Unknown", "Reconciling")}
    assert obj["status"]["conditions"][0]["observedGeneration"] == 1
    assert world.events() == [("this", "Normal", "Accepted")]


async def test_initial_steady_state_makes_no_call(
    world: World, initial_clusters: InitialReconciler
) -> None:
    await world.create(CLUSTERS, cluster())
    await initial_clusters.reconcile(KEY)
    await world.sync()
    requests = len(world.api.requests)
    assert await initial_clusters.reconcile(KEY) == Result.done()
    assert len(world.api.requests) == requests


async def test_initial_releases_the_finalizer_on_deletion(
    world: World, initial_clusters: InitialReconciler
) -> None:
    await world.create(CLUSTERS, cluster())
    await initial_clusters.reconcile(KEY)
    await world.api.delete(CLUSTERS, KEY)
    await world.sync()
    assert await initial_clusters.reconcile(KEY) == Result.done()
    assert world.api.stored(CLUSTERS, KEY) is None


# ---- ClusterReconciler ------------------------------------------------------------------------


async def test_registration_exchanges_the_token_then_the_heartbeat_connects(
    world: World, clusters: ClusterReconciler, gateway: FakeGateway
) -> None:
    await world.create(CLUSTERS, cluster(controlPlaneEndpoint=ENDPOINT, registrationToken="tok"))
    assert await clusters.reconcile(KEY) == Result.after(60.0)
    await world.sync()
    obj = world.get(CLUSTERS, "this", None)
    assert gateway.registered == [(ENDPOINT, "tok")]
    assert obj["spec"] == {"controlPlaneEndpoint": ENDPOINT, "clusterId": "c-issued"}
    assert obj["status"]["phase"] == "Connected"
    assert obj["status"]["observedToken"] == fingerprint("tok")
    assert world.conditions(obj)["Authenticated"] == ("True", "CredentialAccepted")
    assert world.conditions(obj)["Connected"] == ("True", "RoundTripOK")
    assert world.conditions(obj)["BufferOverflow"] == ("False", "BufferDrained")
    assert ("this", "Warning", "DeprecatedField") in world.events()


async def test_a_token_from_a_secret_is_exchanged_once(
    world: World, clusters: ClusterReconciler, gateway: FakeGateway
) -> None:
    world.api.add(
        SECRETS,
        {
            "metadata": {"name": "token", "namespace": "vworkspace-system"},
            "data": {"registrationToken": base64.b64encode(b"tok").decode()},
        },
    )
    ref = {"name": "token"}
    await world.create(
        CLUSTERS, cluster(controlPlaneEndpoint=ENDPOINT, registrationTokenSecretRef=ref)
    )
    await clusters.reconcile(KEY)
    await world.sync()
    await world.clock.advance(60)
    await clusters.reconcile(KEY)
    assert gateway.registered == [(ENDPOINT, "tok")]


async def test_a_plain_http_endpoint_is_refused_before_the_token_is_sent(
    world: World, clusters: ClusterReconciler, gateway: FakeGateway
) -> None:
    await world.create(
        CLUSTERS, cluster(controlPlaneEndpoint="http://cp.example.com", registrationToken="tok")
    )
    assert await clusters.reconcile(KEY) == Result.after(30.0)
    obj = world.get(CLUSTERS, "this", None)
    assert gateway.registered == []
    assert obj["status"]["phase"] == "Error"
    assert world.conditions(obj)["Authenticated"] == ("False", "RegistrationFailed")


async def test_a_missing_token_secret_keeps_the_cluster_pending(
    world: World, clusters: ClusterReconciler, gateway: FakeGateway
) -> None:
    ref = {"name": "absent"}
    await world.create(
        CLUSTERS, cluster(controlPlaneEndpoint=ENDPOINT, registrationTokenSecretRef=ref)
    )
    assert await clusters.reconcile(KEY) == Result.after(30.0)
    obj = world.get(CLUSTERS, "this", None)
    assert obj["status"]["phase"] == "Pending"
    assert world.conditions(obj)["Authenticated"] == ("False", "TokenSecretMissing")


async def test_a_failed_heartbeat_disconnects(
    world: World, clusters: ClusterReconciler, gateway: FakeGateway
) -> None:
    gateway.credentials = "c-1"
    gateway.heartbeat_error = ConnectionError("control plane unreachable")
    await world.create(CLUSTERS, cluster(controlPlaneEndpoint=ENDPOINT))
    assert await clusters.reconcile(KEY) == Result.after(60.0)
    obj = world.get(CLUSTERS, "this", None)
    assert obj["status"]["phase"] == "Disconnected"
    assert world.conditions(obj)["Disconnected"] == ("True", "NoRecentRoundTrip")
    assert ("this", "Connected", "False", "ControlPlaneUnreachable") in world.reporter.reported


async def test_rotation_is_done_once_and_the_request_cleared(
    world: World, clusters: ClusterReconciler, gateway: FakeGateway
) -> None:
    gateway.credentials = "c-1"
    await world.create(CLUSTERS, cluster(controlPlaneEndpoint=ENDPOINT, rotateCredentials=True))
    await clusters.reconcile(KEY)
    await world.sync()
    obj = world.get(CLUSTERS, "this", None)
    assert gateway.rotations == 1
    assert obj["spec"]["rotateCredentials"] is False
    assert ("this", "Normal", "CredentialRotated") in world.events()


async def test_dropped_events_raise_buffer_overflow(
    world: World, clusters: ClusterReconciler, gateway: FakeGateway
) -> None:
    gateway.credentials = "c-1"
    gateway.dropped = 3
    await world.create(CLUSTERS, cluster(controlPlaneEndpoint=ENDPOINT))
    await clusters.reconcile(KEY)
    obj = world.get(CLUSTERS, "this", None)
    assert world.conditions(obj)["BufferOverflow"] == ("True", "EventBufferFull")


async def test_deleting_the_cluster_suspends_the_agent_and_releases_the_finalizer(
    world: World, clusters: ClusterReconciler, gateway: FakeGateway
) -> None:
    await world.create(CLUSTERS, cluster(controlPlaneEndpoint=ENDPOINT, registrationToken="tok"))
    await clusters.reconcile(KEY)
    await world.api.delete(CLUSTERS, KEY)
    await world.sync()
    assert await clusters.reconcile(KEY) == Result.done()
    assert gateway.suspended == ["Cluster this is being deleted"]
    assert world.api.stored(CLUSTERS, KEY) is None
