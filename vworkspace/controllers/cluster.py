"""Cluster reconciler: registration, rotation, heartbeat, BufferOverflow.

Step by step, with the reason each case writes: docs/pull-mode.md, "The Cluster reconcile, step
by step".

It talks to the control plane only through :class:`ControlPlaneGateway`, which the agent
implements (controllers never import the agent). Order per reconcile: finalizer; registration
(a one-time token from ``spec.registrationTokenSecretRef`` or the deprecated inline
``spec.registrationToken`` is exchanged for credentials, which are written to the credentials
Secret owned by the Cluster; existing credentials are adopted instead of re-registering; the
endpoint, ``spec.controlPlaneEndpoint``, must be ``https://`` unless the operator runs with
``--allow-insecure-control-plane``, else ``Authenticated=False/RegistrationFailed`` names the
field and the token is never sent); rotation when ``spec.rotateCredentials``; a heartbeat that
sets Connected / Disconnected / Authenticated; ``BufferOverflow`` from the event batcher's drop
count. The Cluster is looked at again every ``heartbeat_interval``.

A reconcile decides first (the steps above, talking to the control plane), then writes in two
explained steps: the **spec write** (one merge patch of what registration and rotation consumed:
``spec.clusterId`` filled, an inline ``spec.registrationToken`` cleared,
``spec.rotateCredentials`` reset, the rotate annotation removed; none in a steady state), whose
answer is the base of the **status commit** (controllers/status.py), the one place the status is
written and its transitions reported. The spec is written first because the status records
what it consumed: a status saying "registered" beside a spec still holding the one-time token
would make the next reconcile exchange it again.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
from typing import Any, Protocol

import attrs

from vworkspace.api.cluster import ClusterView
from vworkspace.api.cluster import ConditionType as Cond
from vworkspace.api.cluster import Reason as Why
from vworkspace.api.constants import (
    ANNOTATION_ROTATE_CREDENTIALS,
    CLUSTER_FINALIZER,
    FIELD_MANAGER_OPERATOR,
)
from vworkspace.api.converter import format_time
from vworkspace.api.endpoints import endpoint_problem
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.api.names import InvalidNameError, check_subdomain
from vworkspace.api.view import mapping
from vworkspace.controllers.conditions import FALSE, TRUE
from vworkspace.controllers.initial import InitialReconciler
from vworkspace.controllers.reporting import StatusReporter
from vworkspace.controllers.status import Outcome, StatusCommit, StatusDraft
from vworkspace.kube.cache.informer import Informer
from vworkspace.kube.cache.predicates import spec_or_metadata_changed
from vworkspace.kube.clock import Clock
from vworkspace.kube.events import NORMAL, WARNING, EventRecorder
from vworkspace.kube.objects import ensure_finalizer
from vworkspace.kube.rest.api import KubeApi
from vworkspace.kube.rest.errors import NotFoundError
from vworkspace.kube.rest.resources import CLUSTERS, SECRETS
from vworkspace.kube.runtime.controller import Controller, Reconciler, Result
from vworkspace.kube.runtime.host import ControllerHost, new_controller, new_queue

DEFAULT_TOKEN_KEY = "registrationToken"
NAME = "cluster"  # the controller's name: its queue and `controller` metric label


class ControlPlaneGateway(Protocol):
    """What the Cluster reconciler needs from the agent."""

    def cluster_id(self) -> str | None:
        """The cluster id of complete stored credentials, or None without credentials."""

    async def register(self, *, endpoint: str, token: str, cluster_id: str, owner: JsonObj) -> str:
        """Exchange ``token``, persist the credentials (owned by ``owner``); return the id."""

    async def rotate(self, *, owner: JsonObj) -> None:
        """Rotate the bearer token and persist it."""

    async def heartbeat(self) -> None:
        """One round trip to the control plane; raises on failure."""

    def dropped_events(self) -> int:
        """Events the batcher dropped since its buffer last drained."""

    async def follow(self, *, name: str, namespace: str) -> bool:
        """Take the credentials from this Secret (``status.credentialsSecretRef``)."""

    def suspend(self, reason: str, *, name: str, namespace: str) -> bool:
        """Stop polling if the agent uses this credentials Secret; True when it did."""


def fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:16]


@attrs.frozen
class ClusterOptions:
    """The agent's settings the Cluster reconciler needs (``run --agent-*``)."""

    namespace: str  # of the credentials Secret
    heartbeat_interval: float = 60.0
    secret_name: str = "vworkspace-agent-credentials"
    allow_insecure_endpoint: bool = False


