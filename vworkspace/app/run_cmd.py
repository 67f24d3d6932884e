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
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import prometheus_client
import structlog

from vworkspace.agent.applier import DEFAULT_ALLOWED, DEFAULT_MAX_PAYLOAD, parse_allowed
from vworkspace.agent.credentials import DEFAULT_SECRET, Overrides
from vworkspace.agent.poller import DEFAULT_CONCURRENCY, parse_interval
from vworkspace.api.endpoints import endpoint_problem
from vworkspace.app import hardening_flags
from vworkspace.app import logging as app_logging
from vworkspace.app.http import Address, ServingCert, listeners_conflict
from vworkspace.app.wiring import (
    DEFAULT_NAMESPACE,
    DEFAULT_WORKERS,
    LEASE_NAME,
    AgentSettings,
    OperatorSettings,
    WebhookSettings,
    run_operator,
)
from vworkspace.kube.rest.kubeconfig import SERVICE_ACCOUNT
from vworkspace.kube.runtime.leaderelection import LeaseTiming

# controller-runtime's default, which the Go chart and kustomize overlay mount the Secret into.
DEFAULT_WEBHOOK_CERT_DIR = str(Path(tempfile.gettempdir()) / "k8s-webhook-server" / "serving-certs")

EPILOG = """\
Boolean flags take Go's syntax: --flag, --flag=true, --flag=false.

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
    conn = run.add_argument_group("cluster connection")
    conn.add_argument(
        "--kubeconfig",
        metavar="PATH",
        help="kubeconfig file (default: $KUBECONFIG, "
        "in-cluster config inside a Pod, else ~/.kube/config)",
    )
    conn.add_argument("--context", metavar="NAME", help="kubeconfig context (default: current)")
    serve = run.add_argument_group(
        "endpoints",
        "The probes are plain HTTP. /metrics is HTTPS with Kubernetes authentication and "
        "authorization unless --metrics-secure=false (docs/operations.md).",
    )
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
        help="/metrics listener; 0 disables (default: %(default)s); with secure metrics it "
        "must differ from --health-probe-bind-address",
    )
    serve.add_argument(
        "--metrics-secure",
        type=go_bool,
        nargs="?",
        const=True,
        default=True,
        metavar="BOOL",
        help="serve /metrics over HTTPS, allowing only callers whose bearer token passes a "
        "TokenReview and a SubjectAccessReview for GET /metrics (default: true; "
        "=false: plain HTTP, no authentication)",
    )
    serve.add_argument(
        "--metrics-cert-path",
        default="",
        metavar="DIR",
        help="directory with the metrics serving certificate and key, reloaded when they change "
        "(default: none, a self-signed pair is made at start)",
    )
    serve.add_argument(
        "--metrics-cert-name",
        default="tls.crt",
        metavar="FILE",
        help="certificate file in --metrics-cert-path (default: %(default)s)",
    )
    serve.add_argument(
        "--metrics-cert-key",
        default="tls.key",
        metavar="FILE",
        help="key file in --metrics-cert-path (default: %(default)s)",
    )
    serve.add_argument(
        "--enable-http2",
        type=go_bool,
        nargs="?",
        const=True,
        default=False,
        metavar="BOOL",
        help="only false is accepted: the metrics and webhook servers speak HTTP/1.1 only "
        "(default: false)",
    )
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
    engines.add_argument(
        "--seaweed-watches-enabled",
        type=go_bool,
        nargs="?",
        const=True,
        default=False,
        metavar="BOOL",
        help="accepted for Go compatibility: the SeaweedFS watches start whenever the Seaweed "
        "and S3Credentials CRDs are served, whatever this says (default: false)",
    )
    hooks = run.add_argument_group(
        "admission webhooks",
        "Validate ApplicationInstance and Operation writes at the API server (docs/webhooks.md); "
        "needs the ValidatingWebhookConfiguration of manifests/webhook.",
    )
    hooks.add_argument(
        "--webhooks-enabled",
        type=go_bool,
        nargs="?",
        const=True,
        default=False,
        metavar="BOOL",
        help="serve the two validating webhooks over HTTPS (default: false)",
    )
    hooks.add_argument(
        "--webhook-bind-address",
        default=":9443",
        metavar="HOST:PORT",
        help="webhook listener (default: %(default)s)",
    )
    hooks.add_argument(
        "--webhook-cert-path",
        default="",
        metavar="DIR",
        help="directory with the serving certificate and key, reloaded when they change "
        f"(default: {DEFAULT_WEBHOOK_CERT_DIR})",
    )
    hooks.add_argument(
        "--webhook-cert-name",
        default="tls.crt",
        metavar="FILE",
        help="certificate file in the directory (default: %(default)s)",
    )
    hooks.add_argument(
        "--webhook-cert-key",
        default="tls.key",
        metavar="FILE",
        help="key file in the directory (default: %(default)s)",
    )
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
        "--trace-file",
        type=Path,
        metavar="PATH",
        help="append NDJSON of every informer event and every reconcile (objects scrubbed of "
        "secrets) for debugging and replay fixtures, docs/traces.md (env: VWORKSPACE_TRACE_FILE; "
        "default: off)",
    )
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
    hardening_flags.add_flags(run, boolean=go_bool)
    logs = run.add_argument_group(
        "logging",
        "JSON lines at info by default (the Go operator defaults to zap development mode: "
        "console at debug). The --zap-* flags of controller-runtime are accepted for Go "
        "deployments. Precedence: --log-format/--log-level > --zap-encoder/--zap-log-level > "
        "--zap-devel > defaults.",
    )
    logs.add_argument(
        "--log-format",
        choices=["json", "console"],
        help="json lines for machines, console for people (default: json)",
    )
    logs.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="(default: info)",
    )
    logs.add_argument(
        "--zap-devel",
        type=go_bool,
        nargs="?",
        const=True,
        metavar="BOOL",
        help="development mode: console format at debug level; =false: json at info "
        "(default: unset, i.e. json at info)",
    )
    logs.add_argument(
        "--zap-encoder",
        type=str.lower,
        choices=["json", "console"],
        help="same as --log-format",
    )
    logs.add_argument(
        "--zap-log-level",
        metavar="LEVEL",
        help="debug, info, error, or an integer > 0 (zap verbosity; every integer means debug)",
    )
    logs.add_argument(
        "--zap-stacktrace-level",
        type=str.lower,
        choices=list(app_logging.ZAP_STACKTRACE_LEVELS),
        help="at and above this level (panic: critical) exceptions keep their traceback and "
        "other entries get the call stack; below it exceptions are one line "
        "(default: unset, tracebacks always and no call stacks)",
    )
    logs.add_argument(
        "--zap-time-encoding",
        type=str.lower,
        choices=list(app_logging.TIME_ENCODINGS),
        metavar="ENCODING",
        help="format of the ts field, in UTC: epoch, millis, nanos, iso8601, rfc3339, "
        "rfc3339nano (default: unset, ISO 8601 with microseconds)",
    )
    run.set_defaults(handler=run_main)


def go_bool(text: str) -> bool:
    """A boolean flag value as Go's ``strconv.ParseBool`` reads it."""
    if text in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if text in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def proxies_from(env: Mapping[str, str]) -> dict[str, str]:
    """HTTPS_PROXY, HTTP_PROXY and NO_PROXY (lower case wins, as in curl and urllib) for the
    API server connection, read once here (kube/rest/transport.py, ``proxy_for``)."""
    proxies: dict[str, str] = {}
    for name in ("https", "http", "no"):
        value = env.get(f"{name}_proxy") or env.get(f"{name.upper()}_PROXY")
        if value:
            proxies[name] = value
    return proxies


