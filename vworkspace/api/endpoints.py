"""The rule for control-plane URLs: https only, unless the operator is told otherwise.

A registration endpoint receives the one-time registration token and hands out the bearer token
the agent then sends with every request; whoever reads that traffic can take the cluster's jobs
stream over. So every endpoint the operator registers with or polls (the Cluster's
``spec.controlPlaneEndpoint``, ``register --control-plane-endpoint``, ``run
--control-plane-base-url``) must be ``https://``. Plain ``http://`` is for the mock control
plane on 127.0.0.1 (tests, the demo) and in-cluster evaluation, and needs
``--allow-insecure-control-plane`` on ``run`` (and on ``register``). Shared by the CLI and the
Cluster reconciler so that both say the same thing.
"""

from __future__ import annotations

import urllib.parse

INSECURE_FLAG = "--allow-insecure-control-plane"


def endpoint_problem(url: str, *, field: str, allow_insecure: bool) -> str | None:
    """Why ``url`` (named ``field`` in the message) may not be used, or None."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
    except ValueError as err:  # e.g. an unclosed IPv6 bracket
        return f"{field} {url!r} is not a URL: {err}"
    scheme = parts.scheme.lower()
    if scheme == "https" or (scheme == "http" and allow_insecure):
        if not host:
            return f"{field} {url!r} has no host"
        return None
    if scheme == "http":
        return (
            f"{field} must be an https:// URL, got {url!r}: plain http would expose the "
            "registration and bearer tokens; the operator allows http:// only with "
            f"{INSECURE_FLAG} (tests and local evaluation)"
        )
    return f"{field} must be an https:// URL, got {url!r}"
