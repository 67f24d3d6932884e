"""Where the agent's credentials come from, and how a new token reaches the poller at once.

Sources, field by field, in precedence order: flags, environment (both resolved by the app and
passed in as ``overrides``), then the Secret ``vworkspace-agent-credentials`` (keys
``control-plane-base-url``, ``cluster-id``, ``token``) in the operator namespace. The store
watches that one Secret (an informer with a field selector), so a rotated token is in use for the
next request, without a restart. The Go agent only restarted its poller when the cluster-id
changed and kept polling with a rotated-away token; here every request reads ``current()``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime

import attrs
import structlog

from vworkspace.agent.wire import Credentials
from vworkspace.api.constants import FIELD_MANAGER_OPERATOR
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.kube.cache.informer import Informer
from vworkspace.kube.clock import Clock
from vworkspace.kube.rest.api import KubeApi
from vworkspace.kube.rest.errors import NotFoundError
from vworkspace.kube.rest.resources import SECRETS

DEFAULT_SECRET = "vworkspace-agent-credentials"
KEY_BASE_URL = "control-plane-base-url"
KEY_CLUSTER_ID = "cluster-id"
KEY_TOKEN = "token"
# Optional TLS material for the control plane connection (agent/egresstls.py).
KEY_CA = "ca.crt"
KEY_CERT = "tls.crt"
KEY_KEY = "tls.key"
_log = structlog.get_logger("vworkspace.agent.credentials")


@attrs.frozen
class Overrides:
    """Values from flags or environment; empty means "take it from the Secret"."""

    base_url: str = ""
    cluster_id: str = ""
    token: str = attrs.field(default="", repr=False)


@attrs.frozen
class SecretTls:
    """The credentials Secret's optional ``ca.crt``, ``tls.crt`` and ``tls.key`` (PEM; empty
    when absent), and which Secret they came from, for error messages."""

    source: str = ""
    ca_pem: bytes = attrs.field(default=b"", repr=False)
    cert_pem: bytes = attrs.field(default=b"", repr=False)
    key_pem: bytes = attrs.field(default=b"", repr=False)  # the private key: never shown


def _decode(secret: JsonObj, key: str) -> str:
    raw = (secret.get("data") or {}).get(key)
    if raw is None:
        return str((secret.get("stringData") or {}).get(key, "")).strip()
    try:
        return base64.b64decode(raw).decode().strip()
    except (ValueError, UnicodeDecodeError):
        return ""


def written_at(secret: JsonObj | None) -> datetime.datetime | None:
    """When the Secret's data was last written: the newest managedFields entry that owns
    ``data`` (registration and every rotation are server-side applies of it, so this moves on
    each), else the creation time. The Go operator reports the Secret's age since creation in
    steady state; a credential age that survives a rotation hides the rotation (docs/pull-mode.md).
    Label or annotation edits do not count, nor does a restart of the operator."""
    if not secret:
        return None
    meta = secret.get("metadata") or {}
    stamps = [
        str(entry["time"])
        for entry in meta.get("managedFields") or []
        if entry.get("time")
        and {"f:data", "f:stringData"} & set((entry.get("fieldsV1") or {}).keys())
    ]
    if meta.get("creationTimestamp"):
        stamps.append(str(meta["creationTimestamp"]))
    parsed = [datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")) for stamp in stamps]
    return max(parsed) if parsed else None


class CredentialStore:
    def __init__(
        self,
        client: KubeApi,
        *,
        namespace: str,
        secret_name: str = DEFAULT_SECRET,
        overrides: Overrides = Overrides(),
        clock: Clock,
    ) -> None:
        self._client = client
        self.namespace = namespace
        self.secret_name = secret_name
        self._overrides = overrides
        self._clock = clock
        self._secret: JsonObj | None = None
        # Cluster.status.credentialsSecretRef, when it names another Secret than the flag's.
        self._followed: ObjectKey | None = None
        # Why the agent must not poll (its Cluster is being deleted); empty: it may.
        self.suspended = ""
        self._changed = asyncio.Condition()
        self.version = 0
        self.informer = Informer(
            client, SECRETS, namespace=namespace, field_selector=f"metadata.name={secret_name}"
        )
        self.informer.add_handler(self._on_secret)

    @property
    def key(self) -> ObjectKey:
        return self._followed or ObjectKey(self.namespace, self.secret_name)

    def current(self) -> Credentials | None:
        """The merged credentials, or None while any of the three values is missing or the
        agent is suspended."""
        if self.suspended:
            return None
        secret = self._secret or {}
        creds = Credentials(
            base_url=(self._overrides.base_url or _decode(secret, KEY_BASE_URL)).rstrip("/"),
            cluster_id=self._overrides.cluster_id or _decode(secret, KEY_CLUSTER_ID),
            token=self._overrides.token or _decode(secret, KEY_TOKEN),
        )
        return creds if creds.complete else None

    def tls(self) -> SecretTls:
        """The Secret's TLS material as it is now (read per request: a rotated client
        certificate is used for the next new connection)."""
        secret = self._secret or {}
        return SecretTls(
            source=f"Secret {self.key}",
            ca_pem=_decode(secret, KEY_CA).encode(),
            cert_pem=_decode(secret, KEY_CERT).encode(),
            key_pem=_decode(secret, KEY_KEY).encode(),
        )

    def written_at(self) -> datetime.datetime | None:
        """When the credentials in the Secret were last written (see :func:`written_at`)."""
        return written_at(self._secret)

    def _on_secret(self, obj: JsonObj, initial: bool) -> None:
        if self._followed is not None:
            return  # another Secret is in use: read by follow() and reload()
        # The informer reports a delete with the last known object; look in the cache instead.
        self._set(self.informer.store.get(self.key))

    async def follow(self, key: ObjectKey) -> bool:
        """Use the Secret a Cluster's ``status.credentialsSecretRef`` names, as the Go agent
        does. Only in the operator namespace, where the RBAC grants Secrets; False (and a
        warning) otherwise. A followed Secret other than the informer's is read now and on
        every reload (after a 401, and on each Cluster reconcile), not watched."""
        if key.namespace != self.namespace:
            _log.warning(
                "credentialsSecretRef not followed: the operator reads Secrets in its own "
                "namespace only",
                ref=str(key),
                namespace=self.namespace,
            )
            return False
        followed = None if key.name == self.secret_name else key
        switched = followed != self._followed
        if switched:
            _log.info("agent credentials Secret", secret=str(key))
        self._followed = followed
        if followed is not None:
            await self.reload()
        elif switched:  # back to the informer's Secret
            self._set(self.informer.store.get(self.key))
        return True

    def suspend(self, reason: str) -> None:
        """Stop polling until credentials are written again (register, rotate)."""
        if self.suspended == reason:
            return
        self.suspended = reason
        _log.warning("agent stops polling", reason=reason)
        self._bump()

    def _bump(self) -> None:
        self.version += 1
        asyncio.get_running_loop().create_task(self._notify())

    def _set(self, secret: JsonObj | None) -> None:
        before = self.current()
        self._secret = secret
        after = self.current()
        if before != after:
            _log.info(
                "agent credentials changed", credentials=repr(after), version=self.version + 1
            )
            self._bump()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_changed(self, seen_version: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.version != seen_version)

    async def reload(self) -> Credentials | None:
        """Read the Secret now (after a 401: the token may have just been rotated)."""
        try:
            secret: JsonObj | None = await self._client.get(SECRETS, self.key)
        except NotFoundError:
            secret = None
        self._set(secret)
        return self.current()

    async def run(self) -> None:
        await self.informer.run()

    async def persist(self, credentials: Credentials, *, owner: JsonObj | None = None) -> None:
        """Write the credentials Secret (server-side apply), owned by ``owner`` (the Cluster)."""
        secret: JsonObj = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": self.key.name, "namespace": self.key.namespace},
            "type": "Opaque",
            "stringData": {
                KEY_BASE_URL: credentials.base_url,
                KEY_CLUSTER_ID: credentials.cluster_id,
                KEY_TOKEN: credentials.token,
            },
        }
        if owner is not None:
            meta = owner["metadata"]
            secret["metadata"]["ownerReferences"] = [
                {
                    "apiVersion": owner["apiVersion"],
                    "kind": owner["kind"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ]
        stored = await self._client.apply(SECRETS, secret, field_manager=FIELD_MANAGER_OPERATOR)
        if self.suspended:  # new credentials: a registration after the Cluster was deleted
            _log.info("agent resumes polling", was=self.suspended)
            self.suspended = ""
            self._bump()
        self._set(stored)
