"""What the rest of the operator needs of the API server: :class:`KubeApi`, a small protocol.

Every component (controllers, engines, the agent, webhooks) depends on this protocol, never on
the concrete :class:`~vworkspace.kube.rest.client.KubeClient`, so unit tests hand them an
in-memory API with real semantics (``vworkspace.testing.fakeapi``) instead of the network.

The protocol is two primitives, :meth:`KubeApi.request` and :meth:`KubeApi.stream_lines`, plus
typed verbs over them. :class:`RestVerbs` implements the verbs once, in terms of the primitives,
for the real client and the fake alike: both then build the same REST paths and bodies, so a
test on the fake exercises the same path-building code as production (only the transport
differs). Trade-off: a fake must parse REST paths rather than receive typed calls; that is the
price of not having two implementations of every verb that could drift apart.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.kube.rest.paths import ApiPath
from vworkspace.kube.rest.resources import ResourceType, key_of

JSON = "application/json"
APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"

__all__ = ["APPLY_PATCH", "JSON", "MERGE_PATCH", "KubeApi", "RestVerbs"]


class KubeApi(Protocol):
    """The API server as the operator uses it (the real client, or the in-memory fake)."""

    async def request(
        self,
        method: str,
        path: ApiPath,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = JSON,
        timeout_s: float | None = None,
    ) -> JsonObj:
        """One request; the decoded JSON answer; raises ``ApiError`` (kube/rest/errors.py)."""
        ...

    def stream_lines(
        self,
        path: ApiPath,
        *,
        query: Mapping[str, str],
        connect_timeout: float,
        total_timeout: float,
    ) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """A watch: newline-delimited JSON events, as raw lines."""
        ...

    async def get(self, resource: ResourceType, key: ObjectKey) -> JsonObj: ...

    async def list(
        self, resource: ResourceType, namespace: str | None = None, **query: str
    ) -> JsonObj: ...

    async def create(
        self, resource: ResourceType, obj: JsonObj, *, field_manager: str
    ) -> JsonObj: ...

    async def delete(
        self, resource: ResourceType, key: ObjectKey, *, propagation: str = "Background"
    ) -> JsonObj: ...

    async def merge_patch(
        self,
        resource: ResourceType,
        key: ObjectKey,
        patch: JsonObj,
        *,
        field_manager: str,
        subresource: str | None = None,
    ) -> JsonObj: ...

    async def replace(
        self,
        resource: ResourceType,
        obj: JsonObj,
        *,
        field_manager: str,
        subresource: str | None = None,
    ) -> JsonObj: ...

    async def apply(
        self,
        resource: ResourceType,
        obj: JsonObj,
        *,
        field_manager: str,
        force: bool = True,
        subresource: str | None = None,
    ) -> JsonObj: ...


class RestVerbs(abc.ABC):
    """The typed verbs of :class:`KubeApi`, written once over :meth:`request` (which a subclass
    provides)."""

    @abc.abstractmethod
    async def request(
        self,
        method: str,
        path: ApiPath,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = JSON,
        timeout_s: float | None = None,
    ) -> JsonObj:
        """Send one request (the transport is the subclass's)."""

    async def get(self, resource: ResourceType, key: ObjectKey) -> JsonObj:
        return await self.request("GET", resource.path(key))

    async def list(
        self, resource: ResourceType, namespace: str | None = None, **query: str
    ) -> JsonObj:
        return await self.request("GET", resource.collection_path(namespace), query=query)

    async def create(self, resource: ResourceType, obj: JsonObj, *, field_manager: str) -> JsonObj:
        key = (
            key_of(obj)
            if obj.get("metadata", {}).get("name")
            else ObjectKey(obj["metadata"].get("namespace"), "")
        )
        return await self.request(
            "POST",
            resource.collection_path(key.namespace),
            body=obj,
            query={"fieldManager": field_manager},
        )

    async def delete(
        self, resource: ResourceType, key: ObjectKey, *, propagation: str = "Background"
    ) -> JsonObj:
        return await self.request(
            "DELETE",
            resource.path(key),
            body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation},
        )

    async def merge_patch(
        self,
        resource: ResourceType,
        key: ObjectKey,
        patch: JsonObj,
        *,
        field_manager: str,
        subresource: str | None = None,
    ) -> JsonObj:
        return await self.request(
            "PATCH",
            resource.path(key, subresource),
            body=patch,
            content_type=MERGE_PATCH,
            query={"fieldManager": field_manager},
        )

    async def replace(
        self,
        resource: ResourceType,
        obj: JsonObj,
        *,
        field_manager: str,
        subresource: str | None = None,
    ) -> JsonObj:
        return await self.request(
            "PUT",
            resource.path(key_of(obj), subresource),
            body=obj,
            query={"fieldManager": field_manager},
        )

    async def apply(
        self,
        resource: ResourceType,
        obj: JsonObj,
        *,
        field_manager: str,
        force: bool = True,
        subresource: str | None = None,
    ) -> JsonObj:
        """Server-side apply ``obj`` (only the fields this manager owns).

        ``force`` defaults to true: a controller owns the fields it applies, as the Kubernetes
        SSA documentation recommends. A conflict without force raises
        :class:`~vworkspace.kube.rest.errors.ConflictError` whose ``causes`` name the other field
        manager and the field path.
        """
        if not field_manager:
            raise ValueError("server-side apply needs an explicit field manager")
        query = {"fieldManager": field_manager, "force": "true" if force else "false"}
        return await self.request(
            "PATCH",
            resource.path(key_of(obj), subresource),
            body=obj,
            content_type=APPLY_PATCH,
            query=query,
        )
