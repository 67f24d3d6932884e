"""Flags of the manager: leader election (the Lease, its identity and timing) and tuning (workers,
the reconcile deadline, the Operation poll)."""

from __future__ import annotations

import argparse
import socket
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vworkspace.agent.poller import parse_interval
from vworkspace.app.flags import go_bool
from vworkspace.app.wiring import DEFAULT_NAMESPACE, DEFAULT_WORKERS, LEASE_NAME
from vworkspace.controllers.operation import POLL
from vworkspace.kube.runtime.leaderelection import LeaseTiming


def add_leader_election_flags(run: argparse.ArgumentParser) -> None:
    ha = run.add_argument_group("leader election")
    ha.add_argument(
        "--leader-elect",
        type=go_bool,
        nargs="?",
        const=True,
        default=False,
        metavar="BOOL",
        help="only the holder of the Lease reconciles; others keep caches warm (default: false)",
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
    ha.add_argument(
        "--leader-elect-lease-duration",
        default="15s",
        metavar="DURATION",
        help="how long a Lease that is not renewed blocks the other replicas: a killed leader is "
        "replaced after about this plus one retry period (default: %(default)s)",
    )
    ha.add_argument(
        "--leader-elect-renew-deadline",
        default="10s",
        metavar="DURATION",
        help="a leader that cannot renew for this long stops (default: %(default)s)",
    )
    ha.add_argument(
        "--leader-elect-retry-period",
        default="2s",
        metavar="DURATION",
        help="how often candidates and the leader look at the Lease (default: %(default)s)",
    )


def add_tuning_flags(run: argparse.ArgumentParser) -> None:
    tuning = run.add_argument_group("tuning")
    tuning.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        metavar="N",
        help="concurrent reconciles per controller; one object is never reconciled twice at "
        "once (default: %(default)s)",
    )
    tuning.add_argument(
        "--reconcile-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="deadline of one reconcile (default: %(default)s)",
    )
    tuning.add_argument(
        "--operation-poll-interval",
        type=float,
        default=POLL,
        metavar="SECONDS",
        help="how often a Running Operation's workload is looked at (default: %(default)s)",
    )
    tuning.add_argument(
        "--trace-file",
        type=Path,
        metavar="PATH",
        help="append NDJSON of every informer event and every reconcile (objects scrubbed of "
        "secrets) for debugging and replay fixtures, docs/traces.md (env: VWORKSPACE_TRACE_FILE; "
        "default: off)",
    )


def settings_from(args: argparse.Namespace, env: Mapping[str, str]) -> dict[str, Any]:
    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    if args.reconcile_timeout <= 0:
        raise ValueError(f"--reconcile-timeout must be positive, got {args.reconcile_timeout}")
    if args.operation_poll_interval <= 0:
        raise ValueError(
            f"--operation-poll-interval must be positive, got {args.operation_poll_interval}"
        )
    return {
        "namespace": (
            args.leader_election_namespace or env.get("POD_NAMESPACE") or DEFAULT_NAMESPACE
        ),
        "identity": f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}",
        "leader_elect": args.leader_elect,
        "lease_name": args.leader_election_id,
        "lease_timing": lease_timing_from(args),
        "workers": args.workers,
        "reconcile_timeout": args.reconcile_timeout,
        "operation_poll_interval": args.operation_poll_interval,
        "trace_file": args.trace_file
        or (Path(env["VWORKSPACE_TRACE_FILE"]) if env.get("VWORKSPACE_TRACE_FILE") else None),
    }


def lease_timing_from(args: argparse.Namespace) -> LeaseTiming:
    """The three leader-election durations, whole seconds (the Lease records whole seconds)."""
    values = []
    for flag, text in (
        ("--leader-elect-lease-duration", args.leader_elect_lease_duration),
        ("--leader-elect-renew-deadline", args.leader_elect_renew_deadline),
        ("--leader-elect-retry-period", args.leader_elect_retry_period),
    ):
        try:
            values.append(float(parse_interval(text)))
        except ValueError as err:
            raise ValueError(f"{flag}: {err}") from None
    try:
        return LeaseTiming(*values)
    except ValueError as err:
        raise ValueError(
            f"--leader-elect-lease-duration, --leader-elect-renew-deadline, "
            f"--leader-elect-retry-period: {err}"
        ) from None
