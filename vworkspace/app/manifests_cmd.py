"""`python -m vworkspace manifests crds`: write (or check) the generated CRD manifests."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from vworkspace.api import crdgen, reference

DEFAULT_OUT = Path("manifests/crds")
DEFAULT_REFERENCE = Path("docs/api-reference.md")


def add_parser(commands: Any, *, summary: str) -> None:
    manifests = commands.add_parser(
        "manifests",
        help=summary,
        description="Generate manifests from the API models.",
    )
    sub = manifests.add_subparsers(dest="manifests_command", metavar="KIND", required=True)
    crds = sub.add_parser(
        "crds",
        help="the CustomResourceDefinitions of ApplicationInstance, Operation and Cluster",
        description="Write the CRDs generated from vworkspace/api to a directory.",
    )
    crds.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        metavar="DIR",
        help="directory to write to (default: %(default)s)",
    )
    crds.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if the files in DIR differ from the models",
    )
    crds.set_defaults(handler=run_crds)
    ref = sub.add_parser(
        "api-reference",
        help="the Markdown field reference (docs/api-reference.md)",
        description="Write the Markdown field reference generated from vworkspace/api.",
    )
    ref.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_REFERENCE,
        metavar="FILE",
        help="file to write (default: %(default)s)",
    )
    ref.set_defaults(handler=run_reference)


def run_reference(args: argparse.Namespace) -> int:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(reference.render())
    print(f"wrote {args.out}")
    return 0


def run_crds(args: argparse.Namespace) -> int:
    if args.check:
        stale = crdgen.drift(args.out)
        if stale:
            print(
                f"{args.out}: out of date: {', '.join(stale)}; run "
                "'python -m vworkspace manifests crds'",
                file=sys.stderr,
            )
            return 1
        print(f"{args.out}: up to date")
        return 0
    for path in crdgen.write(args.out):
        print(f"wrote {path}")
    return 0
