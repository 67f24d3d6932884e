"""What every chaos scenario needs: the mock control plane behind fault-injecting proxies on a
background event loop, the real operator process (restartable), and the secrets check.

The path of every agent request: operator process -> TcpProxy (refuse / stall the connection)
-> HttpFaultProxy (hostile answers) -> MockControlPlane. The mock and the proxies run on their
own thread's event loop, so the test body can block (sync REST calls, process waits) without
freezing them. Assertions read the mock's state directly.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from tests.chaos import report
from tests.integration.operator_process import OperatorProcess, wait_until
from vworkspace.agent.sealed import ClusterKey
from vworkspace.mockcontrolplane import MockControlPlane
from vworkspace.testing import ApiError, ControlPlane
from vworkspace.testing.faultproxy import HttpFaultProxy
from vworkspace.testing.identity import ShippedIdentity
from vworkspace.testing.proxy import Mode, TcpProxy

T = TypeVar("T")
APPS = "/apis/apps.vworkspace.io/v1alpha1"
HELM_RELEASES = "/apis/helm.toolkit.fluxcd.io/v2"


class LoopThread:
    """An asyncio loop on a daemon thread; :meth:`run` executes a coroutine there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], T]) -> T:
        async def call() -> T:
            return fn()

        return self.run(call())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class ChaosControlPlane:
    """The mock control plane behind a TcpProxy and an HttpFaultProxy."""

    def __init__(self, *, cluster: str, token: str, namespace: str, visibility: float) -> None:
        self.cluster = cluster
        self.token = token
        self.loop = LoopThread()
        self.mock = MockControlPlane(visibility_timeout=visibility)
        self.loop.run(self.mock.start())
        self.mock.state.set_bootstrap_token(cluster, token)
        self.faults = HttpFaultProxy(self.mock.url, marker_namespace=namespace)
        self.loop.run(self.faults.start())
        self.tcp = TcpProxy("127.0.0.1", self.faults.port)
        self.loop.run(self.tcp.start())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.tcp.port}"

    @property
    def state(self) -> Any:
        return self.mock.state

    def enqueue(self, job: dict[str, Any], **options: str) -> None:
        """``options``: ``encrypt`` and ``recipient`` of the mock (mockcontrolplane/sealer.py)."""
        self.loop.run(self.mock.state.enqueue(self.cluster, job, **options))

    def enqueue_all(self, jobs: list[dict[str, Any]]) -> None:
        async def put() -> None:
            for job in jobs:
                await self.mock.state.enqueue(self.cluster, job)

        self.loop.run(put(), timeout=120)

    def set_mode(self, mode: Mode) -> None:
        self.loop.call(lambda: self.tcp.set_mode(mode))

    def results(self) -> dict[str, dict[str, Any]]:
        return self.loop.call(lambda: dict(self.mock.state.results))

    def close(self) -> None:
        self.loop.run(self.tcp.stop())
        self.loop.run(self.faults.stop())
        self.loop.run(self.mock.stop())
        self.loop.close()


class Operators:
    """Incarnations of the operator process; every log is kept for the secrets grep."""

    def __init__(
        self,
        plane: ControlPlane,
        namespace: str,
        logs: Path,
        chaos: ChaosControlPlane,
        *,
        identity: ShippedIdentity | None = None,
    ) -> None:
        self.plane = plane
        # None: the admin kubeconfig; else the shipped ServiceAccount (a 403 fails the test).
        self.identity = identity
        self.namespace = namespace
        self.logs = logs
        self.chaos = chaos
        self.secret_value = "chaos-secret-" + secrets.token_hex(12)
        # A value that only ever travels encrypted to the cluster's key (plant_sealed).
        self.sealed_value = "chaos-sealed-" + secrets.token_hex(12)
        self.all: list[OperatorProcess] = []

    def args(self, *extra: str) -> list[str]:
        return [
            "--agent-enabled",
            "--allow-insecure-control-plane",  # the chaos control plane is plain http
            "--control-plane-base-url",
            self.chaos.url,
            "--cluster-id",
            self.chaos.cluster,
            "--agent-token",
            self.chaos.token,
            "--agent-poll-interval",
            "2s",
            "--approval-claim-secret",
            self.secret_value,
            *extra,
        ]

    def start(self, *extra: str, ready: bool = True) -> OperatorProcess:
        log = self.logs / f"operator-{len(self.all)}.log"
        proc = OperatorProcess(
            self.plane, self.namespace, log, *self.args(*extra), identity=self.identity
        )
        self.all.append(proc)
        if ready:
            proc.wait_ready(timeout=60)
        return proc

    def stop_all(self) -> None:
        """Stop every incarnation; then fail with the first 403 report (shipped identity)."""
        failures: list[AssertionError] = []
        for proc in self.all:
            try:
                proc.stop()
            except AssertionError as err:
                failures.append(err)
        if failures:
            raise failures[0]

    def log_paths(self) -> list[Path]:
        return [proc.log_path for proc in self.all]


