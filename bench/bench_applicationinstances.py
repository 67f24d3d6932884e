"""Benchmark: how fast the operator turns many ApplicationInstances into HelmReleases, and its memory.

Starts the real test control plane, installs the operator's CRDs and the upstream Flux and Velero
CRDs, starts `python -m vworkspace run` as its own process, creates N managed ApplicationInstances
(8 client threads), and measures the time from the first create until every instance has its
HelmRelease (and HelmRepository) materialised and its status written (finalizer, helmReleaseRef,
Ready condition), plus the operator's peak RSS (VmHWM). Prints one JSON object.

    python -m bench.bench_applicationinstances [--count 1000] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.bench_operators import NAMESPACE, fresh_plane
from bench.peers import objects

PATH = f"/apis/apps.vworkspace.io/v1alpha1/namespaces/{NAMESPACE}/applicationinstances"
HR_PATH = f"/apis/helm.toolkit.fluxcd.io/v2/namespaces/{NAMESPACE}/helmreleases"


def instance(index: int) -> dict[str, object]:
    return objects.instance(index, NAMESPACE)


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def owned(item: dict[str, Any]) -> bool:
    return objects.reconciled(item)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2, help="operator --workers")
    args = parser.parse_args()

    # The same control plane as bench_operators: CRDs installed, the namespace made, the new
    # collections answering.
    with fresh_plane() as (plane, rest):
        log_path = Path(tempfile.mkdtemp(prefix="bench-")) / "operator.log"
        log = log_path.open("wb")
        operator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vworkspace",
                "run",
                "--health-probe-bind-address",
                "0",
                "--workers",
                str(args.workers),
                "--log-level",
                "warning",
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
            time.sleep(2)  # let the informers sync on an empty cluster
            idle_rss = peak_rss_mib(operator.pid)
            started = time.monotonic()
            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(lambda i: rest.post(PATH, instance(i)), range(args.count)))
            created = time.monotonic() - started
            done = 0
            while done < args.count:
                if operator.poll() is not None:
                    raise SystemExit(f"operator exited with {operator.returncode}; log: {log_path}")
                items = rest.get(PATH)["items"]
                releases = len(rest.get(HR_PATH)["items"])
                done = min(releases, sum(1 for item in items if owned(item)))
                if done < args.count:
                    time.sleep(0.25)
            total = time.monotonic() - started
            result = {
                "benchmark": "applicationinstances-to-helmreleases",
                "count": args.count,
                "operator_workers": args.workers,
                "create_seconds": round(created, 2),
                "all_reconciled_seconds": round(total, 2),
                "instances_per_second": round(args.count / total, 1),
                "operator_rss_idle_mib": round(idle_rss, 1),
                "operator_peak_rss_mib": round(peak_rss_mib(operator.pid), 1),
            }
        finally:
            operator.terminate()
            operator.wait(timeout=30)
            log.close()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
