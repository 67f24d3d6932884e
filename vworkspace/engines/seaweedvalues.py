"""The Seaweed CR an instance asks for: values loaded, normalised and copied into ``spec``.

docs/api.md, "Native SeaweedFS": values come from ``inline``, or ``data[key]`` of a Secret or
ConfigMap in the instance's namespace (JSON first, then YAML). The Seaweed spec sections
(:data:`SPEC_KEYS`) are taken from the top level, else from the first wrapper ``seaweedfs`` /
``seaweed`` holding one, else from the single top-level object holding one; the sections are
copied verbatim and nothing else is added (no defaults: the upstream operator owns those).

Pure functions except :func:`load_values`, which reads one Secret or ConfigMap.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import yaml

from vworkspace.api.applicationinstance import ApplicationInstanceView
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.api.names import InvalidNameError, check_subdomain
from vworkspace.engines.base import EngineError
from vworkspace.engines.flux import controller_ref, owner_labels
from vworkspace.kube.rest.api import KubeApi
from vworkspace.kube.rest.errors import NotFoundError
from vworkspace.kube.rest.resources import CONFIG_MAPS, SECRETS

SPEC_KEYS = ("master", "volume", "filer", "s3", "admin", "worker", "sftp")
WRAPPERS = ("seaweedfs", "seaweed")
API_VERSION = "seaweed.seaweedfs.com/v1"


def _has_spec_key(obj: Any) -> bool:
    return isinstance(obj, dict) and any(k in obj for k in SPEC_KEYS)


def normalize(values: JsonObj) -> JsonObj:
    """The Seaweed ``spec`` for ``values``; raises :class:`EngineError` naming the problem."""
    source: JsonObj | None = values if _has_spec_key(values) else None
    if source is None:
        source = next((values[w] for w in WRAPPERS if _has_spec_key(values.get(w))), None)
    if source is None:
        holders = [v for v in values.values() if _has_spec_key(v)]
        if len(holders) > 1:
            raise EngineError(
                "ambiguous Seaweed values: multiple wrapper sections contain Seaweed spec keys"
            )
        source = holders[0] if holders else None
    if source is None:
        raise EngineError(
            "values must include at least one native Seaweed spec section (master, volume, "
            "filer, s3, …); Helm chart-wrapped values require conversion before reconciliation"
        )
    return {k: source[k] for k in SPEC_KEYS if k in source}


def parse_document(text: str, *, where: str) -> JsonObj:
    try:
        parsed = json.loads(text)
    except ValueError:
        try:
            parsed = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise EngineError(f"load values: {where} is neither JSON nor YAML: {err}") from None
    if not isinstance(parsed, dict):
        raise EngineError(f"load values: {where} must hold an object")
    return parsed


async def load_values(client: KubeApi, ai: ApplicationInstanceView) -> JsonObj:
    values = ai.values
    source = values.get("source")
    if source == "inline":
        inline = values.get("inline")
        return inline if isinstance(inline, dict) else {}
    ref = values.get(str(source)) or {}
    resource = SECRETS if source == "secretRef" else CONFIG_MAPS
    kind = "Secret" if source == "secretRef" else "ConfigMap"
    key = ObjectKey(ai.namespace, ref.get("name", ""))
    try:
        check_subdomain(key.name, field=f"spec.values.{source}.name")
        obj = await client.get(resource, key)
    except InvalidNameError as err:
        raise EngineError(f"load values: {err}") from None
    except NotFoundError:
        raise EngineError(f"load values: {kind} {key.name!r} not found") from None
    raw = (obj.get("data") or {}).get(ref.get("key", ""))
    if raw is None:
        raise EngineError(f"load values: {kind} {key.name!r} has no key {ref.get('key')!r}")
    if source == "secretRef":
        try:
            raw = base64.b64decode(raw).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise EngineError(f"load values: Secret {key.name!r} key is not UTF-8") from None
    return parse_document(raw, where=f"{kind} {key.name!r} key {ref.get('key')!r}")


def desired_seaweed(ai: ApplicationInstanceView, spec: JsonObj) -> JsonObj:
    release = ai.release
    namespace = ai.namespace
    return {
        "apiVersion": API_VERSION,
        "kind": "Seaweed",
        "metadata": {
            "name": release["name"],
            "namespace": namespace,
            "labels": owner_labels(ai),
            "ownerReferences": [controller_ref(ai)],
        },
        "spec": spec,
    }


def check_release(ai: ApplicationInstanceView) -> str:
    """The release name; raises :class:`EngineError` for a missing or foreign release."""
    release = ai.spec.get("release")
    namespace = ai.namespace
    if not isinstance(release, dict) or not release.get("name"):
        raise EngineError("spec.release is required for Seaweed workload")
    if release.get("namespace") != namespace:
        raise EngineError(
            f"spec.release.namespace {release.get('namespace')!r} must match "
            f"metadata.namespace {namespace!r} for Seaweed workloads"
        )
    return str(release["name"])
