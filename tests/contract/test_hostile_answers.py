"""Hostile answers from the control plane (issue 16): whatever bytes arrive, the agent goes on.

Against the in-process mock, whose scripted faults answer with raw bytes (an HTML login page,
truncated JSON, JSON of the wrong shape) the way a captive portal, a middlebox or a buggy
control plane would. The Kubernetes side is not needed for fetching, so it is a client to a
closed port and an applier that never touches it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from vworkspace.agent.applier import Applier
from vworkspace.agent.client import ControlPlaneClient
from vworkspace.agent.credentials import CredentialStore, Overrides
from vworkspace.agent.idempotency import IdempotencyStore
from vworkspace.agent.metrics import AgentMetrics
from vworkspace.agent.poller import Poller
from vworkspace.kube.clock import RealClock
from vworkspace.kube.rest.client import KubeClient
from vworkspace.kube.rest.config import ClusterConfig
from vworkspace.mockcontrolplane import MockControlPlane
from vworkspace.mockcontrolplane.state import Fault

CLUSTER = "c-hostile"
TOKEN = "tok-hostile-secret"
LOGIN_PAGE = b"<!DOCTYPE html><html><body><form action=/login>Sign in</form></body></html>"


class _NoNamespaceApplier(Applier):
    """Fetch-only tests: nothing is applied, and the operator namespace is not needed."""

    async def ensure_namespace(self, name: str) -> None:
        return None


def _unreachable_kube() -> KubeClient:
    return KubeClient(ClusterConfig(server="http://127.0.0.1:9"), request_timeout=2)


class Rig:
    def __init__(self, mock: MockControlPlane, session: aiohttp.ClientSession) -> None:
        clock = RealClock()
        self.kube = _unreachable_kube()
        self.registry = CollectorRegistry()
        self.metrics = AgentMetrics(self.registry)
        store = CredentialStore(
            self.kube,
            namespace="ops",
            overrides=Overrides(mock.url, CLUSTER, TOKEN),
            clock=clock,
        )
        self.client = ControlPlaneClient(
            session,
            credentials=store.current,
            reload=store.reload,
            clock=clock,
            rng=random.Random(7),
            backoff_initial=0.01,
            metrics=self.metrics,
        )
        self.poller = Poller(
            client=self.client,
            credentials=store,
            applier=_NoNamespaceApplier(self.kube, cluster_id=lambda: CLUSTER, clock=clock),
            idempotency=IdempotencyStore(self.kube, namespace="ops"),
            clock=clock,
            metrics=self.metrics,
            poll_interval=1,
        )

    def protocol_errors(self, endpoint: str, reason: str) -> float:
        value = self.registry.get_sample_value(
            "vworkspace_agent_protocol_errors_total", {"endpoint": endpoint, "reason": reason}
        )
        return value or 0.0


@pytest.fixture
async def rig() -> AsyncIterator[tuple[MockControlPlane, Rig]]:
    async with MockControlPlane() as mock, aiohttp.ClientSession() as session:
        mock.set_bootstrap_token(CLUSTER, TOKEN)
        rig = Rig(mock, session)
        yield mock, rig
        await rig.kube.close()


async def _fetches_until(
    mock: MockControlPlane, task: asyncio.Task[None], count: int, timeout: float = 15
) -> None:
    deadline = time.monotonic() + timeout
    while mock.state.requests < count and not task.done() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


LONG_NUMBER_JOBS = b'{"jobs": [{"id": "j1", "kind": "apply", "n": ' + b"7" * 5_000 + b"}]}"


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        # Issue 16: a 200 HTML answer to GET /api/agent/jobs killed the poller and with it the
        # operator.
        (LOGIN_PAGE, "text/html", "content_type"),
        # Issue 24, F4: an integer past Python's 4,300-digit limit raised a plain ValueError out
        # of the answer decoder, which ended Poller.run (a supervisor restart, not a counted
        # protocol error).
        (LONG_NUMBER_JOBS, "application/vnd.vworkspace.agent.v1+json", "invalid_json"),
    ],
    ids=["login-page", "5000-digit-integer"],
)
async def test_a_hostile_jobs_answer_does_not_stop_the_poller(
    rig: tuple[MockControlPlane, Rig], body: bytes, content_type: str, reason: str
) -> None:
    """Regression: each is one counted protocol error, a backoff, and the next poll."""
    mock, agent = rig
    mock.state.inject(
        Fault(
            "/api/agent/jobs",
            method="GET",
            status=200,
            body=body,
            content_type=content_type,
            count=2,
        )
    )
    stop = asyncio.Event()
    task = asyncio.create_task(agent.poller.run(stop))
    try:
        # Two hostile answers, then real (long-poll) fetches: the poller must still be polling.
        await _fetches_until(mock, task, 4)
        assert not task.done(), f"the poller ended: {task.exception() if task.done() else ''}"
        assert mock.state.requests >= 4
        assert agent.protocol_errors("jobs", reason) == 2
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
