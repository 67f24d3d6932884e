"""`python -m vworkspace`: one entry point, one sub-command per program.

Each sub-command lives in its own module and registers its options through
``add_parser(commands, *, summary=...)``; this module only builds the top-level parser and
dispatches. Exit codes: 0 success, 1 runtime failure, 2 usage error (argparse's convention).

Sub-command modules are imported lazily, only the one being run: ``run`` must not load the
development commands (``demo``, ``testenv``, ``mock-control-plane``, ``trace`` in
:mod:`vworkspace.devtools`), which pull in the local test control plane and the mock control
plane. That keeps the operator's memory and start-up small and its import graph honest (the
import-linter contracts in ``pyproject.toml`` check the static side; a test checks what ``run``
actually imports). The price is that the summaries of the commands live here, in
:data:`COMMANDS`, rather than beside their options.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

import attrs

from vworkspace import __version__

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


@attrs.frozen
class Command:
    name: str
    module: str
    summary: str


COMMANDS: tuple[Command, ...] = (
    Command(
        "run",
        "vworkspace.app.run_cmd",
        "run the operator (controllers for ApplicationInstance, Operation, Cluster)",
    ),
    Command(
        "testenv",
        "vworkspace.devtools.testenv_cmd",
        "a real local Kubernetes control plane (etcd, apiserver, controller-manager)",
    ),
    Command("manifests", "vworkspace.app.manifests_cmd", "generate manifests from the API models"),
    Command(
        "mock-control-plane",
        "vworkspace.devtools.mock_cmd",
        "run the mock vWorkspace control plane (agent + admin API) for development",
    ),
    Command(
        "register",
        "vworkspace.app.register_cmd",
        "register this cluster with the control plane (one-time token)",
    ),
    Command(
        "demo",
        "vworkspace.devtools.demo_cmd",
        "the whole Pull loop on this machine in one command (local Kubernetes, mock control "
        "plane, operator, one job)",
    ),
    Command(
        "trace",
        "vworkspace.devtools.trace_cmd",
        "event traces of run --trace-file: turn one into a replay fixture (to-fixture)",
    ),
    Command(
        "keys",
        "vworkspace.app.keys_cmd",
        "generate an Ed25519 key pair for signing Pull jobs (prints the key id)",
    ),
    Command(
        "webhook-certs",
        "vworkspace.app.webhook_certs_cmd",
        "generate a self-signed CA and webhook serving certificate (development)",
    ),
)


def chosen_command(argv: Sequence[str]) -> str | None:
    """The sub-command named in ``argv`` (the first word that is one), else None."""
    names = {command.name for command in COMMANDS}
    for word in argv:
        if word in names:
            return word
        if not word.startswith("-"):
            return None  # an unknown word: argparse will say so
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; with ``argv``, only the sub-command it names gets its options (and its
    module imported), the others are listed by name and summary. Without ``argv``, every
    sub-command is complete (for tests and documentation)."""
    parser = argparse.ArgumentParser(
        prog="python -m vworkspace",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"vworkspace {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    wanted = None if argv is None else chosen_command(argv)
    for command in COMMANDS:
        if argv is None or command.name == wanted:
            module = importlib.import_module(command.module)
            module.add_parser(commands, summary=command.summary)
        else:
            commands.add_parser(command.name, help=command.summary)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(words)
    args = parser.parse_args(words)
    result: int = args.handler(args)
    sys.stdout.flush()
    return result
