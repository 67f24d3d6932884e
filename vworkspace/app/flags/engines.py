"""Flags of the engines: the Velero namespace, the approval-claim secret, and Go's
--seaweed-watches-enabled (accepted either way: the SeaweedFS watches follow the CRDs)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

import structlog

from vworkspace.app.flags import go_bool


def add_flags(run: argparse.ArgumentParser) -> None:
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


def settings_from(args: argparse.Namespace, env: Mapping[str, str]) -> dict[str, Any]:
    return {
        "velero_namespace": (
            args.velero_namespace or env.get("VELERO_NAMESPACE", "").strip() or "velero"
        ),
        "approval_secret": (
            args.approval_claim_secret or env.get("VWORKSPACE_APPROVAL_CLAIM_SECRET", "")
        ).strip(),
    }


def log_seaweed_flag(args: argparse.Namespace) -> None:
    """Go's log line for ``--seaweed-watches-enabled``; the watches themselves follow the CRDs."""
    if args.seaweed_watches_enabled:
        structlog.get_logger("vworkspace").info(
            "SeaweedFS watches requested; they start when the Seaweed and S3Credentials CRDs "
            "are served"
        )
