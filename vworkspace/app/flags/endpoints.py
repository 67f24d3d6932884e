"""Flags of the HTTP endpoints: the probes, /metrics (secure by default) and its serving pair,
and Go's --enable-http2 (accepted only off)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vworkspace.app.flags import go_bool
from vworkspace.app.http import Address, ServingCert, listeners_conflict


def add_flags(run: argparse.ArgumentParser) -> None:
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


def settings_from(args: argparse.Namespace) -> dict[str, Any]:
    if args.enable_http2:
        raise ValueError(
            "--enable-http2: HTTP/2 is not supported by this implementation; the metrics and "
            "webhook servers speak HTTP/1.1 only (aiohttp has no HTTP/2 server). "
            "Drop the flag or pass --enable-http2=false"
        )
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
    return {
        "probes": probes,
        "metrics": metrics,
        "metrics_secure": args.metrics_secure,
        "metrics_cert": metrics_cert,
    }


def ignored(args: argparse.Namespace) -> list[str]:
    metrics_certs = [
        flag
        for flag, value, default in (
            ("--metrics-cert-path", args.metrics_cert_path, ""),
            ("--metrics-cert-name", args.metrics_cert_name, "tls.crt"),
            ("--metrics-cert-key", args.metrics_cert_key, "tls.key"),
        )
        if value != default
    ]
    reason = ""
    if args.metrics_bind_address in ("", "0"):
        reason = "the metrics listener is off (--metrics-bind-address 0)"
    elif not args.metrics_secure:
        reason = "--metrics-secure=false serves plain HTTP"
    elif not args.metrics_cert_path:
        reason = "without --metrics-cert-path a self-signed pair is used"
    if metrics_certs and reason:
        return [f"{', '.join(metrics_certs)} ignored: {reason}"]
    return []


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
