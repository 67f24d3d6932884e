"""Decrypted Helm values go into a Secret, never into the ApplicationInstance
(docs/pull-mode.md, "Encrypted payloads").

When an ApplicationInstance a job applies carries encrypted material (a sealed leaf in
``spec.values.inline``, or a whole ``encryptedPayload`` whose instance has inline values), the
agent writes the complete decrypted inline document, as YAML, into the Secret
``<instance>-vws-values`` (key ``values.yaml``) in the instance's namespace, and applies the
instance with ``values: {source: secretRef, secretRef: {name, key: values.yaml}}``. The Flux
engine already turns a secretRef into the HelmRelease's ``valuesFrom``, so neither the instance,
the HelmRelease, a log line, an Event nor a status ever holds the plaintext, and no CRD or
engine changes.

Order, so that Flux never sees a reference to a missing Secret and nothing is left behind:
Secret first, then the instance, then the Secret's ownerReference to the instance (its uid comes
from the apply's answer; the garbage collector deletes the Secret with the instance). When the
instance cannot be applied, a Secret created for it is deleted again.

A Secret of that name that the agent does not manage (label
``app.vworkspace.io/managed-by=vworkspace-agent``) is never overwritten: the job ends
``conflict`` naming it. The trade-off of one more object per instance and a cluster-wide
``create``/``patch``/``delete`` on Secrets (docs/operations.md, RBAC) buys values that are
never stored in clear outside a Secret.
"""

from __future__ import annotations

import base64
import contextlib
from typing import Any

import attrs
import yaml

from vworkspace.agent.sealed import Unsealer, has_sealed
from vworkspace.api import constants
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.api.names import subdomain_problem
from vworkspace.kube.rest.api import KubeApi
from vworkspace.kube.rest.errors import ApiError, NotFoundError
from vworkspace.kube.rest.resources import SECRETS

SUFFIX = "-vws-values"
VALUES_KEY = "values.yaml"
MANAGED_BY = constants.FIELD_MANAGER_AGENT  # the label value marking the agent's own Secrets
ANNOTATION_FOR = "app.vworkspace.io/values-for"


class ValuesSecretError(Exception):
    """The values Secret cannot be written; the message becomes the result's ``error`` (with
    the word ``conflict`` when another owner holds the name)."""


@attrs.frozen
class ValuesSecret:
    namespace: str
    name: str
    instance: str
    document: str = attrs.field(repr=False)  # decrypted values: never in a repr or log line

    @property
    def key(self) -> ObjectKey:
        return ObjectKey(self.namespace, self.name)

    def body(self, owner: JsonObj | None = None) -> JsonObj:
        meta: JsonObj = {
            "name": self.name,
            "namespace": self.namespace,
            "labels": {constants.LABEL_MANAGED_BY: MANAGED_BY},
            "annotations": {ANNOTATION_FOR: self.instance},
        }
        if owner is not None:
            meta["ownerReferences"] = [
                {
                    "apiVersion": owner.get("apiVersion", constants.APPS_API_VERSION),
                    "kind": owner.get("kind", "ApplicationInstance"),
                    "name": owner["metadata"]["name"],
                    "uid": owner["metadata"]["uid"],
                    "controller": True,
                }
            ]
        encoded = base64.b64encode(self.document.encode("utf-8")).decode("ascii")
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": meta,
            "type": "Opaque",
            "data": {VALUES_KEY: encoded},
        }


def render(values: Any) -> str:
    """The values document as it is stored: YAML, keys sorted, block style, UTF-8 kept."""
    return str(yaml.safe_dump(values, sort_keys=True, default_flow_style=False, allow_unicode=True))


def _inline(obj: JsonObj) -> JsonObj | None:
    """The inline values of an ApplicationInstance whose values source is inline."""
    spec = obj.get("spec")
    values = spec.get("values") if isinstance(spec, dict) else None
    if not isinstance(values, dict) or values.get("source") != "inline":
        return None
    inline = values.get("inline")
    return inline if isinstance(inline, dict) else None


