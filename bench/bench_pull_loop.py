"""Benchmark: the Pull loop, enqueue -> result, through the real operator process.

Starts the real test control plane (CRDs installed), the mock control plane in this process and
`python -m vworkspace run --agent-enabled` as its own process. Then:

1. **fixed rate**: N apply jobs (each a new ApplicationInstance) enqueued at R jobs/s; latency is
   the time from enqueue to the result arriving at the mock (both measured by the mock), p50/p99;
2. **burst**: M jobs enqueued at once; throughput is M / (last result - first enqueue).

Prints one JSON object.

    python bench/bench_pull_loop.py [--rate 20] [--count 300] [--burst 500] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vworkspace.api import crdgen
from vworkspace.app.logging import configure as configure_logging
from vworkspace.mockcontrolplane import MockControlPlane
from vworkspace.testing import ControlPlane, find_assets
from vworkspace.testing.crds import install_crds

CLUSTER = "bench-cluster"
TOKEN = "bench-token"
NAMESPACE = "bench-pull"


def job(job_id: str) -> dict[str, object]:
    return {
        "id": job_id,
        "kind": "apply",
        "idempotencyKey": job_id,
        "payload": {
            "apiVersion": "apps.vworkspace.io/v1alpha1",
            "kind": "ApplicationInstance",
            "metadata": {"name": job_id, "namespace": NAMESPACE},
            "spec": {"appRef": {"catalogId": "bench"}, "mode": "placeholder"},
        },
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def wait_results(mock: MockControlPlane, ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(i not in mock.state.results for i in ids):
        if time.monotonic() > deadline:
            missing = [i for i in ids if i not in mock.state.results]
            raise SystemExit(f"{len(missing)} jobs without a result after {timeout}s")
        await asyncio.sleep(0.02)


async def run(args: argparse.Namespace, plane: ControlPlane) -> dict[str, object]:
    async with MockControlPlane() as mock:
        mock.set_bootstrap_token(CLUSTER, TOKEN)
        log_path = Path(tempfile.mkdtemp(prefix="bench-pull-")) / "operator.log"
        with log_path.open("wb") as log:
            operator = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "vworkspace",
                    "run",
                    "--health-probe-bind-address",
                    "0",
                    "--log-level",
                    "warning",
                    "--agent-enabled",
                    "--control-plane-base-url",
                    mock.url,
                    "--cluster-id",
                    CLUSTER,
                    "--agent-token",
                    TOKEN,
                    "--agent-concurrency",
                    str(args.concurrency),
                ],
                env={
                    **os.environ,
                    "KUBECONFIG": str(plane.kubeconfig_path),
                    "POD_NAMESPACE": NAMESPACE,
                },
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                # Warm-up job: the agent is connected and the namespace exists.
                await mock.enqueue(CLUSTER, job("warmup"))
                await wait_results(mock, ["warmup"], 60)

                rate_ids = [f"rate-{i:05d}" for i in range(args.count)]
                started = time.monotonic()
                for index, job_id in enumerate(rate_ids):
                    await asyncio.sleep(max(0.0, started + index / args.rate - time.monotonic()))
                    await mock.enqueue(CLUSTER, job(job_id))
                await wait_results(mock, rate_ids, 120)
                latencies = [mock.state.result_at[i] - mock.state.enqueued_at[i] for i in rate_ids]

                burst_ids = [f"burst-{i:05d}" for i in range(args.burst)]
                burst_start = time.monotonic()
                for job_id in burst_ids:
                    await mock.enqueue(CLUSTER, job(job_id))
                await wait_results(mock, burst_ids, 300)
                burst_seconds = max(mock.state.result_at[i] for i in burst_ids) - burst_start
                outcomes = {mock.state.results[i]["outcome"] for i in rate_ids + burst_ids}
            finally:
                operator.terminate()
                operator.wait(timeout=30)
    return {
        "benchmark": "pull-loop",
        "agent_concurrency": args.concurrency,
        "fixed_rate_jobs_per_second": args.rate,
        "fixed_rate_jobs": args.count,
        "latency_p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
        "latency_p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "latency_mean_ms": round(statistics.mean(latencies) * 1000, 1),
        "burst_jobs": args.burst,
        "burst_seconds": round(burst_seconds, 2),
        "burst_jobs_per_second": round(args.burst / burst_seconds, 1),
        "outcomes": sorted(outcomes),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--burst", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    configure_logging(fmt="console", level="warning")  # keep the mock's request log quiet
    with ControlPlane(assets=find_assets(dict(os.environ))) as plane:
        install_crds(plane.rest(), [crdgen.crd(info) for info in crdgen.RESOURCES])
        result = asyncio.run(run(args, plane))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
