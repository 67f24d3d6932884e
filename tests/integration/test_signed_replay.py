"""Replay protection and start-up of signed Pull (issue 24, F3 and "Startup"): the real operator
process (`python -m vworkspace run --agent-require-signed-jobs`) against the real API server and
an in-process mock control plane that records every result posted to it, the duplicates too.

* A hop delivers the same signed job again, after a newer job changed the object: the replays
  are ``noop`` / ``replayed`` and the object keeps the newer state, also when the replay comes
  after the operator was killed and started again (the ids are in the ConfigMap
  ``vworkspace-applied-jobs``, read again before the first fetch).
* A signed job without an idempotencyKey is refused and applies nothing.
* A signed job queued before the operator starts, signed by a key in the trusted-keys Secret,
  succeeds: the poller waits for the keys before its first fetch. The black-box run shows it end
  to end, but there the keys are usually listed before the first job arrives anyway; the
  in-process run makes the race certain by holding the keys' LIST (a slow API server) until the
  job is answered, or 3 s at most.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import CollectorRegistry

from vworkspace.agent import signing
from vworkspace.agent.credentials import Overrides
from vworkspace.api.jsontypes import JsonObj
from vworkspace.app.hardening_flags import Hardening
from vworkspace.app.wiring import AgentSettings, OperatorSettings, build_manager
from vworkspace.kube.rest.client import KubeClient
from vworkspace.mockcontrolplane import MockControlPlane
from vworkspace.mockcontrolplane.state import MockState
from vworkspace.testing import ControlPlane

from .operator_process import OperatorProcess
from .test_signed_jobs import exists, instance_job, signed, stamp, trust

pytestmark = pytest.mark.integration

CLUSTER = "cluster-signed"  # what test_signed_jobs.signed() signs for
TOKEN = "replay-token"


class RecordingState(MockState):
    """The mock's state, keeping every result posted (the mock itself keeps the first)."""

    def __init__(self) -> None:
        super().__init__()
        self.posted: list[tuple[str, JsonObj]] = []

    def record_result(self, job_id: str, result: JsonObj) -> bool:
        self.posted.append((job_id, result))
        return super().record_result(job_id, result)

    def results_of(self, job_id: str) -> list[tuple[str, str]]:
        return [(r["outcome"], r.get("error", "")) for j, r in self.posted if j == job_id]


async def wait_results(state: RecordingState, job_id: str, count: int) -> list[tuple[str, str]]:
    deadline = time.monotonic() + 30
    while len(state.results_of(job_id)) < count:
        assert time.monotonic() < deadline, f"{job_id}: {state.results_of(job_id)}"
        await asyncio.sleep(0.05)
    return state.results_of(job_id)


def operator_for(
    plane: ControlPlane, namespace: str, log: Path, mock: MockControlPlane, *args: str
) -> OperatorProcess:
    return OperatorProcess(
        plane,
        namespace,
        log,
        *("--agent-enabled", "--control-plane-base-url", mock.url, "--cluster-id", CLUSTER),
        *("--agent-token", TOKEN, "--agent-poll-interval", "2s", "--agent-require-signed-jobs"),
        "--allow-insecure-control-plane",  # the mock is plain http on 127.0.0.1
        *args,
    )


def catalog_of(plane: ControlPlane, namespace: str, name: str) -> str:
    obj = plane.rest().get(
        f"/apis/apps.vworkspace.io/v1alpha1/namespaces/{namespace}/applicationinstances/{name}"
    )
    return str(obj["spec"]["appRef"]["catalogId"])


def window() -> dict[str, str]:
    return {
        "createdAt": stamp(datetime.timedelta()),
        "expiresAt": stamp(datetime.timedelta(hours=1)),
    }