def settings_from(args: argparse.Namespace, env: dict[str, str]) -> OperatorSettings:
    """Resolve flags > environment > defaults; raise ValueError naming the flag at fault."""
    if args.enable_http2:
        raise ValueError(
            "--enable-http2: HTTP/2 is not supported by this implementation; the metrics and "
            "webhook servers speak HTTP/1.1 only (aiohttp has no HTTP/2 server). "
            "Drop the flag or pass --enable-http2=false"
        )
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
    metrics_cert = metrics_cert_from(args)
    if args.metrics_secure and metrics is not None:
        if probes is not None and listeners_conflict(probes, metrics):
            raise ValueError(
                f"--metrics-bind-address {args.metrics_bind_address} and "
                f"--health-probe-bind-address {args.health_probe_bind_address} must differ when "
                "--metrics-secure is on: /metrics is served over HTTPS while the probes stay "
                "plain HTTP; use another port (e.g. :8443) or pass --metrics-secure=false"
            )
        check_cert_files(
            metrics_cert,
            dir_flag="--metrics-cert-path",
            name_flag="--metrics-cert-name",
            key_flag="--metrics-cert-key",
        )
    hardening = hardening_flags.hardening_from(args)
    # Unset means on, as the Go operator always runs its agent (docs/operations.md).
    agent = None if args.agent_enabled is False else agent_settings_from(args, env)
    if agent is not None:
        agent = attrs.evolve(agent, hardening=hardening)
    webhooks = webhook_settings_from(args) if args.webhooks_enabled else None
    kubeconfig = args.kubeconfig or env.get("KUBECONFIG") or None
    in_cluster = kubeconfig is None and bool(env.get("KUBERNETES_SERVICE_HOST"))
    namespace = args.leader_election_namespace or env.get("POD_NAMESPACE") or DEFAULT_NAMESPACE
    return OperatorSettings(
        kubeconfig=kubeconfig,
        context=args.context,
        in_cluster=in_cluster,
        proxies=proxies_from(env),
        service_host=env.get("KUBERNETES_SERVICE_HOST", ""),
        service_port=env.get("KUBERNETES_SERVICE_PORT", ""),
        service_account_dir=service_account_dir_from(env),
        exec_environ=env,
        namespace=namespace,
        identity=f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}",
        leader_elect=args.leader_elect,
        lease_name=args.leader_election_id,
        lease_timing=lease_timing_from(args),
        workers=args.workers,
        reconcile_timeout=args.reconcile_timeout,
        probes=probes,
        metrics=metrics,
        metrics_secure=args.metrics_secure,
        metrics_cert=metrics_cert,
        agent=agent,
        webhooks=webhooks,
        velero_namespace=(
            args.velero_namespace or env.get("VELERO_NAMESPACE", "").strip() or "velero"
        ),
        approval_secret=(
            args.approval_claim_secret or env.get("VWORKSPACE_APPROVAL_CLAIM_SECRET", "")
        ).strip(),
        flux_service_account=hardening.flux_service_account,
        trace_file=args.trace_file
        or (Path(env["VWORKSPACE_TRACE_FILE"]) if env.get("VWORKSPACE_TRACE_FILE") else None),
    )


