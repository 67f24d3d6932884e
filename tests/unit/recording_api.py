"""A stand-in API server on 127.0.0.1 that records the raw path of every request it receives.

"Raw" is the point (issue 24, F1): ``request.raw_path`` is what came over the socket, before any
decoding or normalisation, so a test sees exactly which object a request would have touched.
It answers discovery for the operator's kinds (and Namespace), ``{"metadata": ...}`` for
anything else, so the applier and the client run their real code paths against it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
from aiohttp import web

from vworkspace.api import constants
from vworkspace.kube.rest.client import KubeClient
from vworkspace.kube.rest.config import ClusterConfig

DISCOVERY = {
    f"/apis/{constants.APPS_GROUP}/{constants.VERSION}": [
        {"name": "applicationinstances", "kind": "ApplicationInstance", "namespaced": True}
    ],
    f"/apis/{constants.OPS_GROUP}/{constants.VERSION}": [
        {"name": "operations", "kind": "Operation", "namespaced": True},
        {"name": "clusters", "kind": "Cluster", "namespaced": False},
    ],
    "/api/v1": [
        {"name": "namespaces", "kind": "Namespace", "namespaced": False},
        {"name": "configmaps", "kind": "ConfigMap", "namespaced": True},
    ],
}


@attrs.define
class Recorded:
    method: str
    raw_path: str


@attrs.define
class RecordingApi:
    client: KubeClient
    requests: list[Recorded] = attrs.Factory(list)

    def writes(self) -> list[Recorded]:
        """Every request but discovery and reads."""
        return [r for r in self.requests if r.method != "GET"]

    def paths(self) -> list[str]:
        return [r.raw_path for r in self.requests if r.raw_path not in DISCOVERY]


@asynccontextmanager
async def recording_api() -> AsyncIterator[RecordingApi]:
    """A running server and a real :class:`KubeClient` pointed at it."""
    holder: list[RecordingApi] = []

    async def handle(request: web.Request) -> web.Response:
        holder[0].requests.append(Recorded(request.method, request.raw_path))
        resources = DISCOVERY.get(request.raw_path)
        if resources is not None:
            return web.json_response({"resources": resources})
        body = {
            "apiVersion": "v1",
            "kind": "Stored",
            "metadata": {"name": "stored", "namespace": "ns", "uid": "u", "resourceVersion": "1"},
        }
        return web.Response(text=json.dumps(body), content_type="application/json")

    app = web.Application()
    app.router.add_route("*", r"/{tail:[\s\S]*}", handle)  # any path, newlines included
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    client = KubeClient(
        ClusterConfig(server=f"http://127.0.0.1:{runner.addresses[0][1]}"), request_timeout=5
    )
    holder.append(RecordingApi(client))
    try:
        yield holder[0]
    finally:
        await client.close()
        await runner.cleanup()
