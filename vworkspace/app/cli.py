"""`python -m vworkspace`: one entry point, one sub-command per program.

Each sub-command lives in its own module and registers itself through ``add_parser``; this module
only builds the top-level parser and dispatches. Exit codes: 0 success, 1 runtime failure,
2 usage error (argparse's convention).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from vworkspace import __version__
from vworkspace.app import (
    demo_cmd,
    manifests_cmd,
    mock_cmd,
    register_cmd,
    run_cmd,
    testenv_cmd,
    webhook_certs_cmd,
)

DESCRIPTION = """\
vworkspace runs vWorkspace applications on Kubernetes clusters that the control plane never
connects to: the operator dials out (Pull mode), turns jobs into ApplicationInstance and
Operation resources, reconciles them into Flux HelmReleases and Velero backups, and reports
status back."""

EPILOG = """\
examples:
  python -m vworkspace run --kubeconfig ./kubeconfig   run the operator against a cluster
  python -m vworkspace testenv start            run a local Kubernetes control plane for development
  python -m vworkspace testenv start --kubeconfig-out ./kubeconfig
  python -m vworkspace manifests crds           regenerate manifests/crds from the API models
  python -m vworkspace demo                     the whole Pull loop locally: one job, end to end
  python -m vworkspace webhook-certs --out ./certs --service NAME --namespace NS

Run 'python -m vworkspace COMMAND --help' for the options of a command."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vworkspace",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"vworkspace {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run_cmd.add_parser(commands)
    testenv_cmd.add_parser(commands)
    manifests_cmd.add_parser(commands)
    mock_cmd.add_parser(commands)
    register_cmd.add_parser(commands)
    demo_cmd.add_parser(commands)
    webhook_certs_cmd.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.handler(args)
    sys.stdout.flush()
    return result
