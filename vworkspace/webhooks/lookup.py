"""What the Operation rules read from the cluster, fetched live with short timeouts.

Live reads rather than the informer caches: the agent often applies an ApplicationInstance and
its first Operation within milliseconds, and a cache that has not seen the instance yet would
reject a valid Operation ("target not found"). Admission is rare next to reconciles, so three
small requests per Operation create or spec update cost little. Each has a 3 s timeout, well
inside the webhook's 5 s budget (manifests/webhook).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from vworkspace.api.admission import World
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.kube.rest.api import KubeApi
from vworkspace.kube.rest.errors import NotFoundError
from vworkspace.kube.rest.paths import ApiPath
from vworkspace.kube.rest.resources import APPLICATION_INSTANCES, NAMESPACES, OPERATIONS

LOOKUP_TIMEOUT = 3.0


class WorldLookup(Protocol):
    async def world(self, *, namespace: str, target: str) -> World: ...


class ClusterLookup:
    def __init__(self, client: KubeApi, *, timeout: float = LOOKUP_TIMEOUT) -> None:
        self._client = client
        self._timeout = timeout

    async def world(self, *, namespace: str, target: str) -> World:
        ns, instance, operations = await asyncio.gather(
            self._get_or_none(NAMESPACES.path(ObjectKey(None, namespace))),
            self._get_or_none(APPLICATION_INSTANCES.path(ObjectKey(namespace, target)))
            if target
            else _none(),
            self._client.request(
                "GET",
                OPERATIONS.collection_path(namespace),
                # Served from the API server's watch cache. A consistent list (no
                # resourceVersion) waits until that cache has caught up with etcd, which right
                # after another write cost ~85 ms per review (bench/bench_webhooks.py); the
                # cache lags by milliseconds, and the reconciler re-checks conflicts anyway.
                query={"resourceVersion": "0"},
                timeout_s=self._timeout,
            ),
        )
        return World(
            namespace_annotations=dict(((ns or {}).get("metadata") or {}).get("annotations") or {}),
            target=instance,
            operations=list(operations.get("items") or []),
        )

    async def _get_or_none(self, path: ApiPath) -> JsonObj | None:
        try:
            return await self._client.request("GET", path, timeout_s=self._timeout)
        except NotFoundError:
            return None


async def _none() -> None:
    return None
