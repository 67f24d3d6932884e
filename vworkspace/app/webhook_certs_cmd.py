"""`python -m vworkspace webhook-certs`: a self-signed CA and webhook serving pair for development.

In a cluster, cert-manager issues and rotates the serving certificate (manifests/webhook). For a
webhook served from a laptop or a test control plane, this writes ``ca.crt``, ``tls.crt`` and
``tls.key`` (mode 0600) and prints the base64 CA bundle to put in the
ValidatingWebhookConfiguration's ``caBundle``.
"""

from __future__ import annotations

import argparse
import base64
import datetime
from pathlib import Path
from typing import Any

from vworkspace.webhooks.certs import service_hosts, write_webhook_certs

EPILOG = """\
examples:
  python -m vworkspace webhook-certs --out ./certs --service vworkspace-webhook \\
      --namespace vworkspace-system
  python -m vworkspace webhook-certs --out ./certs --service vworkspace-webhook \\
      --namespace vworkspace-system --host 127.0.0.1     # also valid for a local server
  python -m vworkspace run --webhooks-enabled --webhook-cert-path ./certs ..."""


def add_parser(commands: Any, *, summary: str) -> None:
    parser = commands.add_parser(
        "webhook-certs",
        help=summary,
        description="Write ca.crt, tls.crt and tls.key for the admission webhook Service "
        "<service>.<namespace>.svc; print the caBundle.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    parser.add_argument("--service", required=True, metavar="NAME", help="webhook Service name")
    parser.add_argument(
        "--namespace", required=True, metavar="NS", help="namespace of the webhook Service"
    )
    parser.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="HOST",
        help="extra DNS name or IP address for the certificate (repeatable)",
    )
    parser.add_argument(
        "--days", type=int, default=365, metavar="N", help="validity in days (default: %(default)s)"
    )
    parser.set_defaults(handler=run_webhook_certs)


def run_webhook_certs(args: argparse.Namespace) -> int:
    if args.days < 1:
        print(f"error: --days must be at least 1, got {args.days}")
        return 2
    hosts = service_hosts(args.service, args.namespace) + tuple(args.host)
    files = write_webhook_certs(args.out, hosts=hosts, validity=datetime.timedelta(days=args.days))
    print(f"wrote {files.ca_cert}, {files.cert}, {files.key}")
    print(f"serving names: {', '.join(hosts)}")
    print("caBundle: " + base64.b64encode(files.ca_cert.read_bytes()).decode())
    return 0