def carries_sealed(obj: JsonObj, *, sealed_payload: bool) -> bool:
    """Whether :func:`split` would take the values out (cheap: no decryption)."""
    inline = _inline(obj)
    return inline is not None and (sealed_payload or has_sealed(inline))


def split(obj: JsonObj, *, unsealer: Unsealer, sealed_payload: bool) -> ValuesSecret | None:
    """Take the inline values out of an ApplicationInstance ``obj`` (changed in place to a
    secretRef) when they carry encrypted material; None (``obj`` untouched) otherwise. Raises
    :class:`~vworkspace.agent.sealed.SealedError` before anything is written."""
    inline = _inline(obj)
    if inline is None or not carries_sealed(obj, sealed_payload=sealed_payload):
        return None
    plain, _ = unsealer.values(inline, path="spec.values.inline")
    meta = obj["metadata"]  # checked by the applier (name and namespace are valid names)
    name = f"{meta['name']}{SUFFIX}"
    problem = subdomain_problem(name)
    if problem is not None:
        raise ValuesSecretError(
            f'metadata.name: the values Secret "{name}" is not a valid Secret name ({problem}); '
            f"use an instance name of at most {253 - len(SUFFIX)} characters"
        )
    obj["spec"]["values"] = {"source": "secretRef", "secretRef": {"name": name, "key": VALUES_KEY}}
    return ValuesSecret(
        namespace=str(meta["namespace"]),
        name=name,
        instance=str(meta["name"]),
        document=render(plain),
    )


class ValuesSecrets:
    """Writes, owns and drops the values Secrets, as ``vworkspace-agent``."""

    def __init__(self, client: KubeApi) -> None:
        self._client = client

    async def write(self, values: ValuesSecret) -> bool:
        """Server-side apply the Secret; True when it did not exist before. NotFoundError
        passes through (the namespace may be gone; the applier re-creates it and retries)."""
        where = f'Secret "{values.namespace}/{values.name}"'
        try:
            live: JsonObj | None = await self._client.get(SECRETS, values.key)
        except NotFoundError:
            live = None
        except ApiError as err:
            raise ValuesSecretError(f"values {where}: {err.status} {err.reason}") from None
        owner = None
        if live is not None:
            labels = (live.get("metadata") or {}).get("labels") or {}
            if labels.get(constants.LABEL_MANAGED_BY) != MANAGED_BY:
                raise ValuesSecretError(
                    f"values Secret conflict: {where} exists and is not managed by the agent "
                    f"(label {constants.LABEL_MANAGED_BY}={MANAGED_BY}); delete or rename it"
                )
            owner = _owner_of(live)
        try:
            await self._client.apply(
                SECRETS, values.body(owner), field_manager=MANAGED_BY, force=True
            )
        except NotFoundError:
            raise
        except ApiError as err:
            raise ValuesSecretError(f"values {where}: {err.status} {err.reason}") from None
        return live is None

    async def own(self, values: ValuesSecret, instance: JsonObj) -> None:
        """Make the instance (as the apply stored it) the Secret's owner."""
        if not (instance.get("metadata") or {}).get("uid"):
            return
        try:
            await self._client.apply(
                SECRETS, values.body(instance), field_manager=MANAGED_BY, force=True
            )
        except ApiError as err:
            raise ValuesSecretError(
                f'values Secret "{values.namespace}/{values.name}": owner reference: '
                f"{err.status} {err.reason}"
            ) from None

    async def drop(self, values: ValuesSecret) -> None:
        """Delete a Secret created for an instance that could not be applied (best effort: the
        job fails with the instance's error either way)."""
        with contextlib.suppress(ApiError):
            await self._client.delete(SECRETS, values.key)


def _owner_of(live: JsonObj) -> JsonObj | None:
    """The instance that owns a live Secret, in the shape :meth:`ValuesSecret.body` takes."""
    for ref in (live.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == "ApplicationInstance" and ref.get("uid"):
            return {
                "apiVersion": ref.get("apiVersion"),
                "kind": ref["kind"],
                "metadata": {"name": ref.get("name"), "uid": ref["uid"]},
            }
    return None