SERVICE_ACCOUNT_DIR_ENV = "VWORKSPACE_SERVICE_ACCOUNT_DIR"


def service_account_dir_from(env: Mapping[str, str]) -> Path:
    """Where the in-cluster loader finds ``token``, ``ca.crt`` and ``namespace``: the kubelet's
    ``/var/run/secrets/kubernetes.io/serviceaccount`` unless $VWORKSPACE_SERVICE_ACCOUNT_DIR
    names another directory. The override exists so tests (and an unusual Pod mounting the
    projected token elsewhere) can run the real in-cluster path outside a Pod; it is read here,
    in the app, never below it."""
    override = env.get(SERVICE_ACCOUNT_DIR_ENV, "").strip()
    return Path(override) if override else SERVICE_ACCOUNT


def metrics_cert_from(args: argparse.Namespace) -> ServingCert:
    return ServingCert(
        directory=Path(args.metrics_cert_path) if args.metrics_cert_path else None,
        cert_name=args.metrics_cert_name,
        key_name=args.metrics_cert_key,
    )


def check_cert_files(cert: ServingCert, *, dir_flag: str, name_flag: str, key_flag: str) -> None:
    if cert.directory is None:
        return
    for flag, name in ((name_flag, cert.cert_name), (key_flag, cert.key_name)):
        if not (cert.directory / name).is_file():
            raise ValueError(
                f"{flag}: {cert.directory / name} does not exist ({dir_flag} {cert.directory}); "
                "mount the serving Secret there or create a pair with "
                "`python -m vworkspace webhook-certs`"
            )


