"""The agent's side of the Cluster reconciler's ControlPlaneGateway.

Registration, rotation, heartbeat and the batcher's drop count, over the agent's own client,
credential store and event batcher. Registration also makes sure the cluster has its encryption
key pair (agent/encryptionkeys.py); its public key goes into the register body and every
heartbeat as ``encryptionPublicKey``, so the control plane learns it, and a replaced key, without
a new registration."""

from __future__ import annotations

import aiohttp
import structlog

from vworkspace.agent.client import ControlPlaneClient, HttpSession, NoCredentialsError, register
from vworkspace.agent.credentials import CredentialStore
from vworkspace.agent.encryptionkeys import EncryptionKeys
from vworkspace.agent.events import EventBatcher
from vworkspace.agent.wire import AppliedRef, Credentials, format_time
from vworkspace.api.constants import OPS_API_VERSION
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.kube.clock import Clock
from vworkspace.kube.rest.errors import ApiError

_log = structlog.get_logger("vworkspace.agent.gateway")


class AgentGateway:
    def __init__(
        self,
        *,
        store: CredentialStore,
        client: ControlPlaneClient,
        http: HttpSession,
        batcher: EventBatcher,
        clock: Clock,
        keys: EncryptionKeys | None = None,
    ) -> None:
        self._store = store
        self._keys = keys
        self._client = client
        self._http = http
        self._batcher = batcher
        self._clock = clock

    @property
    def batcher(self) -> EventBatcher:
        """The event batcher, which is also the controllers' status reporter."""
        return self._batcher

    def cluster_id(self) -> str | None:
        current = self._store.current()
        return current.cluster_id if current else None

    async def register(self, *, endpoint: str, token: str, cluster_id: str, owner: JsonObj) -> str:
        issued, bearer = await register(
            self._http,
            base_url=endpoint,
            registration_token=token,
            cluster_id=cluster_id,
            metrics=self._client.metrics,
            encryption_public_key=await self._encryption_key(),
        )
        await self._store.persist(Credentials(endpoint.rstrip("/"), issued, bearer), owner=owner)
        return issued

    async def _encryption_key(self) -> str:
        """The cluster's recipient, the key pair generated first if there is none. A failure
        (RBAC, API server) does not stop the registration: encrypted jobs then fail naming the
        missing key until one exists, and the heartbeat sends the key once it does."""
        if self._keys is None:
            return ""
        try:
            key = await self._keys.ensure()
        except (ApiError, aiohttp.ClientError, TimeoutError) as err:
            _log.warning(
                "cannot read or create the encryption key; registering without it",
                secret=self._keys.source,
                error=str(err) or type(err).__name__,
            )
            return ""
        return key.recipient if key is not None else ""

    async def rotate(self, *, owner: JsonObj) -> None:
        current = self._store.current()
        if current is None:
            raise NoCredentialsError("no credentials to rotate")
        token = await self._client.rotate()
        await self._store.persist(
            Credentials(current.base_url, current.cluster_id, token), owner=owner
        )
        now = self._clock.now()
        uid = owner["metadata"].get("uid", "")
        self._batcher.enqueue(
            {
                # The spec keys every rotation of a Cluster alike; the time keeps them apart.
                "eventKey": f"CredentialRotated/{uid}/Authenticated#{int(now.timestamp())}",
                "kind": "CredentialRotated",
                "resourceRef": AppliedRef.of(owner).to_wire(),
                "conditions": [
                    {
                        "type": "Authenticated",
                        "status": "True",
                        "reason": "CredentialRotated",
                        "message": "bearer token rotated",
                        "lastTransitionTime": format_time(now),
                    }
                ],
                "timestamp": format_time(now),
            }
        )

    async def heartbeat(self) -> None:
        current = self._store.current()
        if current is None:
            raise NoCredentialsError("no agent credentials")
        ref = AppliedRef(
            api_version=OPS_API_VERSION, kind="Cluster", namespace="", name=current.cluster_id
        )
        event: JsonObj = {
            "kind": "ClusterHeartbeat",
            "resourceRef": ref.to_wire(),
            "timestamp": format_time(self._clock.now()),
        }
        public_key = self._keys.public_key() if self._keys is not None else ""
        if public_key:
            event["encryptionPublicKey"] = public_key
        await self._client.post_events([event], endpoint="heartbeat")

    async def follow(self, *, name: str, namespace: str) -> bool:
        return await self._store.follow(ObjectKey(namespace, name))

    def suspend(self, reason: str, *, name: str, namespace: str) -> bool:
        if ObjectKey(namespace, name) != self._store.key:
            return False  # another Cluster's credentials: not what this agent polls with
        self._store.suspend(reason)
        return True

    def dropped_events(self) -> int:
        return self._batcher.dropped
