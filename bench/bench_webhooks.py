"""Benchmark: what the admission webhooks add to a write, through the real API server.

Starts the real test control plane (CRDs installed) and the webhook server in this process (the
same code `run --webhooks-enabled` serves), registers the shipped ValidatingWebhookConfiguration
pointed at it, then creates N Operations (each does three live lookups: Namespace, target,
Operations of the namespace) and N ApplicationInstances, one at a time, timing each create as
the client sees it. The same creates in a namespace the webhook does not select give the
baseline. Prints one JSON object with p50/p99 per kind, with and without the webhook.

    python -m bench.bench_webhooks [--count 200]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from tests.integration import webhook_harness as harness
from vworkspace.api import crdgen
from vworkspace.app.logging import configure as configure_logging
from vworkspace.kube.clock import RealClock
from vworkspace.kube.rest.client import KubeClient
from vworkspace.kube.rest.resources import APPLICATION_INSTANCES, NAMESPACES, OPERATIONS
from vworkspace.kube.tls import CertificateReloader
from vworkspace.testing import ControlPlane, find_assets
from vworkspace.testing.crds import install_crds
from vworkspace.testing.objects import managed_instance, operation
from vworkspace.webhooks.certs import new_ca, write_webhook_certs
from vworkspace.webhooks.lookup import ClusterLookup
from vworkspace.webhooks.server import (
    INSTANCE_PATH,
    OPERATION_PATH,
    WebhookMetrics,
    WebhookServer,
)

CAPABILITIES = {"ops.vworkspace.io/backup": "velero"}
LATENCY = "controller_runtime_webhook_latency_seconds"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(values, 0.5) * 1000, 2),
        "p99_ms": round(percentile(values, 0.99) * 1000, 2),
    }


async def create_namespace(kube: KubeClient, namespace: str) -> None:
    await kube.create(NAMESPACES, {"metadata": {"name": namespace}}, field_manager="bench")


async def timed_creates(kube: KubeClient, namespace: str, count: int) -> dict[str, list[float]]:
    """Create the target, then ``count`` Backup Operations and instances, timing each create."""
    await kube.create(
        APPLICATION_INSTANCES,
        managed_instance("target", namespace, annotations=CAPABILITIES),
        field_manager="bench",
    )
    times: dict[str, list[float]] = {"operation": [], "applicationinstance": []}
    for i in range(count):
        start = time.perf_counter()
        op = operation(f"op-{i}", namespace, target="target", parameters={"ttl": "24h"})
        await kube.create(OPERATIONS, op, field_manager="bench")
        times["operation"].append(time.perf_counter() - start)
        start = time.perf_counter()
        await kube.create(
            APPLICATION_INSTANCES, managed_instance(f"app-{i}", namespace), field_manager="bench"
        )
        times["applicationinstance"].append(time.perf_counter() - start)
    return times


async def main(count: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    with ControlPlane(assets=find_assets(dict(os.environ))) as plane:
        install_crds(plane.rest(), [crdgen.crd(info) for info in crdgen.RESOURCES])
        kube = await KubeClient.from_kubeconfig(str(plane.kubeconfig_path))
        ca = new_ca("bench-ca", validity=datetime.timedelta(days=1))
        files = write_webhook_certs(work, hosts=("127.0.0.1",), ca=ca)
        registry = CollectorRegistry()
        server = WebhookServer(
            host="127.0.0.1",
            port=0,
            certificates=CertificateReloader(cert=files.cert, key=files.key),
            lookup=ClusterLookup(kube),
            approval_secret="",
            clock=RealClock(),
            metrics=WebhookMetrics.create(registry),
        )
        stop = asyncio.Event()
        task = asyncio.create_task(server.run(stop))
        await server.started.wait()
        # The configuration selects only namespace "guarded"; "open" is the baseline.
        config = harness.local_configuration(
            base_url=f"https://127.0.0.1:{server.port}", ca_pem=ca.cert_pem, namespace="guarded"
        )
        await harness.register(kube, config)
        try:
            await create_namespace(kube, "open")
            baseline = await timed_creates(kube, "open", count)
            await create_namespace(kube, "guarded")
            await harness.wait_until_enforced(kube, "guarded")
            guarded = await timed_creates(kube, "guarded", count)
        finally:
            await harness.unregister(kube, config)
            stop.set()
            await task
            await kube.close()
    served = {
        path.rsplit("-", 1)[-1]: round(
            1000
            * (registry.get_sample_value(f"{LATENCY}_sum", {"webhook": path}) or 0.0)
            / (registry.get_sample_value(f"{LATENCY}_count", {"webhook": path}) or 1.0),
            2,
        )
        for path in (OPERATION_PATH, INSTANCE_PATH)
    }
    return {
        "count": count,
        "webhook_handler_mean_ms": served,
        **{
            kind: {
                "without_webhook": summary(baseline[kind]),
                "with_webhook": summary(guarded[kind]),
            }
            for kind in ("operation", "applicationinstance")
        },
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args()
    configure_logging(fmt="console", level="warning")
    print(json.dumps(asyncio.run(main(args.count)), indent=2))
