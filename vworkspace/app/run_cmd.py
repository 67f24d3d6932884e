"""`python -m vworkspace run`: start the operator.

Flags win over environment variables, which win over defaults. Invalid values are refused at
start with a message naming the flag (exit code 2).

Drop-in compatibility with the Go operator's ``cmd/main.go`` (README, "Configuration"): every Go
flag is accepted, and boolean flags take Go's syntax (``--flag``, ``--flag=true``,
``--flag=false``, also ``1``/``0``/``t``/``f``). A Go flag this implementation cannot honour
(``--enable-http2``) is accepted only with its default value and refused otherwise, so no flag
silently does nothing. ``--seaweed-watches-enabled`` is accepted either way and, as in Go, only
chooses a log line: the SeaweedFS watches start whenever both SeaweedFS CRDs are served, also
when they are installed after the start (app/engines.py). Flags that only matter together with
another one (``--metrics-cert-path`` without secure metrics) are accepted and logged as ignored,
as Go ignores them, so a Go deployment's arguments keep working.

The flags are defined by concern in app/flags/ (connection, endpoints, manager, engines,
webhooks, agent, egress, logging) and app/hardening_flags.py; this module composes them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

import prometheus_client
import structlog

from vworkspace.app import hardening_flags
from vworkspace.app import logging as app_logging
from vworkspace.app.flags import agent, connection, egress, endpoints, engines, manager, webhooks
from vworkspace.app.flags import go_bool as go_bool
from vworkspace.app.flags import logging as logging_flags
from vworkspace.app.flags.logging import log_config_from as log_config_from
from vworkspace.app.wiring import OperatorSettings, run_operator

EPILOG = """\
Boolean flags take Go's syntax: --flag, --flag=true, --flag=false.

environment:
  KUBECONFIG               kubeconfig path when --kubeconfig is not given
  POD_NAMESPACE            the operator's namespace (Lease, credentials); default vworkspace-system
  CONTROL_PLANE_BASE_URL   see --control-plane-base-url
  VWORKSPACE_CLUSTER_ID    see --cluster-id
  VWORKSPACE_AGENT_TOKEN   see --agent-token
  HTTPS_PROXY, HTTP_PROXY, NO_PROXY  proxies for the API server and the control plane (Go's
                           rules; read once at start); see --control-plane-proxy
  VELERO_NAMESPACE         see --velero-namespace
  VWORKSPACE_APPROVAL_CLAIM_SECRET  see --approval-claim-secret

examples:
  python -m vworkspace run --kubeconfig ./kubeconfig --log-format console
  python -m vworkspace run --leader-elect --metrics-bind-address :8443   # HTTPS + authn/authz
  python -m vworkspace run --metrics-bind-address :8080 --metrics-secure=false   # plain HTTP
  python -m vworkspace run --agent-enabled --control-plane-base-url https://cp.example.com \\
      --cluster-id cluster-dev-1 --agent-token bootstrap-cluster-dev-1
  python -m vworkspace run --agent-enabled --control-plane-base-url http://127.0.0.1:8080 \\
      --allow-insecure-control-plane --cluster-id cluster-dev-1   # the mock control plane"""


def add_parser(commands: Any, *, summary: str) -> None:
    run = commands.add_parser(
        "run",
        help=summary,
        description="Run the operator against a cluster: in-cluster when started in a Pod, "
        "else from a kubeconfig.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # In the order --help lists them.
    connection.add_flags(run)
    endpoints.add_flags(run)
    manager.add_leader_election_flags(run)
    engines.add_flags(run)
    webhooks.add_flags(run)
    manager.add_tuning_flags(run)
    agent.add_flags(run)
    egress.add_flags(run)
    hardening_flags.add_flags(run, boolean=go_bool)
    logging_flags.add_flags(run)
    run.set_defaults(handler=run_main)


def settings_from(args: argparse.Namespace, env: dict[str, str]) -> OperatorSettings:
    """Resolve flags > environment > defaults; raise ValueError naming the flag at fault."""
    hardening = hardening_flags.hardening_from(args)
    return OperatorSettings(
        **endpoints.settings_from(args),
        **manager.settings_from(args, env),
        **connection.settings_from(args, env),
        **agent.settings_from(args, env, hardening=hardening),
        **webhooks.settings_from(args),
        **engines.settings_from(args, env),
        flux_service_account=hardening.flux_service_account,
    )


def ignored_flags(args: argparse.Namespace) -> list[str]:
    """Flags given that have no effect in this combination (Go ignores them too); logged as
    warnings at start rather than refused, so a Go deployment's arguments keep working."""
    return [
        *endpoints.ignored(args),
        *webhooks.ignored(args),
        *agent.ignored(args),
        *hardening_flags.ignored(args),
    ]


def run_main(args: argparse.Namespace) -> int:
    try:
        settings = settings_from(args, dict(os.environ))
        logs = log_config_from(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    app_logging.configure(
        fmt=logs.fmt,
        level=logs.level,
        time_encoding=logs.time_encoding,
        stacktrace_level=logs.stacktrace_level,
    )
    for note in ignored_flags(args):
        structlog.get_logger("vworkspace").warning(note)
    engines.log_seaweed_flag(args)
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