async def test_a_replayed_signed_job_is_noop_replayed_and_never_applied_also_after_a_restart(
    control_plane: ControlPlane, vworkspace_crds: list[str], kube_namespace: str, tmp_path: Path
) -> None:
    ns = kube_namespace
    key = Ed25519PrivateKey.generate()
    trust(control_plane, ns, {"k1": signing.public_pem(key.public_key())})
    state = RecordingState()
    operator: OperatorProcess | None = None
    async with MockControlPlane(state=state) as mock:
        mock.set_bootstrap_token(CLUSTER, TOKEN)
        try:
            operator = operator_for(control_plane, ns, tmp_path / "operator-1.log", mock)
            await asyncio.to_thread(operator.wait_ready)
            # The control plane's job, recorded by a hop on the way...
            first = signed(
                instance_job("r-1", ns, "app", idempotencyKey=f"ai/{ns}/app@1", **window()),
                key,
                "k1",
            )
            await mock.enqueue(CLUSTER, first, signing="as-is")
            assert await wait_results(state, "r-1", 1) == [("succeeded", "")]
            # ...then a newer one changes the object...
            newer = instance_job(
                "r-2", ns, "app", idempotencyKey=f"ai/{ns}/app@2", catalog="wiki", **window()
            )
            await mock.enqueue(CLUSTER, signed(newer, key, "k1"), signing="as-is")
            assert await wait_results(state, "r-2", 1) == [("succeeded", "")]
            assert catalog_of(control_plane, ns, "app") == "wiki"
            # ...and the hop delivers the recorded job again, twice: never applied.
            for count in (2, 3):
                await mock.enqueue(CLUSTER, first, signing="as-is")
                assert (await wait_results(state, "r-1", count))[-1] == ("noop", "replayed")
                assert catalog_of(control_plane, ns, "app") == "wiki"
            metric = operator.metric
            assert metric("vworkspace_agent_job_rejections_total", reason="replayed") == 2
            assert metric("vworkspace_agent_jobs_total", outcome="succeeded") == 2

            # A signed job without an idempotencyKey is refused, nothing applied.
            keyless = signed(instance_job("r-nokey", ns, "keyless", **window()), key, "k1")
            await mock.enqueue(CLUSTER, keyless, signing="as-is")
            assert await wait_results(state, "r-nokey", 1) == [
                (
                    "failed",
                    "signature: a signed job must carry an idempotencyKey "
                    "(--agent-require-signed-jobs)",
                )
            ]
            assert not exists(control_plane, ns, "keyless")
            assert metric("vworkspace_agent_job_rejections_total", reason="no_idempotency_key") == 1

            # Killed and started again: the ids come back from the ConfigMap before the first job.
            operator.stop()
            stored = control_plane.rest().get(
                f"/api/v1/namespaces/{ns}/configmaps/vworkspace-applied-jobs"
            )["data"]
            assert json.loads(stored["applied-keys.json"]) == [f"ai/{ns}/app@1", f"ai/{ns}/app@2"]
            assert sorted(json.loads(stored["applied-job-ids.json"])) == ["r-1", "r-2"]
            operator = operator_for(control_plane, ns, tmp_path / "operator-2.log", mock)
            # Enqueued once the new process polls: a job enqueued at once could go to the long
            # poll of the killed process, which this loop has not yet seen disconnect.
            await asyncio.to_thread(operator.wait_ready)
            await mock.enqueue(CLUSTER, first, signing="as-is")
            assert (await wait_results(state, "r-1", 4))[-1] == ("noop", "replayed")
            assert catalog_of(control_plane, ns, "app") == "wiki"
            assert state.results_of("r-1") == [("succeeded", "")] + [("noop", "replayed")] * 3
        finally:
            if operator is not None:
                operator.stop()


async def test_a_signed_job_queued_before_the_start_succeeds_with_the_trusted_keys_of_a_secret(
    control_plane: ControlPlane, vworkspace_crds: list[str], kube_namespace: str, tmp_path: Path
) -> None:
    ns = kube_namespace
    key = Ed25519PrivateKey.generate()
    pem = signing.public_pem(key.public_key())
    control_plane.rest().post(
        f"/api/v1/namespaces/{ns}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "signing-keys"},
            "data": {"k1": base64.b64encode(pem.encode()).decode()},
        },
    )
    state = RecordingState()
    names = [f"early-{index}" for index in range(3)]
    async with MockControlPlane(state=state) as mock:
        mock.set_bootstrap_token(CLUSTER, TOKEN)
        for name in names:  # waiting at the control plane when the operator starts
            job = instance_job(name, ns, name, idempotencyKey=f"ai/{ns}/{name}@1", **window())
            await mock.enqueue(CLUSTER, signed(job, key, "k1"), signing="as-is")
        operator = operator_for(
            control_plane,
            ns,
            tmp_path / "operator.log",
            mock,
            *("--agent-trusted-keys", "secret/signing-keys"),
        )
        try:
            for name in names:
                assert await wait_results(state, name, 1) == [("succeeded", "")], operator.output()
                assert exists(control_plane, ns, name)
            unknown = operator.metric("vworkspace_agent_job_rejections_total", reason="unknown_key")
            assert unknown in (None, 0)
        finally:
            operator.stop()


async def test_the_poller_fetches_no_job_before_a_slow_keys_list_completes(
    control_plane: ControlPlane,
    vworkspace_crds: list[str],
    kube_namespace: str,
    kube: KubeClient,
) -> None:
    ns = kube_namespace
    key = Ed25519PrivateKey.generate()
    trust(control_plane, ns, {"k1": signing.public_pem(key.public_key())})
    state = RecordingState()
    answered = asyncio.Event()
    real_record = state.record_result

    def record(job_id: str, result: JsonObj) -> bool:
        answered.set()
        return real_record(job_id, result)

    state.record_result = record  # type: ignore[method-assign]
    real_request = kube.request

    async def slow_keys_list(method: str, path: str, **kwargs: Any) -> JsonObj:
        selector = (kwargs.get("query") or {}).get("fieldSelector", "")
        if method == "GET" and selector == "metadata.name=vworkspace-job-signing-keys":
            # Listed once the job is answered (at once, without the wait), or 3 s late.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(answered.wait(), 3)
        return await real_request(method, path, **kwargs)

    kube.request = slow_keys_list  # type: ignore[method-assign]
    async with MockControlPlane(state=state) as mock, aiohttp.ClientSession() as http:
        mock.set_bootstrap_token(CLUSTER, TOKEN)
        job = instance_job("early", ns, "early", idempotencyKey=f"ai/{ns}/early@1", **window())
        await mock.enqueue(CLUSTER, signed(job, key, "k1"), signing="as-is")
        agent = AgentSettings(
            overrides=Overrides(mock.url, CLUSTER, TOKEN),
            poll_interval=1,
            hardening=Hardening(require_signed_jobs=True),
        )
        settings = OperatorSettings(namespace=ns, agent=agent)
        manager = build_manager(settings, kube, registry=CollectorRegistry(), http=http)
        stop = asyncio.Event()
        running = asyncio.create_task(manager.run(stop))
        try:
            assert await wait_results(state, "early", 1) == [("succeeded", "")]
            assert exists(control_plane, ns, "early")
        finally:
            stop.set()
            assert await asyncio.wait_for(running, 30) == 0
