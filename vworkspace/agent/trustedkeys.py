"""The public keys the agent trusts for signed jobs, read from one ConfigMap or Secret and
watched, so adding or removing a key takes effect without a restart (docs/operations.md,
"Hardening").

One data entry per key: ``<keyId>: <PEM Ed25519 public key>``. Several keys at once is the
rotation path (add the new key, switch the signer, remove the old key). An entry that is not a
valid key id or not an Ed25519 PEM is skipped with a warning naming the entry; the others stay
in use, so one typo does not turn verification off or on for every key. A missing object means
"no trusted keys" (then every signed job fails with an unknown key id).

The object is watched by an informer with a name field selector (as the credentials Secret),
which needs ``list`` and ``watch`` on the kind in the operator namespace. Until the informer has
listed it once, :attr:`TrustedKeys.synced` is False and the keys are not known yet (an empty
mapping that means "not read", not "none trusted"): the poller waits for
:meth:`TrustedKeys.wait_synced` before it fetches a job (agent/verifier.py).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import attrs
import structlog

from vworkspace.agent.signing import KEY_ID_RE, load_public_key
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.api.names import subdomain_problem
from vworkspace.kube.cache.informer import Informer
from vworkspace.kube.rest.api import KubeApi
from vworkspace.kube.rest.resources import CONFIG_MAPS, SECRETS

if TYPE_CHECKING:  # cryptography is loaded only once a key is parsed (agent/signing.py)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

DEFAULT_NAME = "vworkspace-job-signing-keys"
_log = structlog.get_logger("vworkspace.agent.trustedkeys")


@attrs.frozen
class KeySource:
    """Where the trusted keys live: ``configmap/NAME`` or ``secret/NAME`` (a bare NAME is a
    ConfigMap)."""

    kind: str = "configmap"
    name: str = DEFAULT_NAME

    @classmethod
    def parse(cls, text: str) -> KeySource:
        kind, _, name = text.strip().rpartition("/")
        kind = (kind or "configmap").lower()
        if kind not in ("configmap", "secret") or not name:
            raise ValueError(f"{text!r} is not NAME, configmap/NAME or secret/NAME")
        if subdomain_problem(name) is not None:  # it becomes a path segment (issue 24, F1)
            raise ValueError(f"{text!r}: {name!r} is not a valid {kind} name")
        return cls(kind=kind, name=name)

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


def parse_keys(
    obj: JsonObj | None, *, secret: bool = False
) -> tuple[dict[str, Ed25519PublicKey], list[str]]:
    """The keys of a ConfigMap (or a Secret: base64 data), and one problem line per skipped
    entry."""
    if obj is None:
        return {}, []
    entries: dict[str, str] = {}
    if secret:
        for key_id, raw in (obj.get("data") or {}).items():
            try:
                entries[key_id] = base64.b64decode(raw).decode()
            except (ValueError, UnicodeDecodeError):
                entries[key_id] = ""
    else:
        entries = {k: str(v) for k, v in (obj.get("data") or {}).items()}
    keys: dict[str, Ed25519PublicKey] = {}
    problems = []
    for key_id, pem in sorted(entries.items()):
        if not KEY_ID_RE.fullmatch(key_id):
            problems.append(f"entry {key_id!r}: a key id must match {KEY_ID_RE.pattern}")
            continue
        try:
            keys[key_id] = load_public_key(pem)
        except ValueError as err:
            problems.append(f"entry {key_id!r}: {err}")
    return keys, problems


class TrustedKeys:
    def __init__(self, client: KubeApi, *, namespace: str, source: KeySource) -> None:
        self.namespace = namespace
        self.source = source
        self._keys: dict[str, Ed25519PublicKey] = {}
        # Called with the key ids after every change (the wiring warns when signatures are
        # not required although keys are configured).
        self.on_change: Callable[[list[str]], None] = lambda ids: None
        resource = SECRETS if source.kind == "secret" else CONFIG_MAPS
        self.informer = Informer(
            client, resource, namespace=namespace, field_selector=f"metadata.name={source.name}"
        )
        self.informer.add_handler(self._on_object)

    @property
    def key(self) -> ObjectKey:
        return ObjectKey(self.namespace, self.source.name)

    def current(self) -> Mapping[str, Ed25519PublicKey]:
        return self._keys

    @property
    def synced(self) -> bool:
        """Whether the keys were read: the informer listed the object (or found none)."""
        return self.informer.has_synced

    async def wait_synced(self) -> None:
        await self.informer.wait_synced()

    def _on_object(self, obj: JsonObj, initial: bool) -> None:
        # A delete is reported with the last known object; the cache tells whether it exists.
        self.update(self.informer.store.get(self.key))

    def update(self, obj: JsonObj | None) -> None:
        keys, problems = parse_keys(obj, secret=self.source.kind == "secret")
        for problem in problems:
            _log.warning("ignoring a trusted-key entry", source=str(self.source), problem=problem)
        if keys == self._keys:
            return
        self._keys = keys
        _log.info(
            "trusted job-signing keys changed",
            source=f"{self.namespace}/{self.source}",
            key_ids=sorted(keys),
        )
        self.on_change(sorted(keys))
