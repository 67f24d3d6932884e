"""`python -m vworkspace run`: start the operator.

Flags win over environment variables, which win over defaults. Invalid values are refused at
start with a message naming the flag.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
import uuid
from typing import Any

import prometheus_client
import structlog

from vworkspace.app import logging as app_logging
from vworkspace.app.http import Address
from vworkspace.app.wiring import DEFAULT_NAMESPACE, LEASE_NAME, OperatorSettings, run_operator

EPILOG = """\
environment:
  KUBECONFIG          kubeconfig path when --kubeconfig is not given
  POD_NAMESPACE       the operator's namespace (Lease, credentials); default vworkspace-system

examples:
  python -m vworkspace run --kubeconfig ./kubeconfig --log-format console
  python -m vworkspace run --leader-elect --metrics-bind-address :8443"""


def add_parser(commands: Any) -> None:
    run = commands.add_parser(
        "run",
        help="run the operator (controllers for ApplicationInstance, Operation, Cluster)",
        description="Run the operator against a cluster: in-cluster when started in a Pod, "
        "else from a kubeconfig.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    conn = run.add_argument_group("cluster connection")
    conn.add_argument(
        "--kubeconfig",
        metavar="PATH",
        help="kubeconfig file (default: $KUBECONFIG, "
        "in-cluster config inside a Pod, else ~/.kube/config)",
    )
    conn.add_argument("--context", metavar="NAME", help="kubeconfig context (default: current)")
    serve = run.add_argument_group("endpoints")
    serve.add_argument(
        "--health-probe-bind-address",
        default=":8081",
        metavar="HOST:PORT",
        help="/healthz and /readyz listener; 0 disables (default: %(default)s)",
    )
    serve.add_argument(
        "--metrics-bind-address",
        default="0",
        metavar="HOST:PORT",
        help="/metrics listener; 0 disables (default: %(default)s)",
    )
    ha = run.add_argument_group("leader election")
    ha.add_argument(
        "--leader-elect",
        action="store_true",
        help="only the holder of the Lease reconciles; others keep caches warm",
    )
    ha.add_argument(
        "--leader-election-namespace",
        metavar="NS",
        help="namespace of the Lease (default: $POD_NAMESPACE, else vworkspace-system)",
    )
    ha.add_argument(
        "--leader-election-id",
        default=LEASE_NAME,
        metavar="NAME",
        help="Lease name (default: %(default)s)",
    )
    tuning = run.add_argument_group("tuning")
    tuning.add_argument(
        "--workers",
        type=int,
        default=2,
        metavar="N",
        help="concurrent reconciles per controller (default: %(default)s)",
    )
    tuning.add_argument(
        "--reconcile-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="deadline of one reconcile (default: %(default)s)",
    )
    logs = run.add_argument_group("logging")
    logs.add_argument(
        "--log-format",
        choices=["json", "console"],
        default="json",
        help="json lines for machines, console for people (default: %(default)s)",
    )
    logs.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default="info",
        help="(default: %(default)s)",
    )
    run.set_defaults(handler=run_main)


def settings_from(args: argparse.Namespace, env: dict[str, str]) -> OperatorSettings:
    """Resolve flags > environment > defaults; raise ValueError naming the flag at fault."""
    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    if args.reconcile_timeout <= 0:
        raise ValueError(f"--reconcile-timeout must be positive, got {args.reconcile_timeout}")
    try:
        probes = Address.parse(args.health_probe_bind_address)
    except ValueError as err:
        raise ValueError(f"--health-probe-bind-address: {err}") from None
    try:
        metrics = Address.parse(args.metrics_bind_address)
    except ValueError as err:
        raise ValueError(f"--metrics-bind-address: {err}") from None
    kubeconfig = args.kubeconfig or env.get("KUBECONFIG") or None
    in_cluster = kubeconfig is None and bool(env.get("KUBERNETES_SERVICE_HOST"))
    namespace = args.leader_election_namespace or env.get("POD_NAMESPACE") or DEFAULT_NAMESPACE
    return OperatorSettings(
        kubeconfig=kubeconfig,
        context=args.context,
        in_cluster=in_cluster,
        namespace=namespace,
        identity=f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}",
        leader_elect=args.leader_elect,
        lease_name=args.leader_election_id,
        workers=args.workers,
        reconcile_timeout=args.reconcile_timeout,
        probes=probes,
        metrics=metrics,
    )


def run_main(args: argparse.Namespace) -> int:
    try:
        settings = settings_from(args, dict(os.environ))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    app_logging.configure(fmt=args.log_format, level=args.log_level)
    return asyncio.run(_serve(settings))


async def _serve(settings: OperatorSettings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # The process-wide Prometheus registry: the one singleton the operator allows itself.
    code = await run_operator(settings, stop, registry=prometheus_client.REGISTRY)
    pending = [t.get_name() for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    structlog.get_logger("vworkspace").info(
        "exiting", exit_code=code, pending_tasks=len(pending), tasks=pending
    )
    return code
