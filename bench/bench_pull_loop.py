"""Benchmark: the Pull loop, enqueue -> result, through the real operator process.

Starts the real test control plane (CRDs installed), the mock control plane in this process and
`python -m vworkspace run --agent-enabled` as its own process. Then:

1. **fixed rate**: N apply jobs (each a new ApplicationInstance) enqueued at R jobs/s; latency is
   the time from enqueue to the result arriving at the mock (both measured by the mock), p50/p99;
2. **burst**: M jobs enqueued at once; throughput is M / (last result - first enqueue).

**API requests per job**: the operator's ``rest_client_requests_total`` (its metrics endpoint,
plain HTTP on a free port) is read before and after each phase; the difference divided by the
jobs, split by method, is every request the process made for them: the agent's (ack aside, which
goes to the mock) and the reconciles of the ApplicationInstances the jobs created. "After" is
taken once the counter has been still for a second, so reconciles that finish after the last
result are counted too.

Prints one JSON object.

    python -m bench.bench_pull_loop [--rate 20] [--count 300] [--burst 500] [--concurrency N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def requests_by_method(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """The operator's ``rest_client_requests_total`` summed per method (``requests:PATCH``), and
    ``rest_client_request_duration_seconds`` sum and count per verb (``seconds:PATCH``,
    ``count:PATCH``)."""
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=10)) as resp:
        text = await resp.text()
    counts: dict[str, float] = {}

    def add(key: str, value: float) -> None:
        counts[key] = counts.get(key, 0.0) + value

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "rest_client_requests_total":
                add(f"requests:{sample.labels.get('method', '?')}", sample.value)
            elif sample.name == "rest_client_request_duration_seconds_sum":
                add(f"seconds:{sample.labels.get('verb', '?')}", sample.value)
            elif sample.name == "rest_client_request_duration_seconds_count":
                add(f"count:{sample.labels.get('verb', '?')}", sample.value)
    return counts


async def settled_requests(
    http: aiohttp.ClientSession, url: str, *, quiet: float = 1.0, timeout: float = 60.0
) -> dict[str, float] | None:
    """The counters once they have not moved for ``quiet`` seconds (reconciles done); None when
    the metrics endpoint cannot be read (the figures are then left out, not the whole run)."""
    deadline = time.monotonic() + timeout
    try:
        last = await requests_by_method(http, url)
        while time.monotonic() < deadline:
            await asyncio.sleep(quiet)
            now = await requests_by_method(http, url)
            if now == last:
                break
            last = now
    except (aiohttp.ClientError, TimeoutError) as err:
        print(f"cannot read {url}: {err}", file=sys.stderr)
        return None
    return last


def per_job(
    before: dict[str, float] | None, after: dict[str, float] | None, jobs: int
) -> dict[str, float] | str:
    """API requests per job by method, ``writes`` (all but GET) and ``all``."""
    if before is None or after is None:
        return "unavailable (metrics endpoint not readable, see stderr)"
    split: dict[str, float] = {}
    for key in sorted(set(before) | set(after)):
        if key.startswith("requests:"):
            value = round((after.get(key, 0.0) - before.get(key, 0.0)) / jobs, 2)
            if value:
                split[key.removeprefix("requests:")] = value
    split["writes"] = round(sum(v for m, v in split.items() if m != "GET"), 2)
    split["all"] = round(sum(v for m, v in split.items() if m != "writes"), 2)
    return split


def mean_ms(before: dict[str, float] | None, after: dict[str, float] | None) -> dict[str, float]:
    """Mean API request latency per verb between two readings (what one hop costs here)."""
    if before is None or after is None:
        return {}
    means = {}
    for key in sorted(after):
        if key.startswith("count:"):
            verb = key.removeprefix("count:")
            count = after[key] - before.get(key, 0.0)
            seconds = after.get(f"seconds:{verb}", 0.0) - before.get(f"seconds:{verb}", 0.0)
            if count:
                means[verb] = round(seconds / count * 1000, 1)
    return means


def phase_p50s(mock: MockControlPlane, ids: list[str]) -> dict[str, float]:
    """p50 of each leg of enqueue -> result, from the mock's clock: the long poll handing the
    job over, the agent's ack, and the agent's own work (apply, idempotency write, result)."""
    state = mock.state
    legs = {
        "enqueue_to_delivery": [state.delivered_at[i] - state.enqueued_at[i] for i in ids],
        "delivery_to_ack": [state.acked_at[i] - state.delivered_at[i] for i in ids],
        "ack_to_result": [state.result_at[i] - state.acked_at[i] for i in ids],
    }
    return {leg: round(percentile(values, 0.5) * 1000, 1) for leg, values in legs.items()}


async def run(args: argparse.Namespace, plane: ControlPlane) -> dict[str, object]:
    async with MockControlPlane() as mock, aiohttp.ClientSession() as http:
        mock.set_bootstrap_token(CLUSTER, TOKEN)
        log_path = Path(tempfile.mkdtemp(prefix="bench-pull-")) / "operator.log"
        metrics_port = free_port()
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        concurrency = ["--agent-concurrency", str(args.concurrency)] if args.concurrency else []
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
                    "--allow-insecure-control-plane",  # the mock is plain http on 127.0.0.1
                    "--control-plane-base-url",
                    mock.url,
                    "--cluster-id",
                    CLUSTER,
                    "--agent-token",
                    TOKEN,
                    "--metrics-bind-address",
                    f"127.0.0.1:{metrics_port}",
                    "--metrics-secure=false",
                    *concurrency,
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
                before_rate = await settled_requests(http, metrics_url)

                rate_ids = [f"rate-{i:05d}" for i in range(args.count)]
                started = time.monotonic()
                for index, job_id in enumerate(rate_ids):
                    await asyncio.sleep(max(0.0, started + index / args.rate - time.monotonic()))
                    await mock.enqueue(CLUSTER, job(job_id))
                await wait_results(mock, rate_ids, 120)
                latencies = [mock.state.result_at[i] - mock.state.enqueued_at[i] for i in rate_ids]
                phases = phase_p50s(mock, rate_ids)
                before_burst = await settled_requests(http, metrics_url)

                burst_ids = [f"burst-{i:05d}" for i in range(args.burst)]
                burst_start = time.monotonic()
                for job_id in burst_ids:
                    await mock.enqueue(CLUSTER, job(job_id))
                await wait_results(mock, burst_ids, 300)
                burst_seconds = max(mock.state.result_at[i] for i in burst_ids) - burst_start
                outcomes = {mock.state.results[i]["outcome"] for i in rate_ids + burst_ids}
                after_burst = await settled_requests(http, metrics_url)
            finally:
                if operator.poll() is not None:
                    print(f"the operator exited early: {operator.returncode}", file=sys.stderr)
                operator.terminate()
                operator.wait(timeout=30)
    return {
        "benchmark": "pull-loop",
        "agent_concurrency": args.concurrency or "default",
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "fixed_rate_jobs_per_second": args.rate,
        "fixed_rate_jobs": args.count,
        "latency_p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
        "latency_p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "latency_mean_ms": round(statistics.mean(latencies) * 1000, 1),
        "latency_p50_ms_by_phase": phases,
        "burst_jobs": args.burst,
        "burst_seconds": round(burst_seconds, 2),
        "burst_jobs_per_second": round(args.burst / burst_seconds, 1),
        "outcomes": sorted(outcomes),
        "api_requests_per_job_fixed_rate": per_job(before_rate, before_burst, args.count),
        "api_requests_per_job_burst": per_job(before_burst, after_burst, args.burst),
        "api_request_mean_ms_fixed_rate": mean_ms(before_rate, before_burst),
        "api_request_mean_ms_burst": mean_ms(before_burst, after_burst),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--burst", type=int, default=500)
    parser.add_argument(
        "--concurrency", type=int, default=0, help="--agent-concurrency (0: the operator's default)"
    )
    args = parser.parse_args()
    configure_logging(fmt="console", level="warning")  # keep the mock's request log quiet
    with ControlPlane(assets=find_assets(dict(os.environ))) as plane:
        install_crds(plane.rest(), [crdgen.crd(info) for info in crdgen.RESOURCES])
        result = asyncio.run(run(args, plane))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
