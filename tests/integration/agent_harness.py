"""The Pull agent assembled in-process against the real API server and an in-process mock."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry

from vworkspace.agent.applier import DEFAULT_ALLOWED, Applier
from vworkspace.agent.client import ControlPlaneClient
from vworkspace.agent.credentials import CredentialStore, Overrides
from vworkspace.agent.idempotency import IdempotencyStore
from vworkspace.agent.metrics import AgentMetrics
from vworkspace.agent.poller import Poller
from vworkspace.kube.clock import RealClock
from vworkspace.kube.rest.client import KubeClient
from vworkspace.mockcontrolplane import MockControlPlane

CLUSTER = "cluster-it"
TOKEN = "token-it"


class Agent:
    def __init__(
        self,
        kube: KubeClient,
        mock: MockControlPlane,
        namespace: str,
        *,
        use_overrides: bool = True,
        allowed: frozenset[tuple[str, str]] = DEFAULT_ALLOWED,
        max_payload: int = 64 * 1024,
        concurrency: int = 4,
    ) -> None:
        self.kube = kube
        self.mock = mock
        clock = RealClock()
        overrides = Overrides(mock.url, CLUSTER, TOKEN) if use_overrides else Overrides()
        self.store = CredentialStore(kube, namespace=namespace, overrides=overrides, clock=clock)
        self.registry = CollectorRegistry()
        self.metrics = AgentMetrics(self.registry)
        self.session = aiohttp.ClientSession()
        self.client = ControlPlaneClient(
            self.session,
            credentials=self.store.current,
            reload=self.store.reload,
            clock=clock,
            backoff_initial=0.05,
            metrics=self.metrics,
        )
        self.applier = Applier(
            kube,
            cluster_id=lambda: CLUSTER,
            clock=clock,
            allowed=allowed,
            max_payload_bytes=max_payload,
        )
        self.idempotency = IdempotencyStore(kube, namespace=namespace)
        self.poller = Poller(
            client=self.client,
            credentials=self.store,
            applier=self.applier,
            idempotency=self.idempotency,
            clock=clock,
            metrics=self.metrics,
            poll_interval=1,
            concurrency=concurrency,
        )
        self.stop_event = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> Agent:
        self._tasks.append(asyncio.create_task(self.store.run()))
        await asyncio.wait_for(self.store.informer.wait_synced(), 10)
        self._tasks.append(asyncio.create_task(self.poller.run(self.stop_event)))
        return self

    async def stop(self) -> None:
        self.stop_event.set()
        await asyncio.wait_for(self._tasks[-1], 30)
        await self.kill()

    async def kill(self) -> None:
        """Stop at once, like a SIGKILL: nothing in flight gets to finish."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.session.close()

    def count(self, outcome: str) -> float:
        return (
            self.registry.get_sample_value("vworkspace_agent_jobs_total", {"outcome": outcome})
            or 0.0
        )


async def wait_result(mock: MockControlPlane, job_id: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = mock.job_result(job_id)
        if found is not None:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"no result for job {job_id} after {timeout}s")


def instance(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps.vworkspace.io/v1alpha1",
        "kind": "ApplicationInstance",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.vworkspace.io/managed-by": "someone-else"},
        },
        "spec": {"appRef": {"catalogId": "odoo"}, "mode": "placeholder", **spec},
    }