def setup(
    host: ControllerHost,
    *,
    client: KubeApi,
    gateway: ControlPlaneGateway | None,
    options: ClusterOptions,
    recorder: EventRecorder | None = None,
    reporter: StatusReporter | None = None,
) -> Controller:
    """The Cluster controller. Registration, rotation and heartbeats need the agent (its
    ``gateway``); without it the controller only takes ownership of its objects
    (controllers/initial.py)."""
    informer = host.informer(CLUSTERS)
    reconciler: Reconciler
    if gateway is None:
        reconciler = InitialReconciler(
            client=client,
            informer=informer,
            resource=CLUSTERS,
            finalizer=CLUSTER_FINALIZER,
            clock=host.clock,
            recorder=recorder,
        )
    else:
        reconciler = ClusterReconciler(
            client=client,
            informer=informer,
            gateway=gateway,
            namespace=options.namespace,
            clock=host.clock,
            recorder=recorder,
            reporter=reporter,
            heartbeat_interval=options.heartbeat_interval,
            secret_name=options.secret_name,
            allow_insecure_endpoint=options.allow_insecure_endpoint,
        )
    controller = new_controller(host, NAME, reconciler, new_queue(host, NAME))
    # Our own status writes are not a reason to reconcile again (kube/cache/predicates.py).
    controller.watch(informer, on_update=spec_or_metadata_changed)
    return controller


class _TokenError(Exception):
    pass


@attrs.define
class _SpecWrite:
    """What a reconcile consumed from the Cluster's spec and metadata (written before the
    status, see the module docstring), and the Events that say so."""

    spec: dict[str, Any] = attrs.field(factory=dict)
    annotations: dict[str, Any] = attrs.field(factory=dict)
    events: list[tuple[str, str, str]] = attrs.field(factory=list)

    def patch(self) -> JsonObj | None:
        if not self.spec and not self.annotations:
            return None
        patch: JsonObj = {"spec": dict(self.spec)}
        if self.annotations:
            patch["metadata"] = {"annotations": dict(self.annotations)}
        return patch