def seeded(name: str) -> random.Random:
    """A seeded RNG; the seed is printed so a failing run can be replayed (CHAOS_SEED=...)."""
    import os

    seed = int(os.environ.get("CHAOS_SEED") or secrets.randbits(32))
    print(f"chaos: {name}: seed {seed} (replay with CHAOS_SEED={seed})")
    return random.Random(seed)


def plant_secret(rest: Any, namespace: str, value: str) -> dict[str, Any]:
    """A Secret holding ``value``; instances reference it via spec.values.secretRef."""
    rest.post(
        f"/api/v1/namespaces/{namespace}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "chaos-values", "namespace": namespace},
            "stringData": {"values.yaml": f"password: {value}\n"},
        },
    )
    return {"source": "secretRef", "secretRef": {"name": "chaos-values", "key": "values.yaml"}}


def plant_encryption_key(rest: Any, namespace: str) -> str:
    """The cluster's age key in the operator namespace (as `keys generate --encryption` and
    `kubectl create secret` put it); returns the recipient the mock encrypts to."""
    key = ClusterKey.generate()
    rest.post(
        f"/api/v1/namespaces/{namespace}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "vworkspace-agent-encryption", "namespace": namespace},
            "stringData": {"age.key": key.secret_text() + "\n"},
        },
    )
    return key.recipient


def sealed_job(job_id: str, namespace: str, value: str) -> dict[str, Any]:
    """An instance whose inline values hold ``value``; enqueue it with ``encrypt="values"``."""
    return {
        "id": job_id,
        "kind": "apply",
        "idempotencyKey": f"applicationinstance/{namespace}/{job_id}@1",
        "payload": {
            "apiVersion": "apps.vworkspace.io/v1alpha1",
            "kind": "ApplicationInstance",
            "metadata": {"name": job_id, "namespace": namespace},
            "spec": {
                "appRef": {"catalogId": "sealed"},
                "mode": "placeholder",
                "values": {"source": "inline", "inline": {"db": {"password": value}}},
            },
        },
    }


def check_secrets(
    *, within: str, rest: Any, namespaces: list[str], logs: list[Path], planted: list[str]
) -> list[str]:
    """Scenario f: grep every operator log, Event, HelmRelease spec and ApplicationInstance
    spec for the planted values. Records the figure and returns where anything was found."""
    found: list[str] = []
    log_bytes = 0
    for path in logs:
        text = path.read_text(errors="replace") if path.exists() else ""
        log_bytes += len(text)
        found += [f"{path.name}: {p[:12]}..." for p in planted if p in text]
    events = helmreleases = instances = 0
    for ns in namespaces:
        ais = rest.get(f"{APPS}/namespaces/{ns}/applicationinstances")["items"]
        instances += len(ais)
        found += [
            f"ApplicationInstance {a['metadata']['name']}"
            for a in ais
            for p in planted
            if p in json.dumps(a.get("spec"))
        ]
        items = rest.get(f"/api/v1/namespaces/{ns}/events")["items"]
        events += len(items)
        found += [f"Event in {ns}" for e in items for p in planted if p in json.dumps(e)]
        try:
            hrs = rest.get(f"{HELM_RELEASES}/namespaces/{ns}/helmreleases")["items"]
        except ApiError:
            hrs = []
        helmreleases += len(hrs)
        found += [
            f"HelmRelease {h['metadata']['name']}"
            for h in hrs
            for p in planted
            if p in json.dumps(h.get("spec"))
        ]
    report.record_secrets(
        within=within,
        log_bytes=log_bytes,
        events=events,
        helmreleases=helmreleases,
        instances=instances,
        hits=len(found),
    )
    return found


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.2) -> float:
    return wait_until(what, check, timeout=timeout, interval=interval)


def exists(rest: Any, path: str) -> bool:
    try:
        rest.get(path)
    except ApiError as err:
        if err.status == 404:
            return False
        raise
    return True


def elapsed(start: float) -> str:
    return f"{time.monotonic() - start:.1f}s"
