"""When is every instance reconciled? Two watches, not a poll.

Listing all instances and all HelmReleases four times a second (what the benchmark first did)
costs the API server thousands of object serialisations per second while a contender runs: a
tax on the contenders that watch-driven operators pay during the whole run, and the bare loop
(which finishes before the first check) hardly at all. Two watches (instances, HelmReleases),
started before the scenario and shared by every contender, cost one serialisation per change
instead, and the count is known the moment the last write lands.

A watch that ends is reopened from the last resourceVersion; 410 Gone relists.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from pathlib import Path
from typing import Any

import aiohttp

from bench.peers import bare_loop, objects
from vworkspace.api.jsontypes import JsonObj


class Completion:
    """Reconciled instances and existing HelmReleases of one namespace, kept by two watches in a
    background thread; :meth:`done` is how many instances are reconciled with their release."""

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        self._server, self._token, ca_data = bare_loop.credentials(kubeconfig)
        self._ssl = ssl.create_default_context(cadata=ca_data)
        self._namespace = namespace
        self._lock = threading.Lock()
        self._reconciled: set[str] = set()
        self._releases: set[str] = set()
        self._ready = threading.Event()
        self._listed = 0
        self.error: BaseException | None = None
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._run, name="completion", daemon=True)

    def __enter__(self) -> Completion:
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError(f"completion watches not started: {self.error}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(10)

    def done(self) -> int:
        if self.error is not None:
            raise RuntimeError(f"completion watch failed: {self.error}")
        with self._lock:
            return len(self._reconciled & self._releases)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._task = self._loop.create_task(self._main())
        try:
            self._loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass  # stopped by __exit__
        except BaseException as err:  # reported by done()
            self.error = err
            self._ready.set()
        finally:
            self._loop.close()

    async def _main(self) -> None:
        connector = aiohttp.TCPConnector(ssl=self._ssl)
        headers = {"Authorization": f"Bearer {self._token}"}
        async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
            await asyncio.gather(
                self._follow(session, objects.INSTANCES, self._on_instance),
                self._follow(session, objects.HELM_RELEASES, self._on_release),
            )

    def _on_instance(self, kind: str, obj: JsonObj) -> None:
        name = obj["metadata"]["name"]
        with self._lock:
            if kind != "DELETED" and objects.reconciled(obj):
                self._reconciled.add(name)
            else:
                self._reconciled.discard(name)

    def _on_release(self, kind: str, obj: JsonObj) -> None:
        name = obj["metadata"]["name"]
        with self._lock:
            if kind == "DELETED":
                self._releases.discard(name)
            else:
                self._releases.add(name)

    async def _follow(self, session: aiohttp.ClientSession, resource: str, on: Any) -> None:
        path = self._server + objects.collection(resource, self._namespace)
        version = await self._list(session, path, on)
        self._listed += 1
        if self._listed == 2:
            self._ready.set()
        while True:
            query = (
                f"?watch=true&allowWatchBookmarks=true&timeoutSeconds=600&resourceVersion={version}"
            )
            async with session.get(path + query, timeout=aiohttp.ClientTimeout(total=700)) as resp:
                if resp.status == 410:
                    version = await self._list(session, path, on)
                    continue
                resp.raise_for_status()
                async for line in resp.content:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        version = await self._list(session, path, on)
                        break
                    version = obj.get("metadata", {}).get("resourceVersion", version)
                    if event.get("type") != "BOOKMARK":
                        on(event["type"], obj)

    async def _list(self, session: aiohttp.ClientSession, path: str, on: Any) -> str:
        async with session.get(path, timeout=aiohttp.ClientTimeout(total=120)) as resp:
            resp.raise_for_status()
            page = await resp.json()
        for item in page.get("items") or []:
            on("ADDED", item)
        return str(page["metadata"]["resourceVersion"])
