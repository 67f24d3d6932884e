"""Flags of the API server connection: --kubeconfig, --context; and what the environment says
(KUBECONFIG, in-cluster service host, proxies, the service-account directory)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vworkspace.kube.rest.kubeconfig import SERVICE_ACCOUNT
from vworkspace.kube.rest.proxy import ProxyEnvironment

SERVICE_ACCOUNT_DIR_ENV = "VWORKSPACE_SERVICE_ACCOUNT_DIR"


def add_flags(run: argparse.ArgumentParser) -> None:
    conn = run.add_argument_group("cluster connection")
    conn.add_argument(
        "--kubeconfig",
        metavar="PATH",
        help="kubeconfig file (default: $KUBECONFIG, "
        "in-cluster config inside a Pod, else ~/.kube/config)",
    )
    conn.add_argument("--context", metavar="NAME", help="kubeconfig context (default: current)")


def settings_from(args: argparse.Namespace, env: Mapping[str, str]) -> dict[str, Any]:
    kubeconfig = args.kubeconfig or env.get("KUBECONFIG") or None
    return {
        "kubeconfig": kubeconfig,
        "context": args.context,
        "in_cluster": kubeconfig is None and bool(env.get("KUBERNETES_SERVICE_HOST")),
        "proxies": ProxyEnvironment.from_environ(env),
        "service_host": env.get("KUBERNETES_SERVICE_HOST", ""),
        "service_port": env.get("KUBERNETES_SERVICE_PORT", ""),
        "service_account_dir": service_account_dir_from(env),
        "exec_environ": env,
    }


def service_account_dir_from(env: Mapping[str, str]) -> Path:
    """Where the in-cluster loader finds ``token``, ``ca.crt`` and ``namespace``: the kubelet's
    ``/var/run/secrets/kubernetes.io/serviceaccount`` unless $VWORKSPACE_SERVICE_ACCOUNT_DIR
    names another directory. The override exists so tests (and an unusual Pod mounting the
    projected token elsewhere) can run the real in-cluster path outside a Pod; it is read here,
    in the app, never below it."""
    override = env.get(SERVICE_ACCOUNT_DIR_ENV, "").strip()
    return Path(override) if override else SERVICE_ACCOUNT
