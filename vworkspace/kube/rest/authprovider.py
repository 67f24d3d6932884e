"""kubeconfig users with an ``auth-provider`` (oidc, and the legacy gcp/azure ones), through
kubernetes-asyncio's loader.

Imported only for such a user (kube/rest/kubeconfig.py): it loads the whole generated client, about
63 MiB, which the common paths avoid. The library's ``Configuration`` is converted into a
:class:`~vworkspace.kube.rest.config.ClusterConfig` whose credentials ask the library's
``auth_settings()`` on every request, so its token refresh (oidc refresh tokens) keeps working.
``persist_config=False``: refreshed tokens are never written back into the user's file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import yaml
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.config.config_exception import ConfigException

from vworkspace.kube.rest.config import ClusterConfig, KubeConfigError
from vworkspace.kube.rest.credentials import ClientCertificate, Credential

_ERRORS = (ConfigException, OSError, yaml.YAMLError, TypeError, AttributeError, KeyError)


@attrs.define
class LibraryCredentials:
    """The headers kubernetes-asyncio's ``auth_settings()`` gives (its refresh hook included)."""

    configuration: Any = attrs.field(repr=False)

    async def current(self) -> Credential:
        settings = await self.configuration.auth_settings()
        return Credential(
            headers={
                auth["key"]: auth["value"]
                for auth in settings.values()
                if auth.get("in") == "header" and auth.get("value")
            }
        )

    def invalidate(self) -> None:
        return None


async def load_with_library(where: str, *, context: str) -> ClusterConfig:
    configuration = k8s_client.Configuration()
    try:
        await k8s_config.load_kube_config(
            config_file=where,
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
        certificate = _certificate(configuration)
    except _ERRORS as err:
        raise KubeConfigError(str(err) or type(err).__name__) from err
    return ClusterConfig(
        server=str(configuration.host),
        ca_file=configuration.ssl_ca_cert or None,
        insecure=not configuration.verify_ssl,
        tls_server_name=configuration.tls_server_name or None,
        proxy_url=configuration.proxy or None,
        client_certificate=certificate,
        credentials=LibraryCredentials(configuration),
    )


def _certificate(configuration: Any) -> ClientCertificate | None:
    """The library writes ``-data`` certificates to files; read them back (once, at start)."""
    if not configuration.cert_file:
        return None
    return ClientCertificate(
        cert_pem=Path(configuration.cert_file).read_bytes(),
        key_pem=Path(configuration.key_file).read_bytes(),
    )
