"""`python -m vworkspace mock-control-plane`: the mock control plane as its own process."""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from vworkspace.app import logging as app_logging
from vworkspace.app.http import Address
from vworkspace.mockcontrolplane import MockState, create_app, sealer
from vworkspace.mockcontrolplane.signer import Signer


def add_parser(commands: Any, *, summary: str) -> None:
    mock = commands.add_parser(
        "mock-control-plane",
        help=summary,
        description="An in-memory mock of the control plane's agent and admin API. The Go "
        "mock's single-dash spellings (-addr, -registration-token, -cluster-id, "
        "-bootstrap-token, -admin-token) are accepted as well.",
    )
    mock.add_argument(
        "--addr",
        "-addr",
        default=":8080",
        metavar="HOST:PORT",
        help="listen address (default: %(default)s)",
    )
    mock.add_argument(
        "--registration-token",
        "-registration-token",
        default="dev-registration-token",
        metavar="T",
        help="one-time registration token bound to --cluster-id (default: %(default)s)",
    )
    mock.add_argument(
        "--cluster-id",
        "-cluster-id",
        default="cluster-dev-1",
        metavar="C",
        help="(default: %(default)s)",
    )
    mock.add_argument(
        "--bootstrap-token",
        "-bootstrap-token",
        default="",
        metavar="B",
        help="pre-seed the cluster's bearer token (default: none; register first)",
    )
    mock.add_argument(
        "--admin-token",
        "-admin-token",
        default="",
        metavar="A",
        help="require this X-Mock-Control-Plane-Admin-Token on /api/admin (default: open)",
    )
    mock.add_argument(
        "--visibility-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="redeliver a job with no result after S seconds (default: %(default)s)",
    )
    mock.add_argument(
        "--strict-registration",
        action="store_true",
        help="answer 401 to unknown registration tokens (the Go mock accepts any)",
    )
    mock.add_argument(
        "--signing-key",
        type=Path,
        metavar="PATH",
        help="sign every enqueued job with this Ed25519 private key (PEM, from "
        "`python -m vworkspace keys generate`; default: jobs are not signed)",
    )
    mock.add_argument(
        "--signing-key-id",
        default="",
        metavar="ID",
        help="key id in the signatures (default: derived from the public key)",
    )
    mock.add_argument(
        "--tls-cert-file",
        type=Path,
        metavar="PATH",
        help="serve HTTPS with this PEM certificate (chain) and --tls-key-file (default: HTTP)",
    )
    mock.add_argument("--tls-key-file", type=Path, metavar="PATH", help="its PEM private key")
    mock.add_argument(
        "--client-ca-file",
        type=Path,
        metavar="PATH",
        help="with --tls-cert-file: require a client certificate signed by a CA in this PEM "
        "bundle (mutual TLS, as a control plane behind a client-certificate gateway)",
    )
    mock.add_argument(
        "--encrypt-to",
        default="",
        metavar="RECIPIENT",
        help="encrypt every enqueued payload whole to this age recipient (age1...), or "
        "`registered`: to the encryptionPublicKey the cluster sent (default: not encrypted; "
        'per job: "encrypt" in the enqueue body)',
    )
    mock.add_argument("--log-format", choices=["json", "console"], default="console")
    mock.set_defaults(handler=run_mock)


def run_mock(args: argparse.Namespace) -> int:
    try:
        address = Address.parse(args.addr)
    except ValueError as err:
        print(f"error: --addr: {err}")
        return 2
    if address is None:
        print("error: --addr: a listen address is required")
        return 2
    if args.visibility_timeout <= 0:
        print("error: --visibility-timeout must be positive")
        return 2
    signer = None
    if args.signing_key is not None:
        try:
            signer = Signer.load(args.signing_key, args.signing_key_id)
        except (OSError, ValueError, TypeError) as err:
            print(f"error: --signing-key: {err}")
            return 2
    problem = None
    if args.encrypt_to and args.encrypt_to != sealer.REGISTERED:
        problem = sealer.recipient_problem(args.encrypt_to)
    if problem:
        print(f"error: --encrypt-to: {problem}")
        return 2
    try:
        ssl_context = tls_context(args.tls_cert_file, args.tls_key_file, args.client_ca_file)
    except ValueError as err:
        print(f"error: {err}")
        return 2
    app_logging.configure(fmt=args.log_format)
    return asyncio.run(_serve(args, address, signer, ssl_context=ssl_context))


def tls_context(
    cert: Path | None, key: Path | None, client_ca: Path | None
) -> ssl.SSLContext | None:
    """The server context of --tls-cert-file/--tls-key-file/--client-ca-file (None: plain
    HTTP). Raises ValueError naming the flag: flags that do not go together, a file that cannot
    be read or is not PEM, a key that does not match the certificate."""
    if (cert is None) != (key is None):
        raise ValueError("--tls-cert-file and --tls-key-file go together; give both")
    if cert is None or key is None:
        if client_ca is not None:
            raise ValueError("--client-ca-file needs --tls-cert-file and --tls-key-file")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as err:
        raise ValueError(
            f"--tls-cert-file/--tls-key-file: cannot load {cert}, {key}: {err}"
        ) from None
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        try:
            context.load_verify_locations(cafile=str(client_ca))
        except (OSError, ssl.SSLError) as err:
            raise ValueError(f"--client-ca-file {client_ca}: {err}") from None
    return context


async def _serve(
    args: argparse.Namespace,
    address: Address,
    signer: Signer | None,
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> int:
    state = MockState(
        visibility_timeout=args.visibility_timeout,
        strict_registration=args.strict_registration,
        signer=signer,
        encrypt_to=args.encrypt_to,
    )
    state.add_registration_token(args.registration_token, args.cluster_id)
    if args.bootstrap_token:
        state.set_bootstrap_token(args.cluster_id, args.bootstrap_token)
    runner = web.AppRunner(
        create_app(state, admin_token=args.admin_token), access_log=None, handler_cancellation=True
    )
    await runner.setup()
    await web.TCPSite(runner, address.host, address.port, ssl_context=ssl_context).start()
    structlog.get_logger("vworkspace.mockcontrolplane").info(
        "mock control plane listening",
        addr=str(address),
        cluster_id=args.cluster_id,
        admin_auth=bool(args.admin_token),
        visibility_timeout=args.visibility_timeout,
        signing_key_id=signer.key_id if signer else None,
        tls=ssl_context is not None,
        client_certificates="required" if args.client_ca_file else "not asked",
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    return 0
