"""The `run` flags of zero-trust Pull mode: signed jobs, the local policy, Flux impersonation and
https-only control-plane URLs (docs/operations.md, "Hardening").

Kept apart from app/run_cmd.py (one argument group, one parsing helper) so it stays a small,
self-contained addition. Every value is checked at start and a bad one is refused naming its
flag; list flags are repeatable and comma-separated, and an absent list flag means "no limit".
"""

from __future__ import annotations

import argparse
import datetime
from collections.abc import Callable
from typing import Any

import attrs

from vworkspace.agent.policy import Policy, Rule, parse_list
from vworkspace.agent.poller import parse_interval
from vworkspace.agent.trustedkeys import DEFAULT_NAME, KeySource
from vworkspace.agent.verifier import DEFAULT_MAX_AGE
from vworkspace.api.endpoints import INSECURE_FLAG
from vworkspace.api.operation import EngineName, OperationType

LIST_FLAGS = (
    ("--agent-allowed-namespaces", "GLOB", "namespaces jobs may touch, shell globs (team-*)"),
    ("--agent-allowed-catalog-ids", "ID", "ApplicationInstance spec.appRef.catalogId values"),
    (
        "--agent-allowed-chart-sources",
        "URL",
        "URL prefixes of Helm/OCI repositories for spec.chart.url (matched at a / boundary)",
    ),
    ("--agent-allowed-operation-types", "TYPE", "Operation spec.type values (Backup, ...)"),
    ("--agent-allowed-engines", "ENGINE", "Operation spec.engine values (velero, job, ...)"),
)


@attrs.frozen
class Hardening:
    require_signed_jobs: bool = False
    signed_job_max_age: datetime.timedelta = DEFAULT_MAX_AGE
    trusted_keys: KeySource = attrs.field(factory=KeySource)
    policy: Policy = attrs.field(factory=Policy)
    flux_service_account: str = ""
    # http:// control-plane URLs (--control-plane-base-url, a Cluster's endpoint); api/endpoints.py
    allow_insecure_control_plane: bool = False


def add_flags(run: Any, *, boolean: Callable[[str], bool]) -> None:
    group = run.add_argument_group(
        "signed jobs and local policy",
        'Zero-trust Pull mode (docs/operations.md, "Hardening"). List flags are repeatable and '
        "comma-separated; without them nothing is limited beyond the kind allow-list.",
    )
    group.add_argument(
        "--agent-require-signed-jobs",
        type=boolean,
        nargs="?",
        const=True,
        default=False,
        metavar="BOOL",
        help="fail every job without a valid signature from a trusted key and a bounded "
        "expiresAt (default: false; a present but invalid signature is refused either way)",
    )
    group.add_argument(
        "--agent-signed-job-max-age",
        default="24h",
        metavar="DURATION",
        help="with signatures required, how far ahead expiresAt may lie (default: %(default)s)",
    )
    group.add_argument(
        "--agent-trusted-keys",
        default=f"configmap/{DEFAULT_NAME}",
        metavar="[configmap/|secret/]NAME",
        help="ConfigMap or Secret in the operator namespace with one <keyId>: <PEM Ed25519 "
        "public key> entry per trusted key, watched (default: %(default)s)",
    )
    for flag, metavar, what in LIST_FLAGS:
        group.add_argument(flag, action="append", default=[], metavar=metavar, help=what)
    add_insecure_flag(group, boolean=boolean)
    group.add_argument(
        "--flux-service-account",
        default="",
        metavar="NAME",
        help="HelmRelease spec.serviceAccountName: Flux installs charts as this ServiceAccount "
        "of the release namespace instead of helm-controller's own identity (default: unset)",
    )


def add_insecure_flag(group: Any, *, boolean: Callable[[str], bool]) -> None:
    """``--allow-insecure-control-plane``, shared by ``run`` and ``register``."""
    group.add_argument(
        INSECURE_FLAG,
        type=boolean,
        nargs="?",
        const=True,
        default=False,
        metavar="BOOL",
        help="accept http:// control-plane URLs (--control-plane-base-url, a Cluster's "
        "spec.controlPlaneEndpoint): the registration and bearer tokens then travel in clear "
        "text. For the mock control plane in tests and evaluation only (default: false, "
        "https:// required)",
    )


def hardening_from(args: argparse.Namespace) -> Hardening:
    """The flags' values, checked; ValueError naming the flag at fault."""
    try:
        max_age = parse_interval(args.agent_signed_job_max_age)
    except ValueError as err:
        raise ValueError(f"--agent-signed-job-max-age: {err}") from None
    try:
        source = KeySource.parse(args.agent_trusted_keys)
    except ValueError as err:
        raise ValueError(f"--agent-trusted-keys: {err}") from None
    types = _checked(args.agent_allowed_operation_types, OperationType, "operation-types")
    engines = _checked(args.agent_allowed_engines, EngineName, "engines")
    sources = parse_list(args.agent_allowed_chart_sources)
    for prefix in sources or ():
        if not prefix.startswith(("https://", "http://", "oci://")):
            raise ValueError(
                f"--agent-allowed-chart-sources: {prefix!r} must start with https://, http:// "
                "or oci://"
            )
    return Hardening(
        require_signed_jobs=args.agent_require_signed_jobs,
        signed_job_max_age=datetime.timedelta(seconds=max_age),
        trusted_keys=source,
        policy=Policy(
            namespaces=parse_list(args.agent_allowed_namespaces),
            catalog_ids=parse_list(args.agent_allowed_catalog_ids),
            chart_sources=sources,
            operation_types=types,
            engines=engines,
        ),
        flux_service_account=args.flux_service_account.strip(),
        allow_insecure_control_plane=args.allow_insecure_control_plane,
    )


def _checked(values: list[str], known: Any, flag: str) -> Rule:
    rule = parse_list(values)
    valid = sorted(str(member.value) for member in known)
    for value in rule or ():
        if value not in valid:
            raise ValueError(
                f"--agent-allowed-{flag}: unknown value {value!r} (one of {', '.join(valid)})"
            )
    return rule


def ignored(args: argparse.Namespace) -> list[str]:
    """Agent-only flags given with --agent-enabled=false (the agent runs unless turned off)."""
    given = [
        flag
        for flag, value, default in (
            ("--agent-require-signed-jobs", args.agent_require_signed_jobs, False),
            ("--agent-signed-job-max-age", args.agent_signed_job_max_age, "24h"),
            ("--agent-trusted-keys", args.agent_trusted_keys, f"configmap/{DEFAULT_NAME}"),
            (INSECURE_FLAG, args.allow_insecure_control_plane, False),
            *((f, getattr(args, f[2:].replace("-", "_")), []) for f, _, _ in LIST_FLAGS),
        )
        if value != default
    ]
    if given and args.agent_enabled is False:
        return [f"{', '.join(given)} ignored: --agent-enabled=false turns the agent off"]
    return []
