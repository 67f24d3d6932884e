"""The cluster's age key pair for encrypted payloads (docs/pull-mode.md, "Encrypted payloads").

The private key (``AGE-SECRET-KEY-1...``) lives in the Secret ``vworkspace-agent-encryption``,
key ``age.key``, in the operator namespace (where the credentials Secret is). The store watches
that one Secret (an informer with a name field selector, as agent/credentials.py), so a replaced
key is used for the next job without a restart. :meth:`EncryptionKeys.ensure` generates and
writes a key when there is none: at registration (the Cluster reconciler through the gateway,
and ``python -m vworkspace register``), so that the public key can go into the register body
(``encryptionPublicKey``) and the heartbeat, and the control plane can encrypt to it.

The Secret is *created*, never applied over: when two writers race (two replicas, or an
operator and ``register``), the first key wins and both use it; a key an administrator put
there (``keys generate --encryption``) is never replaced by the agent.

A Secret whose ``age.key`` is not a valid identity is reported once per change (a warning
naming the Secret, never its content) and counts as "no key": encrypted jobs then fail with
``encryption_no_key`` rather than the agent overwriting what someone wrote there.
"""

from __future__ import annotations

import base64

import structlog

from vworkspace.agent.sealed import ClusterKey
from vworkspace.api.constants import FIELD_MANAGER_AGENT
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.kube.cache.informer import Informer
from vworkspace.kube.rest.api import KubeApi
from vworkspace.kube.rest.errors import AlreadyExistsError, NotFoundError
from vworkspace.kube.rest.resources import SECRETS

DEFAULT_SECRET = "vworkspace-agent-encryption"
KEY_PRIVATE = "age.key"
KEY_PUBLIC = "age.pub"
_log = structlog.get_logger("vworkspace.agent.encryptionkeys")


def key_of(secret: JsonObj | None) -> tuple[ClusterKey | None, str]:
    """The key in a Secret, and a problem line when there is a Secret but no usable key."""
    if secret is None:
        return None, ""
    raw = (secret.get("data") or {}).get(KEY_PRIVATE)
    # stringData: as a writer sent it (a fake API server keeps it; a real one turns it to data).
    text = (secret.get("stringData") or {}).get(KEY_PRIVATE)
    if raw is None and text is None:
        return None, f"no {KEY_PRIVATE} key"
    try:
        if raw is not None:
            text = base64.b64decode(raw).decode("utf-8")
        return ClusterKey.parse(str(text)), ""
    except (ValueError, UnicodeDecodeError) as err:
        return None, f"{KEY_PRIVATE}: {err}"


def secret_body(key: ClusterKey, *, namespace: str, name: str = DEFAULT_SECRET) -> JsonObj:
    """The Secret holding ``key`` (the public key too, for whoever reads it by hand)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "Opaque",
        "stringData": {KEY_PRIVATE: key.secret_text() + "\n", KEY_PUBLIC: key.recipient + "\n"},
    }


class EncryptionKeys:
    def __init__(
        self, client: KubeApi, *, namespace: str, secret_name: str = DEFAULT_SECRET
    ) -> None:
        self._client = client
        self.namespace = namespace
        self.secret_name = secret_name
        self._key: ClusterKey | None = None
        self._problem = ""
        self.informer = Informer(
            client, SECRETS, namespace=namespace, field_selector=f"metadata.name={secret_name}"
        )
        self.informer.add_handler(self._on_secret)

    @property
    def key(self) -> ObjectKey:
        return ObjectKey(self.namespace, self.secret_name)

    @property
    def source(self) -> str:
        return f"{self.namespace}/{self.secret_name}"

    def current(self) -> ClusterKey | None:
        return self._key

    def public_key(self) -> str:
        """The recipient the control plane encrypts to; "" while there is no key."""
        return self._key.recipient if self._key else ""

    def _on_secret(self, obj: JsonObj, initial: bool) -> None:
        # A delete is reported with the last known object; the cache tells whether it exists.
        self.update(self.informer.store.get(self.key))

    def update(self, secret: JsonObj | None) -> None:
        key, problem = key_of(secret)
        if problem and problem != self._problem:
            _log.warning(
                "the encryption key Secret holds no usable key; encrypted jobs fail until it is "
                "fixed or deleted (the agent then generates one at registration)",
                secret=self.source,
                problem=problem,
            )
        self._problem = problem
        before = self.public_key()
        self._key = key
        if self.public_key() != before:
            _log.info("cluster encryption key", secret=self.source, recipient=self.public_key())

    async def ensure(self) -> ClusterKey | None:
        """The key, generated and written first when the Secret does not exist; None when the
        Secret exists without a usable key (never overwritten)."""
        try:
            found: JsonObj | None = await self._client.get(SECRETS, self.key)
        except NotFoundError:
            found = None
        if found is None:
            generated = ClusterKey.generate()
            try:
                found = await self._client.create(
                    SECRETS,
                    secret_body(generated, namespace=self.namespace, name=self.secret_name),
                    field_manager=FIELD_MANAGER_AGENT,
                )
                _log.info(
                    "generated the cluster encryption key",
                    secret=self.source,
                    recipient=generated.recipient,
                )
            except AlreadyExistsError:  # another writer was first: use its key
                found = await self._client.get(SECRETS, self.key)
        self.update(found)
        return self._key
