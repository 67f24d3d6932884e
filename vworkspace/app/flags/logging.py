"""Flags of the logs: --log-format/--log-level, and controller-runtime's --zap-* for Go
deployments."""

from __future__ import annotations

import argparse

from vworkspace.app import logging as app_logging
from vworkspace.app.flags import go_bool


def add_flags(run: argparse.ArgumentParser) -> None:
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
