"""The ceiling: vworkspace's writes per ApplicationInstance with nothing else (no watch, no cache,
no queue), as fast as the API server takes them.

For each instance, in order: the finalizer (merge patch guarded by the resourceVersion), the
HelmRepository and HelmRelease together (server-side apply with force as
``vworkspace-operator``), then the status (merge patch of the status subresource). At most ``concurrency`` instances are in flight
over one aiohttp connection pool. With ``create``, the loop first creates each instance itself
(the burst scenario: create + writes); without, it lists the namespace and writes every instance
not yet reconciled (the restart scenario).

    KUBECONFIG=... python -m bench.peers.bare_loop --namespace bench [--create 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import json
import os
import ssl
import time
from pathlib import Path

import aiohttp
import yaml

from bench.peers import objects
from vworkspace.api.jsontypes import JsonObj

MERGE = "application/merge-patch+json"
APPLY = "application/apply-patch+yaml"


class Api:
    def __init__(self, session: aiohttp.ClientSession, server: str, token: str) -> None:
        self._session = session
        self._server = server.rstrip("/")
        self._auth = f"Bearer {token}"

    async def call(
        self, method: str, path: str, body: JsonObj | None = None, *, content: str = ""
    ) -> JsonObj:
        headers = {"Authorization": self._auth, "Accept": "application/json"}
        data = None
        if body is not None:
            headers["Content-Type"] = content or "application/json"
            data = json.dumps(body)
        async with self._session.request(
            method, self._server + path, data=data, headers=headers
        ) as resp:
            text = await resp.text()
            if resp.status >= 300:
                raise RuntimeError(f"{method} {path}: {resp.status} {text[:300]}")
            result: JsonObj = json.loads(text)
            return result


async def _write(api: Api, ai: JsonObj) -> None:
    meta = ai["metadata"]
    own = f"{objects.collection(objects.INSTANCES, meta['namespace'])}/{meta['name']}"
    if objects.FINALIZER not in (meta.get("finalizers") or []):
        finalizers = [*(meta.get("finalizers") or []), objects.FINALIZER]
        patch = {"metadata": {"finalizers": finalizers, "resourceVersion": meta["resourceVersion"]}}
        ai = await api.call(
            "PATCH", f"{own}?fieldManager={objects.FIELD_MANAGER}", patch, content=MERGE
        )
    query = f"?fieldManager={objects.FIELD_MANAGER}&force=true"
    applies = []
    for resource, obj in (
        (objects.HELM_REPOSITORIES, objects.helm_repository(ai)),
        (objects.HELM_RELEASES, objects.helm_release(ai)),
    ):
        path = f"{objects.collection(resource, meta['namespace'])}/{obj['metadata']['name']}"
        applies.append(api.call("PATCH", path + query, obj, content=APPLY))
    await asyncio.gather(*applies)  # as vworkspace does: three round trips, not four
    status = objects.status(ai, now=datetime.datetime.now(datetime.UTC))
    await api.call(
        "PATCH",
        f"{own}/status?fieldManager={objects.FIELD_MANAGER}",
        {"status": status},
        content=MERGE,
    )


async def run(
    *, server: str, token: str, ca_data: str, namespace: str, create: int, concurrency: int
) -> int:
    """Write every instance (creating ``create`` first when > 0); the number written."""
    context = ssl.create_default_context(cadata=ca_data)
    connector = aiohttp.TCPConnector(ssl=context, limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        api = Api(session, server, token)
        gate = asyncio.Semaphore(concurrency)
        instances = objects.collection(objects.INSTANCES, namespace)

        async def one(ai: JsonObj) -> None:
            async with gate:
                if create:
                    ai = await api.call("POST", instances, ai)
                await _write(api, ai)

        if create:
            todo = [objects.instance(i, namespace) for i in range(create)]
        else:
            listed = await api.call("GET", instances)
            todo = [ai for ai in listed["items"] if not objects.reconciled(ai)]
        await asyncio.gather(*(one(ai) for ai in todo))
        return len(todo)


def credentials(kubeconfig: Path) -> tuple[str, str, str]:
    """(server, token, CA data) of the current context of a token kubeconfig."""
    config = yaml.safe_load(kubeconfig.read_text())
    context_name = config["current-context"]
    context = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
    ca_data = base64.b64decode(cluster["certificate-authority-data"]).decode()
    return cluster["server"], user["token"], ca_data


def main() -> None:
    parser = argparse.ArgumentParser(description="the bare write loop (benchmark ceiling)")
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--create", type=int, default=0, help="create this many instances first")
    parser.add_argument("--concurrency", type=int, default=16, help="instances in flight")
    args = parser.parse_args()
    if not os.environ.get("KUBECONFIG"):
        parser.error("KUBECONFIG is not set")
    server, token, ca_data = credentials(Path(os.environ["KUBECONFIG"]))
    started = time.monotonic()
    written = asyncio.run(
        run(
            server=server,
            token=token,
            ca_data=ca_data,
            namespace=args.namespace,
            create=args.create,
            concurrency=args.concurrency,
        )
    )
    print(json.dumps({"written": written, "seconds": round(time.monotonic() - started, 2)}))


if __name__ == "__main__":
    main()
