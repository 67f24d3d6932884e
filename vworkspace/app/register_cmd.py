"""`python -m vworkspace register`: break-glass registration of this cluster.

Applies a token Secret and a Cluster that references it, then waits for the running operator
(its agent runs unless ``--agent-enabled=false``) to exchange the token, and prints the
outcome. Checks first that the control plane endpoint answers at all, so a typo fails in a
second instead of after the timeout; that check goes out as the operator's agent does (the same
egress flags and proxy variables: app/flags/egress.py), so a proxy or TLS problem shows here
first. The endpoint must be ``https://`` unless
``--allow-insecure-control-plane`` is given (the operator must run with it too, or it refuses
the Cluster's http:// endpoint; api/endpoints.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from typing import Any

import aiohttp

from vworkspace.agent.client import proxy_of
from vworkspace.agent.egress import Egress, EgressConfig, describe_failure
from vworkspace.agent.encryptionkeys import EncryptionKeys
from vworkspace.api.endpoints import endpoint_problem
from vworkspace.api.meta import ObjectKey
from vworkspace.app.flags import egress as egress_flags
from vworkspace.app.hardening_flags import add_insecure_flag
from vworkspace.app.run_cmd import go_bool
from vworkspace.kube.rest.client import KubeClient, KubeConfigError
from vworkspace.kube.rest.errors import AlreadyExistsError, ApiError
from vworkspace.kube.rest.resources import CLUSTERS, NAMESPACES, SECRETS

TOKEN_SECRET = "vworkspace-registration-token"


def add_parser(commands: Any, *, summary: str) -> None:
    reg = commands.add_parser(
        "register",
        help=summary,
        description="Apply a Cluster and its registration-token Secret, and wait until the running "
        "operator has exchanged the token for agent credentials.",
    )
    # The Go CLI's spellings (--token, --cluster-name, --control-plane-base-url and the
    # CONTROL_PLANE_BASE_URL fallback) are accepted too, so its runbooks work unchanged.
    reg.add_argument(
        "--control-plane-endpoint",
        "--control-plane-base-url",
        metavar="URL",
        help="control plane base URL (env CONTROL_PLANE_BASE_URL); "
        "also spelled --control-plane-base-url",
    )
    reg.add_argument(
        "--registration-token",
        "--token",
        required=True,
        metavar="T",
        help="one-time registration token; also spelled --token",
    )
    reg.add_argument(
        "--cluster-id",
        "--cluster-name",
        required=True,
        metavar="C",
        help="this cluster's id (also the Cluster's name); also spelled --cluster-name",
    )
    reg.add_argument(
        "--kubeconfig", metavar="PATH", help="kubeconfig (default: $KUBECONFIG, ~/.kube/config)"
    )
    reg.add_argument(
        "--namespace",
        metavar="NS",
        help="operator namespace for the token Secret "
        "(default: $POD_NAMESPACE, else vworkspace-system)",
    )
    reg.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="how long to wait for the exchange (default: %(default)s)",
    )
    add_insecure_flag(reg, boolean=go_bool)
    egress_flags.add_flags(reg)
    reg.set_defaults(handler=run_register)


def run_register(args: argparse.Namespace) -> int:
    args.control_plane_endpoint = endpoint_from(args, dict(os.environ))
    if not args.control_plane_endpoint:
        print(
            "error: --control-plane-endpoint is required (or CONTROL_PLANE_BASE_URL)",
            file=sys.stderr,
        )
        return 2
    problem = endpoint_problem(
        args.control_plane_endpoint,
        field="--control-plane-endpoint",
        allow_insecure=args.allow_insecure_control_plane,
    )
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        args.egress = egress_flags.config_from(args, dict(os.environ))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    namespace = args.namespace or os.environ.get("POD_NAMESPACE") or "vworkspace-system"
    kubeconfig = args.kubeconfig or os.environ.get("KUBECONFIG")
    return asyncio.run(_register(args, namespace, kubeconfig))


def endpoint_from(args: argparse.Namespace, env: dict[str, str]) -> str:
    """The flag, else CONTROL_PLANE_BASE_URL (as the Go operator reads it)."""
    return str(args.control_plane_endpoint or env.get("CONTROL_PLANE_BASE_URL", "")).strip()


async def _reachable(url: str, config: EgressConfig) -> str | None:
    """None when the control plane answers at all (any status), else what failed."""
    egress = Egress(config)
    try:
        async with egress.request("GET", url, timeout=aiohttp.ClientTimeout(total=10)):
            return None
    except (aiohttp.ClientError, TimeoutError) as err:
        described = describe_failure(err, url=url, proxy=proxy_of(egress, url))
        return described[0] if described else f"{type(err).__name__}: {err}"
    finally:
        await egress.close()


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(
        (c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == type_), {}
    )


async def _register(args: argparse.Namespace, namespace: str, kubeconfig: str | None) -> int:
    problem = await _reachable(args.control_plane_endpoint, args.egress)
    if problem:
        print(
            f"error: cannot reach the control plane at {args.control_plane_endpoint}: {problem}",
            file=sys.stderr,
        )
        return 1
    try:
        client = await KubeClient.from_kubeconfig(kubeconfig, environ=dict(os.environ))
    except KubeConfigError as err:
        print(f"error: cannot connect to Kubernetes: {err}", file=sys.stderr)
        return 1
    try:
        with contextlib.suppress(AlreadyExistsError):
            await client.create(
                NAMESPACES,
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
                field_manager="vworkspace-register",
            )
        await client.apply(
            SECRETS,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": TOKEN_SECRET, "namespace": namespace},
                "type": "Opaque",
                "stringData": {"registrationToken": args.registration_token},
            },
            field_manager="vworkspace-register",
        )
        # The cluster's encryption key pair, before the operator registers: its public key goes
        # into the register body (agent/encryptionkeys.py; an existing key is kept).
        encryption = await EncryptionKeys(client, namespace=namespace).ensure()
        await client.apply(
            CLUSTERS,
            {
                "apiVersion": "ops.vworkspace.io/v1alpha1",
                "kind": "Cluster",
                "metadata": {"name": args.cluster_id},
                "spec": {
                    "clusterId": args.cluster_id,
                    "controlPlaneEndpoint": args.control_plane_endpoint,
                    "registrationTokenSecretRef": {
                        "name": TOKEN_SECRET,
                        "key": "registrationToken",
                    },
                },
            },
            field_manager="vworkspace-register",
        )
        print(
            f"applied Cluster {args.cluster_id} and Secret {namespace}/{TOKEN_SECRET}; "
            "waiting for the operator ...",
            flush=True,
        )
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            cluster = await client.get(CLUSTERS, ObjectKey(None, args.cluster_id))
            auth = _condition(cluster, "Authenticated")
            if auth.get("status") == "True":
                ref = (cluster.get("status") or {}).get("credentialsSecretRef") or {}
                print(
                    f"registered: cluster id {cluster['spec'].get('clusterId')}, "
                    f"credentials in Secret {ref.get('namespace')}/{ref.get('name')}"
                )
                if encryption is not None:
                    print(f"encryption recipient (age): {encryption.recipient}")
                return 0
            if auth.get("reason") in ("RegistrationFailed", "TokenSecretMissing"):
                print(f"error: registration failed: {auth.get('message')}", file=sys.stderr)
                return 1
            await asyncio.sleep(1)
        print(
            f"error: no operator exchanged the token within {args.timeout:.0f}s "
            "(is `python -m vworkspace run --agent-enabled` running against this cluster?)",
            file=sys.stderr,
        )
        return 1
    except ApiError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (aiohttp.ClientError, OSError, TimeoutError) as err:
        detail = str(err) or type(err).__name__
        print(
            f"error: cannot reach the Kubernetes API server at {client.server}: {detail}",
            file=sys.stderr,
        )
        return 1
    finally:
        await client.close()
