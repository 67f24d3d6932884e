"""`python -m vworkspace keys generate`: an Ed25519 key pair for signing Pull jobs.

An operator-side tool (docs/operations.md, "Hardening"): the private key goes to whoever signs
jobs (the control plane, or the mock with ``--signing-key``), the public key into the trusted-keys
ConfigMap of the cluster. Writes ``signing-key.pem`` (PKCS#8, mode 0600, created exclusively so
an existing key is never overwritten unless ``--force``) and ``signing-key.pub.pem``; prints the
key id (default: derived from the public key) and the command that installs the public key.

``--encryption`` writes the cluster's age X25519 key pair for encrypted payloads instead
(docs/pull-mode.md, "Encrypted payloads"): ``age.key`` (the ``AGE-SECRET-KEY-1...`` line, mode
0600, as ``age-keygen`` writes it) and ``age.pub`` (the ``age1...`` recipient the control plane
encrypts to), and prints the command that puts the private key into the cluster's Secret. The
agent otherwise generates one itself at registration; this is for a key made and backed up
outside the cluster.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from vworkspace.agent.encryptionkeys import DEFAULT_SECRET as ENCRYPTION_SECRET
from vworkspace.agent.encryptionkeys import KEY_PRIVATE, KEY_PUBLIC
from vworkspace.agent.sealed import ClusterKey
from vworkspace.agent.signing import check_key_id, derived_key_id, private_pem, public_pem
from vworkspace.agent.trustedkeys import DEFAULT_NAME

PRIVATE_FILE = "signing-key.pem"
PUBLIC_FILE = "signing-key.pub.pem"

EPILOG = f"""\
examples:
  python -m vworkspace keys generate --out ./keys
  python -m vworkspace keys generate --out ./keys --key-id k2
  python -m vworkspace keys generate --encryption --out ./cluster-key
  kubectl -n vworkspace-system create configmap {DEFAULT_NAME} \\
      --from-file=<keyId>=./keys/{PUBLIC_FILE}"""


def add_parser(commands: Any, *, summary: str) -> None:
    keys = commands.add_parser(
        "keys",
        help=summary,
        description='Keys for signed Pull jobs (docs/pull-mode.md, "Signed jobs").',
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = keys.add_subparsers(dest="action", metavar="ACTION", required=True)
    generate = actions.add_parser(
        "generate",
        help="write a new Ed25519 key pair and print its key id",
        description=f"Write {PRIVATE_FILE} (private, mode 0600) and {PUBLIC_FILE} to DIR.",
    )
    generate.add_argument("--out", type=Path, required=True, metavar="DIR", help="directory")
    generate.add_argument(
        "--key-id",
        metavar="ID",
        help="key id, [A-Za-z0-9_-]{1,64} (default: derived from the public key)",
    )
    generate.add_argument(
        "--force", action="store_true", help="overwrite an existing key pair in DIR"
    )
    generate.add_argument(
        "--encryption",
        action="store_true",
        help=f"write the cluster's age key pair for encrypted payloads ({KEY_PRIVATE}, mode "
        f"0600, and {KEY_PUBLIC}) instead of a signing key",
    )
    generate.set_defaults(handler=run_generate)


def write_key_pair(out: Path, *, key_id: str | None = None, force: bool = False) -> str:
    """Create the pair in ``out``; returns the key id. FileExistsError unless ``force``."""
    if key_id is not None:
        check_key_id(key_id)
    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    out.mkdir(parents=True, exist_ok=True)
    private_path = out / PRIVATE_FILE
    if force:
        private_path.unlink(missing_ok=True)
    # Exclusive create with 0600 from the start: the private key is never world-readable, not
    # even between a write and a chmod.
    _write_private(private_path, private_pem(key))
    (out / PUBLIC_FILE).write_text(public_pem(public))
    return key_id or derived_key_id(public)


def _write_private(path: Path, content: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)


def write_encryption_key(out: Path, *, force: bool = False) -> str:
    """Create ``age.key`` (0600) and ``age.pub`` in ``out``; returns the recipient.
    FileExistsError unless ``force``."""
    key = ClusterKey.generate()
    out.mkdir(parents=True, exist_ok=True)
    private_path = out / KEY_PRIVATE
    if force:
        private_path.unlink(missing_ok=True)
    text = f"# public key: {key.recipient}\n{key.secret_text()}\n"
    _write_private(private_path, text.encode("ascii"))
    (out / KEY_PUBLIC).write_text(key.recipient + "\n")
    return key.recipient


def run_generate_encryption(args: argparse.Namespace) -> int:
    if args.key_id is not None:
        print("error: --key-id names signing keys; leave it out with --encryption", file=sys.stderr)
        return 2
    try:
        recipient = write_encryption_key(args.out, force=args.force)
    except FileExistsError:
        print(
            f"error: {args.out / KEY_PRIVATE} exists; pass --force to replace it", file=sys.stderr
        )
        return 1
    print(f"wrote {args.out / KEY_PRIVATE} (private, mode 0600) and {args.out / KEY_PUBLIC}")
    print(f"recipient: {recipient}")
    print("install it on the cluster (before the agent registers, or replacing its key):")
    print(
        f"  kubectl -n vworkspace-system create secret generic {ENCRYPTION_SECRET} "
        f"--from-file={KEY_PRIVATE}={args.out / KEY_PRIVATE}"
    )
    return 0


def run_generate(args: argparse.Namespace) -> int:
    if args.encryption:
        return run_generate_encryption(args)
    try:
        key_id = write_key_pair(args.out, key_id=args.key_id, force=args.force)
    except ValueError as err:
        print(f"error: --key-id: {err}", file=sys.stderr)
        return 2
    except FileExistsError:
        print(
            f"error: {args.out / PRIVATE_FILE} exists; pass --force to replace it",
            file=sys.stderr,
        )
        return 1
    print(f"wrote {args.out / PRIVATE_FILE} (private, mode 0600) and {args.out / PUBLIC_FILE}")
    print(f"key id: {key_id}")
    print("trust it on a cluster:")
    print(
        f"  kubectl -n vworkspace-system create configmap {DEFAULT_NAME} "
        f"--from-file={key_id}={args.out / PUBLIC_FILE}"
    )
    return 0