def ignored_flags(args: argparse.Namespace) -> list[str]:
    """Flags given that have no effect in this combination (Go ignores them too); logged as
    warnings at start rather than refused, so a Go deployment's arguments keep working."""

    def changed(*flags: tuple[str, object, object]) -> list[str]:
        return [flag for flag, value, default in flags if value != default]

    notes = []
    metrics_certs = changed(
        ("--metrics-cert-path", args.metrics_cert_path, ""),
        ("--metrics-cert-name", args.metrics_cert_name, "tls.crt"),
        ("--metrics-cert-key", args.metrics_cert_key, "tls.key"),
    )
    reason = ""
    if args.metrics_bind_address in ("", "0"):
        reason = "the metrics listener is off (--metrics-bind-address 0)"
    elif not args.metrics_secure:
        reason = "--metrics-secure=false serves plain HTTP"
    elif not args.metrics_cert_path:
        reason = "without --metrics-cert-path a self-signed pair is used"
    if metrics_certs and reason:
        notes.append(f"{', '.join(metrics_certs)} ignored: {reason}")
    webhook_flags = changed(
        ("--webhook-bind-address", args.webhook_bind_address, ":9443"),
        ("--webhook-cert-path", args.webhook_cert_path, ""),
        ("--webhook-cert-name", args.webhook_cert_name, "tls.crt"),
        ("--webhook-cert-key", args.webhook_cert_key, "tls.key"),
    )
    if webhook_flags and not args.webhooks_enabled:
        notes.append(f"{', '.join(webhook_flags)} ignored: --webhooks-enabled is not set")
    # The agent runs unless --agent-enabled=false; agent flags given with it off do nothing.
    agent_flags = changed(
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
    if agent_flags and args.agent_enabled is False:
        notes.append(f"{', '.join(agent_flags)} ignored: --agent-enabled=false turns the agent off")
    notes.extend(hardening_flags.ignored(args))
    return notes


def log_config_from(args: argparse.Namespace) -> app_logging.LogConfig:
    """--log-* > --zap-encoder/--zap-log-level > --zap-devel > json at info."""
    devel = bool(args.zap_devel)
    zap_level = None
    if args.zap_log_level is not None:
        # Checked even when --log-level wins: a bad value is an error, not something to ignore.
        try:
            zap_level = app_logging.zap_log_level(args.zap_log_level)
        except ValueError as err:
            raise ValueError(f"--zap-log-level: {err}") from None
    return app_logging.LogConfig(
        fmt=args.log_format or args.zap_encoder or ("console" if devel else "json"),
        level=args.log_level or zap_level or ("debug" if devel else "info"),
        time_encoding=args.zap_time_encoding,
        stacktrace_level=(
            app_logging.ZAP_STACKTRACE_LEVELS[args.zap_stacktrace_level]
            if args.zap_stacktrace_level
            else None
        ),
    )


def webhook_settings_from(args: argparse.Namespace) -> WebhookSettings:
    try:
        address = Address.parse(args.webhook_bind_address)
    except ValueError as err:
        raise ValueError(f"--webhook-bind-address: {err}") from None
    if address is None:
        raise ValueError("--webhook-bind-address must not be 0 when --webhooks-enabled is set")
    cert_dir = Path(args.webhook_cert_path or DEFAULT_WEBHOOK_CERT_DIR)
    for flag, name in (
        ("--webhook-cert-name", args.webhook_cert_name),
        ("--webhook-cert-key", args.webhook_cert_key),
    ):
        if not (cert_dir / name).is_file():
            raise ValueError(
                f"{flag}: {cert_dir / name} does not exist (--webhook-cert-path {cert_dir}); "
                "mount the serving Secret there or create a pair with "
                "`python -m vworkspace webhook-certs`"
            )
    return WebhookSettings(
        address=address,
        cert_dir=cert_dir,
        cert_name=args.webhook_cert_name,
        key_name=args.webhook_cert_key,
    )


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
    log_seaweed_flag(args)
    return asyncio.run(_serve(settings))


def log_seaweed_flag(args: argparse.Namespace) -> None:
    """Go's log line for ``--seaweed-watches-enabled``; the watches themselves follow the CRDs."""
    if args.seaweed_watches_enabled:
        structlog.get_logger("vworkspace").info(
            "SeaweedFS watches requested; they start when the Seaweed and S3Credentials CRDs "
            "are served"
        )


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
