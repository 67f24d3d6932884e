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
count. Status is written once and the Cluster is looked at again every ``heartbeat_interval``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
from typing import Protocol

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
from vworkspace.controllers.conditions import FALSE, TRUE, Conditions
from vworkspace.controllers.reporting import NullReporter, StatusReporter
from vworkspace.kube.cache.informer import Informer
from vworkspace.kube.clock import Clock
from vworkspace.kube.events import NORMAL, WARNING, EventRecorder
from vworkspace.kube.objects import ensure_finalizer, update_status
from vworkspace.kube.rest.client import KubeClient
from vworkspace.kube.rest.errors import NotFoundError
from vworkspace.kube.rest.resources import CLUSTERS, SECRETS
from vworkspace.kube.runtime.controller import Result

DEFAULT_TOKEN_KEY = "registrationToken"


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


class _TokenError(Exception):
    pass


class ClusterReconciler:
    def __init__(
        self,
        *,
        client: KubeClient,
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
        self._reporter = reporter if reporter is not None else NullReporter()
        self.heartbeat_interval = heartbeat_interval
        self._secret_name = secret_name
        # http:// endpoints only with --allow-insecure-control-plane (api/endpoints.py).
        self._allow_insecure = allow_insecure_endpoint

    async def reconcile(self, key: ObjectKey) -> Result:
        if self._informer.store.get(key) is None:
            return Result.done()
        # Registration and rotation are not idempotent: decide on a fresh read, never on a cache
        # that may not have seen our last status write yet (a second exchange of a one-time
        # token fails). One GET per heartbeat of a singleton is cheap.
        try:
            cluster = await self._client.get(CLUSTERS, key)
        except NotFoundError:
            return Result.done()
        ref = (cluster.get("status") or {}).get("credentialsSecretRef") or {}
        ref_key = (ref.get("name"), ref.get("namespace") or self._namespace)
        if cluster["metadata"].get("deletionTimestamp"):
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
                    cluster,
                    CLUSTER_FINALIZER,
                    present=False,
                    field_manager=FIELD_MANAGER_OPERATOR,
                )
            return Result.done()
        cluster = await ensure_finalizer(
            self._client,
            CLUSTERS,
            cluster,
            CLUSTER_FINALIZER,
            present=True,
            field_manager=FIELD_MANAGER_OPERATOR,
        )
        if ref_key[0]:
            await self._gateway.follow(name=ref_key[0], namespace=ref_key[1])
        status = dict(cluster.get("status") or {})
        conds = Conditions(cluster, now=self._clock.now())
        retry = await self._register(cluster, status, conds)
        if retry is None:
            retry = await self._rotate(cluster, status, conds)
        if retry is None:
            await self._heartbeat(status, conds)
        dropped = self._gateway.dropped_events()
        if dropped:
            conds.set(
                Cond.BUFFER_OVERFLOW,
                TRUE,
                Why.EVENT_BUFFER_FULL,
                f"{dropped} events dropped since the buffer last drained",
            )
        else:
            conds.set(Cond.BUFFER_OVERFLOW, FALSE, Why.BUFFER_DRAINED, "")
        await self._write(cluster, status, conds)
        return Result.after(retry if retry is not None else self.heartbeat_interval)

    # -- registration ----------------------------------------------------------------------

    async def _token(self, spec: JsonObj) -> str | None:
        ref = spec.get("registrationTokenSecretRef")
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
        inline = (spec.get("registrationToken") or "").strip()
        return inline or None

    async def _register(self, cluster: JsonObj, status: JsonObj, conds: Conditions) -> float | None:
        spec = cluster.get("spec") or {}
        annotations = cluster["metadata"].get("annotations") or {}
        forced = str(annotations.get(ANNOTATION_ROTATE_CREDENTIALS, "")).strip().lower() not in (
            "",
            "false",
        )
        has_credentials = self._gateway.cluster_id() is not None
        try:
            token = await self._token(spec)
        except _TokenError as err:
            if has_credentials:
                return None
            status["phase"] = "Pending"
            conds.set(Cond.AUTHENTICATED, FALSE, Why.TOKEN_SECRET_MISSING, str(err))
            conds.set(Cond.CONNECTED, FALSE, Why.REGISTRATION_PENDING, str(err))
            return 30.0
        if token is None:
            return None
        observed = status.get("observedToken") or ""
        if fingerprint(token) == observed and not forced:
            return None
        consumed = (status.get("credentialStatus") or {}).get("registrationTokenConsumed")
        if not observed and consumed and has_credentials and not forced:
            status["observedToken"] = fingerprint(token)  # adopt what exists; no second exchange
            return None
        field = "spec.controlPlaneEndpoint"
        if not spec.get("controlPlaneEndpoint") and spec.get("controlPlaneBaseUrl"):
            field = "spec.controlPlaneBaseUrl"
        endpoint = (
            spec.get("controlPlaneEndpoint") or spec.get("controlPlaneBaseUrl") or ""
        ).strip()
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
                cluster_id=spec.get("clusterId") or "",
                owner=cluster,
            )
        except Exception as err:  # any failure is reported on the Cluster, then retried
            status["phase"] = "Error"
            conds.set(
                Cond.AUTHENTICATED, FALSE, Why.REGISTRATION_FAILED, f"registration failed: {err}"
            )
            conds.set(
                Cond.CONNECTED, FALSE, Why.REGISTRATION_PENDING, f"registration failed: {err}"
            )
            return 30.0
        await self._after_registration(cluster, issued, forced=forced)
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
        conds.set(Cond.AUTHENTICATED, TRUE, Why.REGISTRATION_COMPLETE, f"registered as {issued}")
        conds.set(Cond.CONNECTED, TRUE, Why.CONTROL_PLANE_REACHABLE, "")
        return None

    async def _after_registration(self, cluster: JsonObj, issued: str, *, forced: bool) -> None:
        spec = cluster.get("spec") or {}
        patch: JsonObj = {"spec": {}}
        if not spec.get("clusterId"):
            patch["spec"]["clusterId"] = issued
        if spec.get("registrationToken"):
            patch["spec"]["registrationToken"] = None  # a used one-time token is not kept
            if self._recorder is not None:
                await self._recorder.record(
                    cluster,
                    type_=WARNING,
                    reason="DeprecatedField",
                    note="spec.registrationToken is deprecated; use registrationTokenSecretRef",
                )
        if forced:
            patch["metadata"] = {"annotations": {ANNOTATION_ROTATE_CREDENTIALS: None}}
        if patch["spec"] or forced:
            await self._client.merge_patch(
                CLUSTERS,
                ObjectKey(None, cluster["metadata"]["name"]),
                patch,
                field_manager=FIELD_MANAGER_OPERATOR,
            )

    # -- rotation and heartbeat ------------------------------------------------------------

    async def _rotate(self, cluster: JsonObj, status: JsonObj, conds: Conditions) -> float | None:
        if (cluster.get("spec") or {}).get("rotateCredentials") is not True:
            return None
        try:
            await self._gateway.rotate(owner=cluster)
        except Exception as err:
            status["phase"] = "Error"
            conds.set(Cond.AUTHENTICATED, FALSE, Why.ROTATION_FAILED, f"rotation failed: {err}")
            return 60.0
        await self._client.merge_patch(
            CLUSTERS,
            ObjectKey(None, cluster["metadata"]["name"]),
            {"spec": {"rotateCredentials": False}},
            field_manager=FIELD_MANAGER_OPERATOR,
        )
        conds.set(Cond.AUTHENTICATED, TRUE, Why.CREDENTIAL_ROTATED, "bearer token rotated")
        if self._recorder is not None:
            await self._recorder.record(
                cluster, type_=NORMAL, reason="CredentialRotated", note="bearer token rotated"
            )
        return None

    async def _heartbeat(self, status: JsonObj, conds: Conditions) -> None:
        if self._gateway.cluster_id() is None:
            status["phase"] = "Pending"
            conds.set(Cond.CONNECTED, FALSE, Why.CREDENTIAL_MISSING, "no agent credentials yet")
            conds.set(Cond.AUTHENTICATED, FALSE, Why.CREDENTIAL_MISSING, "no agent credentials yet")
            return
        try:
            await self._gateway.heartbeat()
        except Exception as err:
            status["phase"] = "Disconnected"
            conds.set(Cond.CONNECTED, FALSE, Why.CONTROL_PLANE_UNREACHABLE, str(err))
            conds.set(Cond.DISCONNECTED, TRUE, Why.NO_RECENT_ROUND_TRIP, str(err))
            conds.set(Cond.AUTHENTICATED, FALSE, Why.CONTROL_PLANE_AUTHENTICATION_FAILED, str(err))
            return
        status["phase"] = "Connected"
        status["lastHeartbeat"] = format_time(self._clock.now())
        conds.set(Cond.CONNECTED, TRUE, Why.ROUND_TRIP_OK, "")
        conds.set(Cond.DISCONNECTED, FALSE, Why.CONNECTED, "")
        conds.set(Cond.AUTHENTICATED, TRUE, Why.CREDENTIAL_ACCEPTED, "")

    async def _write(self, cluster: JsonObj, status: JsonObj, conds: Conditions) -> None:
        status["conditions"] = conds.wire()
        previous = cluster.get("status") or {}
        # lastHeartbeat alone changing still counts: it is how people see the heartbeat.
        if status == previous:
            return
        await update_status(
            self._client,
            CLUSTERS,
            ObjectKey(None, cluster["metadata"]["name"]),
            lambda _: status,
            field_manager=FIELD_MANAGER_OPERATOR,
            current=cluster,
        )
        self._reporter.report(cluster, conds.changes())
