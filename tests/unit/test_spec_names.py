"""Names the operator reads from specs (issue 24, F1): one that cannot be a Kubernetes name is
refused before it reaches a path, and ends as a clear error (an admission denial, an engine
failure on the object's conditions, a reconcile that is not retried) instead of a crash or a
hot loop."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from tests.unit.test_admission_rules import operation, target
from tests.unit.test_controller import KEY, ScriptedReconciler, run_until, sample
from tests.unit.test_webhook_server import ScriptedLookup, post, review
from vworkspace.api.admission import World
from vworkspace.api.applicationinstance import ApplicationInstanceView
from vworkspace.api.meta import ObjectKey
from vworkspace.api.names import InvalidNameError, check_namespace
from vworkspace.engines.base import EngineError
from vworkspace.engines.seaweedvalues import load_values
from vworkspace.kube.clock import FakeClock
from vworkspace.kube.metrics import Metrics
from vworkspace.kube.runtime.controller import Controller
from vworkspace.kube.runtime.workqueue import WorkQueue
from vworkspace.kube.tls import CertificateReloader
from vworkspace.testing.fakeapi import FakeApi
from vworkspace.webhooks.certs import write_webhook_certs
from vworkspace.webhooks.server import OPERATION_PATH, WebhookMetrics, WebhookServer


async def test_an_operation_whose_target_cannot_be_a_name_is_denied_without_a_lookup(
    tmp_path: Path,
) -> None:
    files = write_webhook_certs(tmp_path, hosts=("127.0.0.1",))
    lookup = ScriptedLookup(World(target=target()))
    server = WebhookServer(
        host="127.0.0.1",
        port=0,
        certificates=CertificateReloader(cert=files.cert, key=files.key),
        lookup=lookup,
        approval_secret="",
        clock=FakeClock(),
        metrics=WebhookMetrics.create(CollectorRegistry()),
    )
    op = operation()
    op["spec"]["targetRef"]["name"] = "../../../apis/velero.io/v1/namespaces/x/backups/keep-me"
    async with TestClient(TestServer(server.application())) as client:
        response = await post(client, OPERATION_PATH, review(op))
    assert response["allowed"] is False
    assert response["status"]["message"].startswith(
        'spec.targetRef.name "../../../apis/velero.io/v1/namespaces/x/backups/keep-me" is not a '
        "valid name: a lowercase RFC 1123 subdomain"
    )
    assert lookup.calls == 0


@pytest.mark.parametrize("source", ["secretRef", "configMapRef"])
async def test_a_values_reference_that_cannot_be_a_name_is_an_engine_error(source: str) -> None:
    ai = {
        "metadata": {"name": "db", "namespace": "team-a"},
        "spec": {"values": {"source": source, source: {"name": "../kube-system/x", "key": "v"}}},
    }
    api = FakeApi()
    with pytest.raises(EngineError, match=rf'^load values: spec\.values\.{source}\.name "\.\./'):
        await load_values(api, ApplicationInstanceView(ai))
    assert api.requests == []  # refused before any request


async def test_an_invalid_name_ends_a_reconcile_without_retries() -> None:
    clock = FakeClock()
    metrics = Metrics(CollectorRegistry())
    queue: WorkQueue[ObjectKey] = WorkQueue("test", clock=clock, metrics=metrics.queue("test"))
    with pytest.raises(InvalidNameError) as err:
        check_namespace("a/../b", field="namespace")
    reconciler = ScriptedReconciler(clock, [err.value])
    controller = Controller(
        "test", reconciler, queue, workers=1, metrics=metrics.controller("test")
    )
    task = asyncio.create_task(controller.run())
    queue.add(KEY)
    await run_until(clock, reconciler, 1)
    await clock.advance(2000)  # far beyond the longest backoff
    assert len(reconciler.calls) == 1
    terminal = "controller_runtime_terminal_reconcile_errors_total"
    assert sample(metrics, terminal, controller="test") == 1
    queue.shutdown()
    await task
