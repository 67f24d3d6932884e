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

from vworkspace.agent.applier import DEFAULT_ALLOWED, parse_allowed
from vworkspace.agent.credentials import Overrides
from vworkspace.agent.poller import parse_interval
from vworkspace.app import logging as app_logging
from vworkspace.app.http import Address
from vworkspace.app.wiring import (
    DEFAULT_NAMESPACE,
    LEASE_NAME,
    AgentSettings,
    OperatorSettings,
    run_operator,
)

EPILOG = """\
environment:
  KUBECONFIG               kubeconfig path when --kubeconfig is not given
  POD_NAMESPACE            the operator's namespace (Lease, credentials); default vworkspace-system
  CONTROL_PLANE_BASE_URL   see --control-plane-base-url
  VWORKSPACE_CLUSTER_ID    see --cluster-id
  VWORKSPACE_AGENT_TOKEN   see --agent-token
  VELERO_NAMESPACE         see --velero-namespace
  VWORKSPACE_APPROVAL_CLAIM_SECRET  see --approval-claim-secret

examples:
  python -m vworkspace run --kubeconfig ./kubeconfig --log-format console
  python -m vworkspace run --leader-elect --metrics-bind-address :8443
  python -m vworkspace run --agent-enabled --control-plane-base-url http://127.0.0.1:8080 \
      --cluster-id cluster-dev-1 --agent-token bootstrap-cluster-dev-1"""


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
    engines = run.add_argument_group("engines")
    engines.add_argument(
        "--velero-namespace",
        metavar="NS",
        help="namespace of Velero Backup/Restore objects (env VELERO_NAMESPACE; default velero)",
    )
    engines.add_argument(
        "--approval-claim-secret",
        metavar="SECRET",
        help="HMAC secret for vws1 approval claims (env VWORKSPACE_APPROVAL_CLAIM_SECRET); "
        "without it, Operations that need approval stay Blocked",
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
    agent = run.add_argument_group(
        "pull-mode agent",
        "Credentials: each flag wins over its environment variable, which wins over the "
        "credentials Secret written at registration.",
    )
    agent.add_argument(
        "--agent-enabled",
        action="store_true",
        help="poll the control plane for jobs and apply them (only on the leader)",
    )
    agent.add_argument(
        "--control-plane-base-url",
        metavar="URL",
        help="control plane base URL (env CONTROL_PLANE_BASE_URL)",
    )
    agent.add_argument(
        "--cluster-id", metavar="ID", help="this cluster's id (env VWORKSPACE_CLUSTER_ID)"
    )
    agent.add_argument(
        "--agent-token",
        metavar="TOKEN",
        help="bearer token (env VWORKSPACE_AGENT_TOKEN; prefer the Secret)",
    )
    agent.add_argument(
        "--agent-poll-interval",
        default="30s",
        metavar="DURATION",
        help="long-poll wait: 30s, 1m or plain seconds (default: %(default)s)",
    )
    agent.add_argument(
        "--agent-credentials-secret",
        default="vworkspace-agent-credentials",
        metavar="NAME",
        help="credentials Secret in the operator namespace (default: %(default)s)",
    )
    agent.add_argument(
        "--agent-credentials-namespace",
        metavar="NS",
        help="namespace of the credentials Secret and idempotency ConfigMap "
        "(default: the operator namespace)",
    )
    agent.add_argument(
        "--agent-concurrency",
        type=int,
        default=4,
        metavar="N",
        help="jobs applied at once; jobs on one object stay in order (default: %(default)s)",
    )
    agent.add_argument(
        "--agent-allow-kind",
        action="append",
        default=[],
        metavar="GROUP/Kind",
        help="also allow jobs to write this kind, e.g. /ConfigMap or apps/Deployment "
        "(repeatable; default: the vworkspace CRDs and Namespaces only)",
    )
    agent.add_argument(
        "--agent-max-payload-bytes",
        type=int,
        default=1024 * 1024,
        metavar="N",
        help="larger job payloads fail without being applied (default: %(default)s)",
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
    agent = agent_settings_from(args, env) if args.agent_enabled else None
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
        agent=agent,
        velero_namespace=(
            args.velero_namespace or env.get("VELERO_NAMESPACE", "").strip() or "velero"
        ),
        approval_secret=(
            args.approval_claim_secret or env.get("VWORKSPACE_APPROVAL_CLAIM_SECRET", "")
        ).strip(),
    )


def agent_settings_from(args: argparse.Namespace, env: dict[str, str]) -> AgentSettings:
    try:
        poll_interval = parse_interval(args.agent_poll_interval)
    except ValueError as err:
        raise ValueError(f"--agent-poll-interval: {err}") from None
    if args.agent_concurrency < 1:
        raise ValueError(f"--agent-concurrency must be at least 1, got {args.agent_concurrency}")
    if args.agent_max_payload_bytes < 1024:
        raise ValueError(
            f"--agent-max-payload-bytes must be at least 1024, got {args.agent_max_payload_bytes}"
        )
    try:
        extra = parse_allowed(args.agent_allow_kind)
    except ValueError as err:
        raise ValueError(f"--agent-allow-kind: {err}") from None
    base_url = args.control_plane_base_url or env.get("CONTROL_PLANE_BASE_URL", "")
    if base_url and not base_url.startswith(("http://", "https://")):
        raise ValueError(
            f"--control-plane-base-url must start with http:// or https://, got {base_url!r}"
        )
    return AgentSettings(
        overrides=Overrides(
            base_url=base_url,
            cluster_id=args.cluster_id or env.get("VWORKSPACE_CLUSTER_ID", ""),
            token=args.agent_token or env.get("VWORKSPACE_AGENT_TOKEN", ""),
        ),
        secret_name=args.agent_credentials_secret,
        credentials_namespace=args.agent_credentials_namespace,
        poll_interval=poll_interval,
        concurrency=args.agent_concurrency,
        allowed_kinds=DEFAULT_ALLOWED | extra,
        max_payload_bytes=args.agent_max_payload_bytes,
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
