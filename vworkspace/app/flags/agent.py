"""Flags of the Pull-mode agent: on/off (unset: on, as in Go), the control plane and
credentials, polling and the job limits. Its hardening flags are app/hardening_flags.py."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

import attrs

from vworkspace.agent.applier import DEFAULT_ALLOWED, DEFAULT_MAX_PAYLOAD, parse_allowed
from vworkspace.agent.credentials import DEFAULT_SECRET, Overrides
from vworkspace.agent.poller import DEFAULT_CONCURRENCY, parse_interval
from vworkspace.api.endpoints import endpoint_problem
from vworkspace.app.flags import egress, go_bool
from vworkspace.app.hardening_flags import Hardening
from vworkspace.app.wiring import AgentSettings


def add_flags(run: argparse.ArgumentParser) -> None:
    agent = run.add_argument_group(
        "pull-mode agent",
        "Credentials: each flag wins over its environment variable, which wins over the "
        "credentials Secret written at registration.",
    )
    agent.add_argument(
        "--agent-enabled",
        type=go_bool,
        nargs="?",
        const=True,
        default=None,
        metavar="BOOL",
        help="poll the control plane for jobs and apply them, only on the leader. Unset (the "
        "default), the agent runs as in the Go operator: it idles until credentials exist "
        "(flags, environment or the credentials Secret) and then polls; false turns it off",
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
        default=DEFAULT_SECRET,
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
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help="jobs applied at once; jobs on one object stay in order (default: %(default)s)",
    )
    agent.add_argument(
        "--agent-allow-kind",
        action="append",
        default=[],
        metavar="GROUP/Kind",
        help="also allow jobs to write this kind, e.g. /ConfigMap, apps/Deployment or "
        "ops.vworkspace.io/Cluster (repeatable; default: ApplicationInstance, Operation and "
        "Namespace only)",
    )
    agent.add_argument(
        "--agent-max-payload-bytes",
        type=int,
        default=DEFAULT_MAX_PAYLOAD,
        metavar="N",
        help="larger job payloads fail without being applied (default: %(default)s)",
    )


def settings_from(
    args: argparse.Namespace, env: Mapping[str, str], *, hardening: Hardening
) -> dict[str, Any]:
    # Unset means on, as the Go operator always runs its agent (docs/operations.md).
    if args.agent_enabled is False:
        return {"agent": None}
    return {
        "agent": attrs.evolve(
            agent_settings_from(args, env),
            hardening=hardening,
            egress=egress.config_from(args, env),
        )
    }


def ignored(args: argparse.Namespace) -> list[str]:
    # The agent runs unless --agent-enabled=false; agent flags given with it off do nothing.
    given = [
        flag
        for flag, value, default in (
            ("--control-plane-base-url", args.control_plane_base_url, None),
            ("--cluster-id", args.cluster_id, None),
            ("--agent-token", args.agent_token, None),
            ("--agent-poll-interval", args.agent_poll_interval, "30s"),
            ("--agent-credentials-secret", args.agent_credentials_secret, DEFAULT_SECRET),
            ("--agent-credentials-namespace", args.agent_credentials_namespace, None),
            ("--agent-concurrency", args.agent_concurrency, DEFAULT_CONCURRENCY),
            ("--agent-allow-kind", args.agent_allow_kind, []),
            ("--agent-max-payload-bytes", args.agent_max_payload_bytes, DEFAULT_MAX_PAYLOAD),
        )
        if value != default
    ]
    given += egress.given(args)
    if given and args.agent_enabled is False:
        return [f"{', '.join(given)} ignored: --agent-enabled=false turns the agent off"]
    return []


def agent_settings_from(args: argparse.Namespace, env: Mapping[str, str]) -> AgentSettings:
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
    problem = base_url and endpoint_problem(
        base_url,
        field="--control-plane-base-url (or CONTROL_PLANE_BASE_URL)",
        allow_insecure=args.allow_insecure_control_plane,
    )
    if problem:
        raise ValueError(problem)
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
