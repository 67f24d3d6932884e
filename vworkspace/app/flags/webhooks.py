"""Flags of the admission webhooks: on/off, the listener and the serving pair."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from vworkspace.app.flags import go_bool
from vworkspace.app.http import Address
from vworkspace.app.wiring import WebhookSettings

# controller-runtime's default, which the Go chart and kustomize overlay mount the Secret into.
DEFAULT_WEBHOOK_CERT_DIR = str(Path(tempfile.gettempdir()) / "k8s-webhook-server" / "serving-certs")


def add_flags(run: argparse.ArgumentParser) -> None:
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


def settings_from(args: argparse.Namespace) -> dict[str, Any]:
    return {"webhooks": webhook_settings_from(args) if args.webhooks_enabled else None}


def ignored(args: argparse.Namespace) -> list[str]:
    given = [
        flag
        for flag, value, default in (
            ("--webhook-bind-address", args.webhook_bind_address, ":9443"),
            ("--webhook-cert-path", args.webhook_cert_path, ""),
            ("--webhook-cert-name", args.webhook_cert_name, "tls.crt"),
            ("--webhook-cert-key", args.webhook_cert_key, "tls.key"),
        )
        if value != default
    ]
    if given and not args.webhooks_enabled:
        return [f"{', '.join(given)} ignored: --webhooks-enabled is not set"]
    return []


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
