"""Where the API server is and how to reach it: the loaded connection, and the one error of
loading it.

Its own module so that the kubeconfig loader (kubeconfig.py) and the auth-provider loader
(authprovider.py, imported lazily by the first) both depend on it instead of on each other.
"""

from __future__ import annotations

import attrs

from vworkspace.kube.rest.credentials import ClientCertificate, Credentials, StaticCredentials

__all__ = ["ClusterConfig", "KubeConfigError"]


class KubeConfigError(Exception):
    """The cluster connection cannot be configured: no usable kubeconfig, or not in a Pod."""


@attrs.frozen
class ClusterConfig:
    """Where the API server is, how to trust it, and how to authenticate. ``ca_data``: PEM text
    (decoded from ``certificate-authority-data``); neither it nor ``ca_file`` means the system
    trust store. ``client_certificate``: the kubeconfig's; an exec plugin may supply another
    through ``credentials``."""

    server: str
    ca_file: str | None = None
    ca_data: str | None = attrs.field(default=None, repr=False)
    insecure: bool = False
    tls_server_name: str | None = None
    proxy_url: str | None = None
    client_certificate: ClientCertificate | None = None
    credentials: Credentials = attrs.field(factory=StaticCredentials, eq=False, repr=False)
