"""`python -m vworkspace manifests ...`: the generated CRD manifests and API reference, the
chart README's values table, and the release artifacts (docs/operations.md, "Install")."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from vworkspace.api import crdgen, reference
from vworkspace.app import chart_readme, release

DEFAULT_OUT = Path("manifests/crds")
DEFAULT_REFERENCE = Path("docs/api-reference.md")
DEFAULT_CHART = Path("charts/vworkspace")
DEFAULT_MANIFESTS = Path("manifests")


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
    _add_release_parsers(sub)


def _add_release_parsers(sub: Any) -> None:
    rel = sub.add_parser(
        "release",
        help="crds.yaml, operator.yaml, the packaged Helm chart and SHA256SUMS",
        description="Write the release artifacts: crds.yaml, operator.yaml (everything for "
        "`kubectl apply -f`, rendered from the kustomize base), the packaged chart and "
        "SHA256SUMS (verify with `sha256sum -c SHA256SUMS`).",
    )
    rel.add_argument("--out", type=Path, required=True, metavar="DIR", help="directory to write to")
    rel.add_argument(
        "--manifests",
        type=Path,
        default=DEFAULT_MANIFESTS,
        metavar="DIR",
        help="kustomize base to render (default: %(default)s)",
    )
    rel.add_argument(
        "--chart", type=Path, default=DEFAULT_CHART, metavar="DIR", help="(default: %(default)s)"
    )
    rel.set_defaults(handler=run_release)
    readme = sub.add_parser(
        "chart-readme",
        help="the values table of the Helm chart's README.md",
        description="Regenerate the values table in CHART/README.md from values.yaml comments.",
    )
    readme.add_argument(
        "--chart", type=Path, default=DEFAULT_CHART, metavar="DIR", help="(default: %(default)s)"
    )
    readme.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if the table is stale"
    )
    readme.set_defaults(handler=run_chart_readme)


def run_release(args: argparse.Namespace) -> int:
    try:
        paths = release.write_release(manifests=args.manifests, chart=args.chart, out=args.out)
    except (release.ReleaseError, OSError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for path in paths:
        print(f"wrote {path}")
    return 0


def run_chart_readme(args: argparse.Namespace) -> int:
    current = chart_readme.update(args.chart, check=args.check)
    if args.check and not current:
        print(
            f"{args.chart}/README.md: values table out of date; run "
            "'python -m vworkspace manifests chart-readme'",
            file=sys.stderr,
        )
        return 1
    print(f"{args.chart}/README.md: {'up to date' if current else 'updated'}")
    return 0


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
