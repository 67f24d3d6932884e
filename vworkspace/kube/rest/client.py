"""The one Kubernetes client of the process, and the server-side apply helper.

kube/rest/kubeconfig.py loads the connection (kubeconfig contexts, exec plugins, the in-cluster
service account with its token re-read every minute) without importing kubernetes-asyncio;
kube/rest/transport.py sends the requests over one aiohttp connection pool; this module sends raw
JSON and decodes answers into plain dicts, which the operator projects onto its own attrs
models. That skips the generated models on hot paths (they cost CPU and memory) and keeps three
pitfalls out (docs/development.md,
"kubernetes-asyncio: what the client code works around"):

* every request carries an explicit timeout (the library's default is none at all);
* every write names its field manager (the default would be the library's User-Agent);
* apply patches always use ``application/apply-patch+yaml`` (the library's default content type
  for custom objects is JSON patch, which the server rejects for a dict).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from vworkspace import __version__
from vworkspace.api.jsontypes import JsonObj
from vworkspace.kube.rest import safejson
from vworkspace.kube.rest.api import JSON, KubeApi, RestVerbs
from vworkspace.kube.rest.config import ClusterConfig, KubeConfigError
from vworkspace.kube.rest.errors import ApiError, InvalidResponseError, error_for, parse_retry_after
from vworkspace.kube.rest.kubeconfig import SERVICE_ACCOUNT, in_cluster_config, load_kubeconfig
from vworkspace.kube.rest.paths import ApiPath
from vworkspace.kube.rest.proxy import ProxyEnvironment
from vworkspace.kube.rest.transport import RestClientMetrics, Transport

DEFAULT_TIMEOUT = 30.0
USER_AGENT = f"vworkspace-operator/{__version__}"
_log = structlog.get_logger("vworkspace.kube")

__all__ = ["ApiPath", "KubeApi", "KubeClient", "KubeConfigError"]


class KubeClient(RestVerbs):
    """JSON over one :class:`~vworkspace.kube.rest.transport.Transport`; one instance shared by the
    whole process."""

    def __init__(
        self,
        config: ClusterConfig,
        *,
        request_timeout: float = DEFAULT_TIMEOUT,
        pool_size: int = 32,
        proxies: ProxyEnvironment | None = None,
    ) -> None:
        self._transport = Transport(
            config, pool_size=pool_size, proxies=proxies, user_agent=USER_AGENT
        )
        self.request_timeout = request_timeout

    @classmethod
    async def from_kubeconfig(
        cls,
        path: str | None,
        *,
        context: str | None = None,
        pool_size: int = 32,
        request_timeout: float = DEFAULT_TIMEOUT,
        proxies: ProxyEnvironment | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> KubeClient:
        """``path`` may list several files (``os.pathsep``), like $KUBECONFIG; None means
        ``~/.kube/config``. Raises :class:`KubeConfigError` naming the file and the problem.
        ``proxies``: HTTPS_PROXY/NO_PROXY as read once (kube/rest/proxy.py), used unless
        the kubeconfig names a proxy (the app reads them from the environment once).
        ``environ``: the environment an exec credential plugin runs with (the app's)."""
        config = await load_kubeconfig(path, context=context, environ=environ)
        return cls(config, pool_size=pool_size, request_timeout=request_timeout, proxies=proxies)

    @classmethod
    def in_cluster(
        cls,
        *,
        host: str,
        port: str,
        service_account: Path = SERVICE_ACCOUNT,
        pool_size: int = 32,
        request_timeout: float = DEFAULT_TIMEOUT,
        proxies: ProxyEnvironment | None = None,
    ) -> KubeClient:
        """The Pod's service account; ``host``/``port``: ``KUBERNETES_SERVICE_HOST``/``_PORT``
        (the app reads them). The token is re-read every minute, so rotated projected tokens
        are picked up without a restart."""
        config = in_cluster_config(host=host, port=port, service_account=service_account)
        return cls(config, pool_size=pool_size, request_timeout=request_timeout, proxies=proxies)

    @property
    def server(self) -> str:
        return self._transport.host

    def instrument(self, metrics: RestClientMetrics) -> None:
        """Count every request from now on (``rest_client_requests_total`` and
        ``rest_client_request_duration_seconds``)."""
        self._transport.metrics = metrics

    async def close(self) -> None:
        await self._transport.close()

    async def request(
        self,
        method: str,
        path: ApiPath,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = JSON,
        timeout_s: float | None = None,
    ) -> JsonObj:
        """Send one request; return the decoded JSON (``{}`` if empty); raise :class:`ApiError`.

        ``path`` is segments (kube/rest/paths.py), never a string: the transport encodes each
        segment itself, so no name can change which object the request reaches."""
        response = await self._transport.send(
            method,
            path,
            query=query,
            body=body,
            headers={"Accept": JSON, "Content-Type": content_type},
            timeout=aiohttp.ClientTimeout(total=timeout_s or self.request_timeout),
        )
        raw = await _read(response)
        if response.status >= 300:
            raise _logged_if_forbidden(
                error_for(
                    status=response.status,
                    body=_json_or_message(raw),
                    method=method,
                    path=str(path),
                    retry_after=parse_retry_after(response.headers.get("Retry-After")),
                )
            )
        return _decode_success(raw, status=response.status, method=method, path=str(path))

    @asynccontextmanager
    async def stream_lines(
        self,
        path: ApiPath,
        *,
        query: Mapping[str, str],
        connect_timeout: float,
        total_timeout: float,
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """A watch stream as raw newline-delimited JSON lines. Inactivity is the caller's watchdog;
        ``total_timeout`` is a hard cap a little above the server-side watch timeout."""
        response = await self._transport.send(
            "GET",
            path,
            query=query,
            body=None,
            headers={"Accept": JSON},
            timeout=aiohttp.ClientTimeout(total=total_timeout, sock_connect=connect_timeout),
        )
        try:
            if response.status >= 300:
                body = await response.read()
                raise _logged_if_forbidden(
                    error_for(
                        status=response.status,
                        body=_json_or_message(body),
                        method="GET",
                        path=str(path),
                        retry_after=parse_retry_after(response.headers.get("Retry-After")),
                    )
                )
            yield _lines(response)
        finally:
            response.release()


def _logged_if_forbidden(error: ApiError) -> ApiError:
    """A 403 from the API server is an RBAC rule the operator lacks (or a namespace being
    deleted), never a transient state: it is logged here, once per request, with the server's
    message, which names the user, the verb and the resource. Callers often turn the error into
    a status condition only, and a missing rule must not hide there
    (vworkspace/testing/identity.py fails the shipped-identity tests on any such line)."""
    if error.status == 403:
        _log.warning(
            "forbidden by the API server", method=error.method, path=error.path, error=error.message
        )
    return error


async def _read(response: Any) -> bytes:
    try:
        data: bytes = await response.read()
        return data
    finally:
        response.release()


async def _lines(response: Any) -> AsyncIterator[bytes]:
    while True:
        line = await response.content.readline()
        if not line:
            return
        if line.strip():
            yield line


def _decode_success(raw: bytes, *, status: int, method: str, path: str) -> JsonObj:
    """A 2xx body as a JSON object; anything else (an HTML page from a proxy in the path, a
    body cut short) is an :class:`InvalidResponseError`, retried like a 5xx."""
    if not raw:
        return {}
    why = "not a JSON object"
    try:
        decoded = safejson.loads(raw)
    except safejson.JsonError as err:
        decoded, why = None, f"not JSON, {err}"
    if isinstance(decoded, dict):
        return decoded
    text = raw[:200].decode(errors="replace")
    excerpt = "".join(c if c.isprintable() else " " for c in text)
    raise InvalidResponseError(
        status=status,
        reason="InvalidResponse",
        message=f"{status} answer is {why} ({len(raw)} bytes): {excerpt!r}",
        body={},
        method=method,
        path=path,
    )


def _json_or_message(raw: bytes | str | None) -> JsonObj:
    if not raw:
        return {}
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    try:
        decoded = safejson.loads(text)
    except safejson.JsonError:
        return {"message": text[:1000]}
    return decoded if isinstance(decoded, dict) else {"message": text[:1000]}
