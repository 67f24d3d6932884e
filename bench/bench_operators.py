"""Benchmark: vworkspace side by side with a kopf peer and a bare write loop, same run, same writes.

Each contender gets a FRESH test control plane per scenario group (the operator's CRDs and the
pinned Flux/Velero/Argo CRDs), and is measured black-box: completion by watching the instances
and HelmReleases (bench/completion.py: finalizer, ``helmReleaseRef`` and a Ready condition on
each instance, and one HelmRelease per instance), memory from ``/proc/<pid>/status``, API requests from kube-apiserver's ``/metrics``.

Scenarios:

* ``burst``: the operator runs idle; idle RSS is read once VmRSS has been stable (within 1 MiB)
  for 2 s, i.e. after its caches synced on the empty namespace; then N instances are created by
  8 client threads -> seconds from the first create until all reconciled; peak RSS (VmHWM).
* ``restart`` (cold): N instances are created while no operator runs; then it starts -> seconds
  from process start until all reconciled; peak RSS.
* ``warm``: after ``restart``, the operator is stopped (SIGTERM) and started again over the
  instances it reconciled -> the writes it makes (target 0) and when the last came, observed until
  no write for 5 s (and at least 10 s after start).

API requests per instance: ``apiserver_request_total`` before and after each scenario (after the
writes have been quiet for 3 s, so late re-reconciles count too), minus the benchmark's own
creates and listings, divided by N; the instance, HelmRelease and HelmRepository requests by verb
(server-side apply is ``APPLY``), and ConfigMap, Event and Lease requests apart.

The bare loop runs in this process (no watch, so burst = create + writes, restart = list + writes;
no RSS, no warm restart). kopf needs the bench extra: ``.venv/bin/pip install -e '.[bench]'``.

    python -m bench.bench_operators [--count 1000] [--runs 3] [--contenders vworkspace,kopf,bare]
        [--scenarios burst,restart,warm] [--workers N] [--vworkspace-src DIR] [--out results.json]

One JSON line per (contender, scenario, run), then a table of medians [min-max] and ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import report
from bench.completion import Completion
from bench.peers import bare_loop, objects
from vworkspace.api import crdgen
from vworkspace.api.jsontypes import JsonObj
from vworkspace.testing import ControlPlane, find_assets
from vworkspace.testing.crds import ensure_third_party_crds, install_crds, load_crds
from vworkspace.testing.rest import ApiError, RestClient

NAMESPACE = "bench"
INSTANCES = objects.collection(objects.INSTANCES, NAMESPACE)
RELEASES = objects.collection(objects.HELM_RELEASES, NAMESPACE)
POLL = 0.25


class ContenderError(Exception):
    """A contender failed or hung; the message names its log."""


# -- the contenders as processes -----------------------------------------------------------


METRICS_PORT = 18480  # vworkspace's plain-HTTP /metrics, for the warm restart's queue figure


def command(contender: str, args: argparse.Namespace) -> list[str]:
    if contender == "vworkspace":
        workers = ("--workers", str(args.workers)) if args.workers else ()
        return [
            *(sys.executable, "-m", "vworkspace", "run", "--health-probe-bind-address", "0"),
            *("--metrics-bind-address", f"127.0.0.1:{METRICS_PORT}", "--metrics-secure=false"),
            *("--log-level", "warning", *workers),
        ]
    if contender == "kopf":
        return [sys.executable, "-m", "bench.peers.kopf_peer", "--namespace", NAMESPACE]
    raise ValueError(contender)


def environment(contender: str, args: argparse.Namespace) -> dict[str, str]:
    """``--vworkspace-src``: run the operator from another checkout (the "before" figures)."""
    if contender == "vworkspace" and args.vworkspace_src:
        return {"PYTHONPATH": str(Path(args.vworkspace_src).resolve())}
    return {}


class Operator:
    """One operator process, its log in a temporary file."""

    def __init__(
        self,
        argv: list[str],
        plane: ControlPlane,
        log_dir: Path,
        tag: str,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.log_path = log_dir / f"{tag}.log"
        self._log = self.log_path.open("ab")
        self.started = time.monotonic()
        env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig_path), "POD_NAMESPACE": NAMESPACE}
        env.update(extra_env or {})
        # ``python -m`` puts the working directory first on sys.path: run another checkout's
        # operator from that checkout, or this one's would be imported.
        cwd = env.get("PYTHONPATH") or None
        # Its own session: a signal to the benchmark's process group does not stop it.
        self.proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=cwd,
        )

    def check(self) -> None:
        code = self.proc.poll()
        if code is not None:
            # 0 or -15 without our SIGTERM: someone else stopped it (e.g. a pkill by name).
            why = f"signal {-code}" if code < 0 else f"exit code {code}"
            raise ContenderError(f"exited ({why}) during the run; log: {self.log_path}")

    def memory_mib(self, field: str) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        self.check()  # a zombie has no memory figures
        raise ContenderError(f"no {field} for pid {self.proc.pid}")

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def settled_rss(self, *, stable_for: float = 2.0, limit: float = 30.0) -> float:
        """VmRSS once it moved less than 1 MiB over ``stable_for`` seconds."""
        samples: list[tuple[float, float]] = []
        while time.monotonic() - self.started < limit:
            self.check()
            now = time.monotonic()
            samples = [
                *(s for s in samples if now - s[0] <= stable_for),
                (now, self.memory_mib("VmRSS")),
            ]
            span = samples[-1][0] - samples[0][0]
            values = [v for _, v in samples]
            if span >= stable_for - POLL and max(values) - min(values) < 1.0:
                return values[-1]
            time.sleep(POLL)
        raise ContenderError(f"RSS not stable within {limit:.0f}s; log: {self.log_path}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


# -- the control plane ---------------------------------------------------------------------


@contextlib.contextmanager
def fresh_plane() -> Iterator[tuple[ControlPlane, RestClient]]:
    with ControlPlane(assets=find_assets(dict(os.environ))) as plane:
        rest = plane.rest(timeout=120)
        install_crds(rest, [crdgen.crd(info) for info in crdgen.RESOURCES])
        install_crds(rest, load_crds([ensure_third_party_crds(os.environ)]))
        rest.post(
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        )
        _wait_served(rest)
        yield plane, rest


OCI_REPOSITORIES = "source.toolkit.fluxcd.io/v1/ocirepositories"


def _wait_served(rest: RestClient, limit: float = 60.0) -> None:
    """Until the new CRDs' collections answer, cluster-wide as informers list them (a fresh
    CRD is 429 "storage is (re)initializing" until its watch cache is ready): what a contender
    would otherwise spend retrying is the fresh control plane's start, not the contender's."""
    deadline = time.monotonic() + limit
    resources = (objects.INSTANCES, objects.HELM_REPOSITORIES, objects.HELM_RELEASES)
    for resource in (*resources, OCI_REPOSITORIES):
        while True:
            try:
                rest.get(f"/apis/{resource}", limit="1")
                break
            except ApiError as err:
                if err.status not in (404, 429, 503) or time.monotonic() > deadline:
                    raise
                time.sleep(POLL)


class Meter:
    """The API server's request counters, less the benchmark's own requests."""

    def __init__(self, rest: RestClient) -> None:
        self._rest = rest
        self.own: Counter[report.Key] = Counter()
        self._base = self.snapshot()

    def snapshot(self) -> Counter[report.Key]:
        text = self._rest.request("GET", "/metrics", accept="text/plain")["text"]
        return report.parse_requests(text)

    def reset(self) -> None:
        self.own.clear()
        self._base = self.snapshot()

    def delta(self) -> Counter[report.Key]:
        now = self.snapshot()
        now.subtract(self._base)
        now.subtract(self.own)
        return +now

    def writes(self) -> int:
        return report.writes(self.delta())


def create_instances(rest: RestClient, count: int, meter: Meter, *, repositories: int = 1) -> None:
    def create(i: int) -> JsonObj:
        return rest.post(INSTANCES, objects.instance(i, NAMESPACE, repositories=repositories))

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(create, range(count)))
    meter.own[("POST", "applicationinstances", "")] += count


def wait_reconciled(
    completion: Completion, *, count: int, deadline: float, alive: Callable[[], None]
) -> None:
    """Until ``count`` instances are reconciled, as the completion watches see them."""
    while True:
        alive()
        done = completion.done()
        if done >= count:
            return
        if time.monotonic() > deadline:
            raise ContenderError(f"{done}/{count} reconciled at the time limit")
        time.sleep(0.02)


def wait_quiet(
    meter: Meter,
    *,
    quiet: float,
    at_least: float,
    limit: float,
    alive: Callable[[], None] = lambda: None,
) -> tuple[int, float | None]:
    """Poll the write counter until unchanged for ``quiet`` s (and ``at_least`` s passed):
    (writes, seconds from the start of waiting to the last change, None if none)."""
    started = time.monotonic()
    last, last_change = meter.writes(), None
    changed_at = started
    while True:
        alive()
        now = time.monotonic()
        if now - changed_at >= quiet and now - started >= at_least:
            return last, last_change
        if now - started > limit:
            raise ContenderError(f"writes not quiet within {limit:.0f}s ({last} so far)")
        time.sleep(0.5)
        current = meter.writes()
        if current != last:
            last, changed_at = current, time.monotonic()
            last_change = changed_at - started
    # unreachable


def requests_figures(meter: Meter, count: int) -> JsonObj:
    delta = meter.delta()
    main = report.per_instance(report.by_verb(delta, report.MAIN), count)
    other = report.others(delta)
    return {
        "requests_per_instance": main,
        "writes_per_instance": round(report.writes(delta) / count, 2),
        "other_requests": other,
        "requests_line": report.verb_line(main),
    }


# -- scenarios -----------------------------------------------------------------------------


def burst(contender: str, args: argparse.Namespace, log_dir: Path) -> JsonObj:
    with fresh_plane() as (plane, rest), Completion(plane.kubeconfig_path, NAMESPACE) as completion:
        meter = Meter(rest)
        limit = args.timeout
        if contender == "bare":
            meter.reset()
            started = time.monotonic()
            _run_bare(plane, create=args.count, concurrency=args.concurrency)
            meter.own[("POST", "applicationinstances", "")] += args.count
            wait_reconciled(
                completion, count=args.count, deadline=started + limit, alive=lambda: None
            )
            result: JsonObj = {"seconds": round(time.monotonic() - started, 2)}
            wait_quiet(meter, quiet=3, at_least=0, limit=limit)
            return {**result, **requests_figures(meter, args.count)}
        op = Operator(
            command(contender, args),
            plane,
            log_dir,
            f"{contender}-burst",
            environment(contender, args),
        )
        try:
            idle = op.settled_rss()
            meter.reset()
            started = time.monotonic()
            create_instances(rest, args.count, meter, repositories=args.chart_repositories)
            created = time.monotonic() - started
            wait_reconciled(completion, count=args.count, deadline=started + limit, alive=op.check)
            result = {
                "seconds": round(time.monotonic() - started, 2),
                "create_seconds": round(created, 2),
                "idle_rss_mib": round(idle, 1),
            }
            wait_quiet(meter, quiet=3, at_least=0, limit=limit, alive=op.check)
            result["peak_rss_mib"] = round(op.memory_mib("VmHWM"), 1)
            # all instances reconciled and cached, the writes quiet for 3 s
            result["rss_after_mib"] = round(op.memory_mib("VmRSS"), 1)
            result["cpu_seconds"] = round(op.cpu_seconds(), 1)
            return {**result, **requests_figures(meter, args.count), "log": str(op.log_path)}
        except ContenderError as err:
            raise ContenderError(_with_log(err, op)) from None
        finally:
            op.stop()


def restart_and_warm(contender: str, args: argparse.Namespace, log_dir: Path) -> list[JsonObj]:
    """The cold restart, then (for operators) the warm restart on the same control plane."""
    with fresh_plane() as (plane, rest), Completion(plane.kubeconfig_path, NAMESPACE) as completion:
        meter = Meter(rest)
        create_instances(rest, args.count, meter, repositories=args.chart_repositories)
        meter.reset()
        limit = args.timeout
        out: list[JsonObj] = []
        if contender == "bare":
            started = time.monotonic()
            _run_bare(plane, create=0, concurrency=args.concurrency)
            wait_reconciled(
                completion, count=args.count, deadline=started + limit, alive=lambda: None
            )
            seconds = round(time.monotonic() - started, 2)
            wait_quiet(meter, quiet=3, at_least=0, limit=limit)
            return [
                {"scenario": "restart", "seconds": seconds, **requests_figures(meter, args.count)}
            ]
        op = Operator(
            command(contender, args),
            plane,
            log_dir,
            f"{contender}-restart",
            environment(contender, args),
        )
        try:
            wait_reconciled(
                completion, count=args.count, deadline=op.started + limit, alive=op.check
            )
            seconds = round(time.monotonic() - op.started, 2)
            wait_quiet(meter, quiet=3, at_least=0, limit=limit, alive=op.check)
            out.append(
                {
                    "scenario": "restart",
                    "seconds": seconds,
                    "peak_rss_mib": round(op.memory_mib("VmHWM"), 1),
                    "cpu_seconds": round(op.cpu_seconds(), 1),
                    **requests_figures(meter, args.count),
                    "log": str(op.log_path),
                }
            )
        except ContenderError as err:
            raise ContenderError(_with_log(err, op)) from None
        finally:
            op.stop()
        if "warm" in args.scenarios:
            out.append(_warm(contender, args, plane, meter, log_dir))
        return out


def _warm(
    contender: str, args: argparse.Namespace, plane: ControlPlane, meter: Meter, log_dir: Path
) -> JsonObj:
    meter.reset()
    op = Operator(
        command(contender, args),
        plane,
        log_dir,
        f"{contender}-warm",
        environment(contender, args),
    )
    try:
        queue = None
        if contender == "vworkspace":
            queue = queue_drained(op, count=args.count, limit=args.timeout)
        writes, last = wait_quiet(meter, quiet=5, at_least=10, limit=args.timeout, alive=op.check)
        return {
            "scenario": "warm",
            "writes": writes,
            # vworkspace: seconds from process start until every instance was reconciled again
            # and its queue was empty (its own metrics)
            "queue_drained_seconds": queue,
            # seconds from process start to its last write (None: it wrote nothing)
            "drained_seconds": None if last is None else round(last, 2),
            "peak_rss_mib": round(op.memory_mib("VmHWM"), 1),
            **requests_figures(meter, args.count),
            "log": str(op.log_path),
        }
    except ContenderError as err:
        return {"scenario": "warm", "error": _with_log(err, op)}
    finally:
        op.stop()


def queue_drained(op: Operator, *, count: int, limit: float) -> float:
    """Seconds from process start until vworkspace reconciled ``count`` instances (from its
    initial list) and its ApplicationInstance queue is empty with no reconcile in flight."""
    controller = 'controller="applicationinstance"'
    while time.monotonic() - op.started < limit:
        op.check()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            time.sleep(0.05)  # not listening yet
            continue
        values = report.samples(text)
        reconciled = sum(
            v
            for k, v in values.items()
            if k.startswith("controller_runtime_reconcile_total{") and controller in k
        )
        depth = values.get('workqueue_depth{name="applicationinstance"}', 1.0)
        busy = values.get(f"controller_runtime_active_workers{{{controller}}}", 1.0)
        if reconciled >= count and depth == 0 and busy == 0:
            return round(time.monotonic() - op.started, 2)
        time.sleep(0.05)
    raise ContenderError(f"queue not drained within {limit:.0f}s")


def _with_log(err: ContenderError, op: Operator) -> str:
    text = str(err)
    return text if str(op.log_path) in text else f"{text}; log: {op.log_path}"


def _run_bare(plane: ControlPlane, *, create: int, concurrency: int) -> None:
    server, token, ca_data = bare_loop.credentials(plane.kubeconfig_path)
    try:
        _bare(server, token, ca_data, create=create, concurrency=concurrency)
    except (RuntimeError, OSError, TimeoutError) as err:  # aiohttp errors are OSErrors
        raise ContenderError(f"bare loop: {err}") from err


def _bare(server: str, token: str, ca_data: str, *, create: int, concurrency: int) -> None:
    asyncio.run(
        bare_loop.run(
            server=server,
            token=token,
            ca_data=ca_data,
            namespace=NAMESPACE,
            create=create,
            concurrency=concurrency,
        )
    )


# -- main ----------------------------------------------------------------------------------


def _emit(line: JsonObj, results: list[JsonObj]) -> None:
    results.append(line)
    print(json.dumps(line), flush=True)


def run_all(args: argparse.Namespace) -> list[JsonObj]:
    log_dir = Path(tempfile.mkdtemp(prefix="bench-operators-"))
    print(f"logs: {log_dir}", file=sys.stderr, flush=True)
    results: list[JsonObj] = []
    # Contenders interleaved within each run, so a noisy minute hurts all of them alike.
    for run in range(1, args.runs + 1):
        for contender in args.contenders:
            base = {"contender": contender, "run": run, "count": args.count}
            if contender == "vworkspace":
                base["workers"] = args.workers
            if "burst" in args.scenarios:
                try:
                    _emit({**base, "scenario": "burst", **burst(contender, args, log_dir)}, results)
                except ContenderError as err:
                    _emit({**base, "scenario": "burst", "error": str(err)}, results)
            if {"restart", "warm"} & set(args.scenarios):
                try:
                    for line in restart_and_warm(contender, args, log_dir):
                        _emit({**base, **line}, results)
                except ContenderError as err:
                    _emit({**base, "scenario": "restart", "error": str(err)}, results)
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=1000, help="instances per scenario")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--contenders", default="vworkspace,kopf,bare")
    parser.add_argument("--scenarios", default="burst,restart,warm")
    parser.add_argument(
        "--workers", type=int, help="vworkspace run --workers (default: the operator's default)"
    )
    parser.add_argument(
        "--vworkspace-src",
        metavar="DIR",
        help="run the vworkspace contender from this checkout (PYTHONPATH), e.g. an older commit",
    )
    parser.add_argument("--concurrency", type=int, default=16, help="bare loop: in flight")
    parser.add_argument(
        "--chart-repositories",
        type=int,
        default=1,
        metavar="K",
        help="spread the vworkspace/kopf instances over K chart repository URLs (default 1: one "
        "shared chart source; K = --count gives every instance its own, which keeps the shared "
        "source's growing owner list out of the figures, see docs/development.md)",
    )
    parser.add_argument(
        "--timeout", type=float, help="per scenario (default 60 s + 0.6 s/instance)"
    )
    parser.add_argument("--out", type=Path, help="also write the JSON lines here")
    args = parser.parse_args(argv)
    args.contenders = [c for c in args.contenders.split(",") if c]
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    for name in args.contenders:
        if name not in ("vworkspace", "kopf", "bare"):
            parser.error(f"--contenders: unknown {name!r}")
    for name in args.scenarios:
        if name not in ("burst", "restart", "warm"):
            parser.error(f"--scenarios: unknown {name!r}")
    if args.timeout is None:
        args.timeout = 60 + 0.6 * args.count
    return args


def main() -> int:
    args = parse_args()
    results = run_all(args)
    if args.out:
        args.out.write_text("".join(json.dumps(line) + "\n" for line in results))
    print()
    print(
        f"{args.count} instances, {args.runs} run(s), vworkspace --workers "
        f"{args.workers or 'default'}{' from ' + args.vworkspace_src if args.vworkspace_src else ''}: "
        "median [min-max]"
    )
    print(report.table(results, args.contenders))
    for line in results:
        if "requests_line" in line:
            print(
                f"{line['contender']} {line['scenario']} run {line['run']}: "
                f"requests/instance: {line['requests_line']}; "
                f"other resources (total): {line['other_requests'] or 'none'}"
            )
    failed = [line for line in results if "error" in line]
    for line in failed:
        print(f"FAILED {line['contender']} {line['scenario']} run {line['run']}: {line['error']}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
