"""Flags of the agent's way out to the control plane (``run`` and ``register``): an explicit
proxy, a private CA, a client certificate and key pins (agent/egress.py). Without
``--control-plane-proxy`` the proxy comes from HTTPS_PROXY/HTTP_PROXY/NO_PROXY, read here once,
with Go's rules (kube/rest/proxy.py)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

from vworkspace.agent.egress import PROXY_FLAG, EgressConfig, EgressError, split_proxy
from vworkspace.agent.pinning import PIN_FLAG, parse_pin
from vworkspace.kube.rest.proxy import ProxyEnvironment

FLAGS = (
    PROXY_FLAG,
    "--control-plane-ca-file",
    "--control-plane-client-cert",
    "--control-plane-client-key",
    PIN_FLAG,
)


def add_flags(parser: argparse.ArgumentParser) -> None:
    egress = parser.add_argument_group(
        "control plane egress",
        "How the agent reaches the control plane: proxy, private CA, client certificate, pins "
        '(docs/operations.md, "Egress"). The CA and the client certificate may also come '
        "from the keys ca.crt, tls.crt and tls.key of the credentials Secret; a flag wins. "
        "Changed files or Secret keys are used without a restart.",
    )
    egress.add_argument(
        PROXY_FLAG,
        metavar="URL",
        help="HTTP(S) proxy for the control plane, e.g. http://user:password@proxy:3128 "
        "(default: HTTPS_PROXY/HTTP_PROXY/NO_PROXY, with Go's rules); credentials are never "
        "logged",
    )
    egress.add_argument(
        "--control-plane-ca-file",
        type=Path,
        metavar="PATH",
        help="PEM bundle of CAs trusted for the control plane, in addition to the system's",
    )
    egress.add_argument(
        "--control-plane-client-cert",
        type=Path,
        metavar="PATH",
        help="PEM client certificate presented to the control plane (mTLS); needs "
        "--control-plane-client-key",
    )
    egress.add_argument(
        "--control-plane-client-key",
        type=Path,
        metavar="PATH",
        help="PEM private key of --control-plane-client-cert (unencrypted)",
    )
    egress.add_argument(
        PIN_FLAG,
        action="append",
        default=[],
        metavar="B64",
        help="base64 SHA-256 of a public key (SubjectPublicKeyInfo) that must appear in the "
        "control plane's verified chain, leaf to root; repeatable (rotation: give old and "
        "new); a server without a pinned key is refused before anything is sent",
    )


def config_from(args: argparse.Namespace, env: Mapping[str, str]) -> EgressConfig:
    """The egress flags, validated; ValueError names the flag at fault and what to do."""
    proxy = (args.control_plane_proxy or "").strip()
    if proxy:
        try:
            split_proxy(proxy, source=PROXY_FLAG)
        except EgressError as err:
            raise ValueError(str(err)) from None
    cert, key = args.control_plane_client_cert, args.control_plane_client_key
    if (cert is None) != (key is None):
        given, missing = (
            ("--control-plane-client-cert", "--control-plane-client-key")
            if key is None
            else ("--control-plane-client-key", "--control-plane-client-cert")
        )
        raise ValueError(f"{given} needs {missing}: give both files of the pair")
    for flag, path in (
        ("--control-plane-ca-file", args.control_plane_ca_file),
        ("--control-plane-client-cert", cert),
        ("--control-plane-client-key", key),
    ):
        if path is not None and not path.is_file():
            raise ValueError(f"{flag} {path}: no such file; mount it or fix the path")
    return EgressConfig(
        proxy=proxy,
        environment=ProxyEnvironment.from_environ(env),
        ca_file=args.control_plane_ca_file,
        client_cert=cert,
        client_key=key,
        pins=frozenset(parse_pin(pin) for pin in args.control_plane_pin_sha256),
    )


def given(args: argparse.Namespace) -> list[str]:
    """The egress flags given (for "ignored" notes when the agent is off)."""
    values = (
        args.control_plane_proxy,
        args.control_plane_ca_file,
        args.control_plane_client_cert,
        args.control_plane_client_key,
        args.control_plane_pin_sha256,
    )
    return [flag for flag, value in zip(FLAGS, values, strict=True) if value]