class ClusterReconciler:
    def __init__(
        self,
        *,
        client: KubeApi,
        informer: Informer,
        gateway: ControlPlaneGateway,
        namespace: str,
        clock: Clock,
        recorder: EventRecorder | None = None,
        reporter: StatusReporter | None = None,
        heartbeat_interval: float = 60.0,
        secret_name: str = "vworkspace-agent-credentials",
        allow_insecure_endpoint: bool = False,
    ) -> None:
        self._client = client
        self._informer = informer
        self._gateway = gateway
        self._namespace = namespace
        self._clock = clock
        self._recorder = recorder
        self.heartbeat_interval = heartbeat_interval
        self._secret_name = secret_name
        # http:// endpoints only with --allow-insecure-control-plane (api/endpoints.py).
        self._allow_insecure = allow_insecure_endpoint
        # lastHeartbeat alone changing still counts (no volatile fields): it is how people see
        # the heartbeat. Events are recorded by the spec write (registration, rotation).
        self._status = StatusCommit(
            client=client,
            resource=CLUSTERS,
            field_manager=FIELD_MANAGER_OPERATOR,
            reporter=reporter,
        )

    async def reconcile(self, key: ObjectKey) -> Result:
        if self._informer.store.get(key) is None:
            return Result.done()
        # Registration and rotation are not idempotent: decide on a fresh read, never on a cache
        # that may not have seen our last status write yet (a second exchange of a one-time
        # token fails). One GET per heartbeat of a singleton is cheap.
        try:
            cluster = ClusterView(await self._client.get(CLUSTERS, key))
        except NotFoundError:
            return Result.done()
        ref = mapping(cluster.status.get("credentialsSecretRef"))
        ref_key = (ref.get("name"), ref.get("namespace") or self._namespace)
        if cluster.deleting:
            # Its credentials die with it (they are owned by it): stop polling now, not when
            # the garbage collector gets to the Secret, and say so.
            if ref_key[0]:
                self._gateway.suspend(
                    f"Cluster {key.name} is being deleted", name=ref_key[0], namespace=ref_key[1]
                )
            with contextlib.suppress(NotFoundError):
                await ensure_finalizer(
                    self._client,
                    CLUSTERS,
                    cluster.raw,
                    CLUSTER_FINALIZER,
                    present=False,
                    field_manager=FIELD_MANAGER_OPERATOR,
                )
            return Result.done()
        cluster = ClusterView(
            await ensure_finalizer(
                self._client,
                CLUSTERS,
                cluster.raw,
                CLUSTER_FINALIZER,
                present=True,
                field_manager=FIELD_MANAGER_OPERATOR,
            )
        )
        if ref_key[0]:
            await self._gateway.follow(name=ref_key[0], namespace=ref_key[1])
        written = _SpecWrite()
        outcome = await self._decide(cluster, written)
        cluster = await self._write_spec(cluster, written)
        return await self._status.commit(cluster, outcome)

    async def _decide(self, cluster: ClusterView, written: _SpecWrite) -> Outcome:
        status = StatusDraft(cluster, now=self._clock.now())
        retry = await self._register(cluster, status, written)
        if retry is None:
            retry = await self._rotate(cluster, status, written)
        if retry is None:
            await self._heartbeat(status)
        dropped = self._gateway.dropped_events()
        if dropped:
            status.set_condition(
                Cond.BUFFER_OVERFLOW,
                TRUE,
                Why.EVENT_BUFFER_FULL,
                f"{dropped} events dropped since the buffer last drained",
            )
        else:
            status.set_condition(Cond.BUFFER_OVERFLOW, FALSE, Why.BUFFER_DRAINED, "")
        return Outcome(
            Result.after(retry if retry is not None else self.heartbeat_interval), status
        )

    async def _write_spec(self, cluster: ClusterView, written: _SpecWrite) -> ClusterView:
        """The spec write step: one merge patch (none in a steady state), then its Events. The
        stored answer is the base of the status commit, so that commit carries the current
        resourceVersion instead of meeting a 409 from our own patch."""
        patch = written.patch()
        if patch is not None:
            cluster = ClusterView(
                await self._client.merge_patch(
                    CLUSTERS, cluster.key, patch, field_manager=FIELD_MANAGER_OPERATOR
                )
            )
        if self._recorder is not None:
            for type_, reason, note in written.events:
                await self._recorder.record(cluster.raw, type_=type_, reason=reason, note=note)
        return cluster

    # -- registration ----------------------------------------------------------------------

    async def _token(self, cluster: ClusterView) -> str | None:
        ref = cluster.registration_token_secret_ref
        if ref:
            key = ref.get("key") or DEFAULT_TOKEN_KEY
            try:
                check_subdomain(ref.get("name"), field="spec.registrationTokenSecretRef.name")
            except InvalidNameError as err:
                raise _TokenError(str(err)) from None
            try:
                secret = await self._client.get(
                    SECRETS, ObjectKey(self._namespace, ref.get("name", ""))
                )
            except NotFoundError:
                raise _TokenError(f"Secret {self._namespace}/{ref.get('name')} not found") from None
            raw = (secret.get("data") or {}).get(key)
            value = base64.b64decode(raw).decode().strip() if raw else ""
            if not value:
                raise _TokenError(
                    f"Secret {self._namespace}/{ref.get('name')} has no value under {key!r}"
                )
            return value
        inline = str(cluster.spec.get("registrationToken") or "").strip()
        return inline or None

    async def _register(
        self, cluster: ClusterView, status: StatusDraft, written: _SpecWrite
    ) -> float | None:
        forced = str(cluster.annotations.get(ANNOTATION_ROTATE_CREDENTIALS, "")).strip().lower()
        forced_rotation = forced not in ("", "false")
        has_credentials = self._gateway.cluster_id() is not None
        try:
            token = await self._token(cluster)
        except _TokenError as err:
            if has_credentials:
                return None
            status.set("phase", "Pending")
            status.set_condition(Cond.AUTHENTICATED, FALSE, Why.TOKEN_SECRET_MISSING, str(err))
            status.set_condition(Cond.CONNECTED, FALSE, Why.REGISTRATION_PENDING, str(err))
            return 30.0
        if token is None:
            return None
        observed = status.get("observedToken") or ""
        if fingerprint(token) == observed and not forced_rotation:
            return None
        consumed = mapping(status.get("credentialStatus")).get("registrationTokenConsumed")
        if not observed and consumed and has_credentials and not forced_rotation:
            status.set("observedToken", fingerprint(token))  # adopt what exists; no second exchange
            return None
        field = "spec.controlPlaneEndpoint"
        if not cluster.control_plane_endpoint and cluster.control_plane_base_url:
            field = "spec.controlPlaneBaseUrl"
        endpoint = (cluster.control_plane_endpoint or cluster.control_plane_base_url).strip()
        try:
            if not endpoint:
                raise ValueError("spec.controlPlaneEndpoint is empty")
            problem = endpoint_problem(endpoint, field=field, allow_insecure=self._allow_insecure)
            if problem:
                # Refused before the token leaves the cluster; retried at the failure cadence
                # below (and at once when the spec changes), never in a tight loop.
                raise ValueError(problem)
            issued = await self._gateway.register(
                endpoint=endpoint,
                token=token,
                cluster_id=cluster.cluster_id,
                owner=cluster.raw,
            )
        except Exception as err:  # any failure is reported on the Cluster, then retried
            status.set("phase", "Error")
            message = f"registration failed: {err}"
            status.set_condition(Cond.AUTHENTICATED, FALSE, Why.REGISTRATION_FAILED, message)
            status.set_condition(Cond.CONNECTED, FALSE, Why.REGISTRATION_PENDING, message)
            return 30.0
        self._consumed(cluster, issued, written, forced=forced_rotation)
        now = format_time(self._clock.now())
        status.update(
            {
                "phase": "Registering",
                "observedToken": fingerprint(token),
                "credentialsSecretRef": {
                    "name": self._secret_name,
                    "namespace": self._namespace,
                },
                "credentialStatus": {
                    "secretName": self._secret_name,
                    "secretNamespace": self._namespace,
                    "registeredAt": now,
                    "registrationTokenConsumed": True,
                },
            }
        )
        status.set_condition(
            Cond.AUTHENTICATED, TRUE, Why.REGISTRATION_COMPLETE, f"registered as {issued}"
        )
        status.set_condition(Cond.CONNECTED, TRUE, Why.CONTROL_PLANE_REACHABLE, "")
        return None

    def _consumed(
        self, cluster: ClusterView, issued: str, written: _SpecWrite, *, forced: bool
    ) -> None:
        """What a registration consumed, for the spec write."""
        if not cluster.cluster_id:
            written.spec["clusterId"] = issued
        if cluster.spec.get("registrationToken"):
            written.spec["registrationToken"] = None  # a used one-time token is not kept
            written.events.append(
                (
                    WARNING,
                    "DeprecatedField",
                    "spec.registrationToken is deprecated; use registrationTokenSecretRef",
                )
            )
        if forced:
            written.annotations[ANNOTATION_ROTATE_CREDENTIALS] = None

    # -- rotation and heartbeat ------------------------------------------------------------

    async def _rotate(
        self, cluster: ClusterView, status: StatusDraft, written: _SpecWrite
    ) -> float | None:
        if not cluster.rotate_credentials:
            return None
        try:
            await self._gateway.rotate(owner=cluster.raw)
        except Exception as err:
            status.set("phase", "Error")
            status.set_condition(
                Cond.AUTHENTICATED, FALSE, Why.ROTATION_FAILED, f"rotation failed: {err}"
            )
            return 60.0
        written.spec["rotateCredentials"] = False
        written.events.append((NORMAL, "CredentialRotated", "bearer token rotated"))
        status.set_condition(
            Cond.AUTHENTICATED, TRUE, Why.CREDENTIAL_ROTATED, "bearer token rotated"
        )
        return None

    async def _heartbeat(self, status: StatusDraft) -> None:
        if self._gateway.cluster_id() is None:
            status.set("phase", "Pending")
            missing = "no agent credentials yet"
            status.set_condition(Cond.CONNECTED, FALSE, Why.CREDENTIAL_MISSING, missing)
            status.set_condition(Cond.AUTHENTICATED, FALSE, Why.CREDENTIAL_MISSING, missing)
            return
        try:
            await self._gateway.heartbeat()
        except Exception as err:
            status.set("phase", "Disconnected")
            status.set_condition(Cond.CONNECTED, FALSE, Why.CONTROL_PLANE_UNREACHABLE, str(err))
            status.set_condition(Cond.DISCONNECTED, TRUE, Why.NO_RECENT_ROUND_TRIP, str(err))
            status.set_condition(
                Cond.AUTHENTICATED, FALSE, Why.CONTROL_PLANE_AUTHENTICATION_FAILED, str(err)
            )
            return
        status.set("phase", "Connected")
        status.set("lastHeartbeat", format_time(self._clock.now()))
        status.set_condition(Cond.CONNECTED, TRUE, Why.ROUND_TRIP_OK, "")
        status.set_condition(Cond.DISCONNECTED, FALSE, Why.CONNECTED, "")
        status.set_condition(Cond.AUTHENTICATED, TRUE, Why.CREDENTIAL_ACCEPTED, "")
